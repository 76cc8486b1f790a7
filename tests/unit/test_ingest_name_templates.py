"""``IMPORT_NAME_TEMPLATES``: each destination's file-name template ("Outbound Template Macros"), checked when
ingest starts (a template it cannot read names with is a config error, exit code 2), and the names ingest
groups into batches with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from services.ingest.outbound_batches import group_names, names_from_settings
from services.ingest.settings import IngestSettings
from shared.dropzone import ObjectInfo
from shared.settings import REPO_ROOT

TEMPLATES = {"215": "<SYNC_TYPE>_<ORDER_ID>_<DPID>_<SYNC_MODE>_<TIMESTAMP>SPLITNUM.sync"}


def test_a_template_of_documented_macros_is_taken() -> None:
    settings = IngestSettings(import_name_templates=TEMPLATES)
    assert settings.import_name_templates == TEMPLATES
    assert IngestSettings().import_name_templates == {}  # the documented default for every destination


@pytest.mark.parametrize(
    ("templates", "reason"),
    [
        ({"215": "<SYNC_TYPE>_<ORDER_ID>_<FOO>_<SYNC_MODE>_<TIMESTAMP>"}, "not a documented macro"),
        ({"215": "<ORDER_ID>_<TIMESTAMP>"}, "SYNC_MODE"),
        ({"destination": "<SYNC_MODE>_<TIMESTAMP>"}, "destination id"),
    ],
)
def test_a_template_ingest_cannot_read_names_with_is_a_config_error(templates: dict[str, str], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        IngestSettings(import_name_templates=templates)


def test_ingest_refuses_to_start_with_a_bad_template() -> None:
    env = {**os.environ, "IMPORT_NAME_TEMPLATES": json.dumps({"215": "<SYNC_TYPE>_<FOO>"})}
    done = subprocess.run(
        [sys.executable, "-m", "services.ingest"], cwd=REPO_ROOT, env=env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert b"IMPORT_NAME_TEMPLATES" in done.stdout + done.stderr


def test_names_are_grouped_by_their_destinations_template() -> None:
    """The macro page's SPLITNUM example, its .info, the default name of another destination, and a name of
    destination 215 that does not follow its template (rejected, with the reason)."""
    names = names_from_settings(TEMPLATES)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    listing = [
        ObjectInfo(name, 1, at)
        for name in (
            "s3_215_9999_full_1566906141001.sync",
            "s3_215_9999_full_1566906141002.sync",
            "s3_215_9999_full_1566906141.info",
            "s3_216_9999_full_1566906141000.sync",
            "s3_216_9999_full_1566906141000.info",
            "s3_215_9999_full_1566906141000.sync",  # 215 names its files in seconds
        )
    ]
    batches, bad = group_names(listing, names)
    assert {root: (b.info is not None, sorted(b.parts)) for root, b in batches.items()} == {
        "s3_215_9999_full_1566906141": (
            True,
            ["s3_215_9999_full_1566906141001.sync", "s3_215_9999_full_1566906141002.sync"],
        ),
        "s3_216_9999_full_1566906141000": (True, ["s3_216_9999_full_1566906141000.sync"]),
    }
    [(obj, reason)] = bad
    assert obj.name == "s3_215_9999_full_1566906141000.sync"
    assert "another template" in reason
    # With the documented default only, the templated names are not batches of their own parts.
    default_batches, _ = group_names(listing)
    assert "s3_215_9999_full_1566906141" not in default_batches
