"""Issue 14, part 2, through the running services: every variant of the platform's outbound files its
documentation shows imports exactly the members its strict form imports.

A dedicated ecsim delivers each batch (``POST /sim/deliveries`` with the variant's options) into the import
zone the real ingest and reconcile processes read. Each variant feeds its own segment and list; the strict
form feeds another with the same membership, a full snapshot and then a delta that adds and removes, and
the lists must agree member for member, with runs that succeeded and counted the same IDs.

The variants and the pages they come from (Adobe Audience Manager, Experience League):

* "Outbound Data File Contents: Syntax and Parameters": fields two spaces apart (the example line);
* "Transfer-Control Files for Log File Transfers": the ``.info`` as the page writes it (keys without
  quotes), header rows and blank spacer lines counted in it, ``-N`` split numbers;
* CRLF and mixed line ends and a byte order mark, as the documentation's sample files come;
* "Outbound Template Macros" and "Outbound Macro Examples": names made by a destination's template
  (``IMPORT_NAME_TEMPLATES``), with 10-digit timestamps and a DPID, or a DPID and a master DPID.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from services.ingest.files import FileImporter
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of
from tests.fixtures.ecsim import EcsimEndpoint, EcsimFactory, ecsim_factory  # noqa: F401
from tests.fixtures.stack import ServiceProcess, StartService, start_service  # noqa: F401
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

STRICT_SEGMENT = 5100
DEFAULT_DESTINATION = 7101
VARIANTS: dict[str, dict[str, Any]] = {
    "two-spaces": {"separator": "spaces"},
    "crlf": {"line_ends": "crlf", "gzip": True},
    "mixed-line-ends-bom": {"line_ends": "mixed", "bom": True},
    "headers-blank-lines": {"header_rows": 3, "blank_every": 4},
    "javascript-info-first": {"info_style": "javascript", "info_first": True},
    "dash-splits": {"split_style": "dash", "max_part_bytes": 600, "pid_alias": "Campaign"},
    "everything-at-once": {
        "separator": "spaces",
        "line_ends": "mixed",
        "bom": True,
        "header_rows": 2,
        "blank_every": 3,
        "info_style": "javascript",
        "split_style": "dash",
        "max_part_bytes": 700,
        "gzip": True,
    },
}
# Destinations that name their files by a template of their own ("Outbound Macro Examples").
TEMPLATES: dict[int, str] = {
    7102: "<SYNC_TYPE>_<ORDER_ID>_<DPID>_<SYNC_MODE>_<TIMESTAMP>SPLITNUM.sync",
    7103: "<SYNC_TYPE>_<ORDER_ID>_<DPID>_<MASTER_DPID>_<SYNC_MODE>_<TIMESTAMP>.sync",
    7104: '<SYNC_TYPE>_<DPID>_<SYNC_MODE>_<TIMESTAMP; unit="ms">SPLITNUM.csv',
}
TEMPLATE_VARIANTS: dict[str, tuple[int, dict[str, Any]]] = {
    "template-seconds": (7102, {"name_template": TEMPLATES[7102], "max_part_bytes": 600}),
    "template-master-dpid": (7103, {"name_template": TEMPLATES[7103], "separator": "spaces"}),
    "template-no-order-id": (7104, {"name_template": TEMPLATES[7104], "max_part_bytes": 600, "split_style": "dash"}),
}
SEGMENTS = {name: 5101 + k for k, name in enumerate([*VARIANTS, *TEMPLATE_VARIANTS])}
WIRED = "names" in inspect.signature(FileImporter).parameters


def _seed() -> dict[str, Any]:
    sids = [STRICT_SEGMENT, *SEGMENTS.values()]
    return {
        "datasources": [
            {"dataSourceId": 1001, "name": "Campaign (MID)", "integrationCode": "ac-mid", "idType": "COOKIE"}
        ],
        "traits": [{"sid": 9001, "name": "t", "traitType": "ON_BOARDED_TRAIT", "dataSourceId": 1001, "folderId": 0}],
        "segments": [
            {"sid": sid, "name": f"s{sid}", "segmentRule": "9001T", "dataSourceId": 1001, "folderId": 0} for sid in sids
        ],
        "destinations": [
            {
                "destinationId": destination,
                "name": f"Campaign {destination}",
                "destinationType": "S2S",
                "dataSourceId": 1001,
                "mappings": [{"sid": sid} for sid in sids],
            }
            for destination in (DEFAULT_DESTINATION, *TEMPLATES)
        ],
    }


@dataclass
class VariantStack:
    campaign: Campaign
    ecsim: EcsimEndpoint
    ingest: ServiceProcess

    def refused_lines(self) -> list[str]:
        """ingest's reports of lines it could not read (none in a strict delivery of these IDs)."""
        return [line for line in self.ingest.log_path.read_text().splitlines() if "batch_line_errors" in line]

    async def deliver(self, segment: int, mode: str, ids: list[str], destination: int, **options: Any) -> None:
        body = {"destination_id": destination, "mode": mode, "segments": [segment], "membership": {str(segment): ids}}
        await self.ecsim.admin("POST", "/deliveries", {**body, **options})

    async def members(self, audience: str) -> set[int]:
        rows = await self.campaign.pool.fetch(
            "SELECT recipient_id FROM list_member JOIN shared_audience USING (list_id) WHERE audience_id = $1",
            audience,
        )
        return {r["recipient_id"] for r in rows}

    async def runs(self, audience: str) -> list[tuple[str, str, dict[str, Any]]]:
        rows = await self.campaign.pool.fetch(
            "SELECT state, mode, counts FROM run WHERE audience_id = $1 ORDER BY started_at", audience
        )
        return [(r["state"], r["mode"], json.loads(r["counts"]) if r["counts"] else {}) for r in rows]


@pytest_asyncio.fixture
async def stack(
    campaign: Campaign,
    ecsim_factory: EcsimFactory,  # noqa: F811
    start_service: StartService,  # noqa: F811
    database_url: str,
    topic_prefix: str,
) -> AsyncIterator[VariantStack]:
    ecsim = await ecsim_factory()
    await ecsim.seed(_seed())
    await add_import_audience(campaign.pool, "strict", "visitors", STRICT_SEGMENT)
    for name, sid in SEGMENTS.items():
        await add_import_audience(campaign.pool, name, "visitors", sid)
    env = {
        "TOPIC_PREFIX": topic_prefix,
        "DATABASE_URL": database_url,
        "IMPORT_DROPZONE_URL": ecsim.import_dropzone_url,
        "IMPORT_POLL_INTERVAL_S": "0.2",
        "IMPORT_NAME_TEMPLATES": json.dumps({str(d): t for d, t in TEMPLATES.items()}),
        "PLATFORM_IMS_URL": ecsim.ims_url,
        "PLATFORM_API_URL": ecsim.api_url,
        "FULL_IMPORT_GUARD_MIN_LIST_SIZE": "1000",
    }
    # Side by side: the database is migrated already, and each creates the topics it needs.
    _, ingest = await asyncio.gather(start_service("reconcile", env=env), start_service("ingest", env=env))
    yield VariantStack(campaign=campaign, ecsim=ecsim, ingest=ingest)


# A full snapshot (with an unknown and a malformed ID, kept unmatched), then a delta that adds and removes.
FULL = [ecid_of(i) for i in range(1, 61)] + ["8" * 38, "7" * 37]
DELTA = [ecid_of(i) for i in range(11, 81)] + ["8" * 38, "7" * 37]
COUNTED = ("received", "matched", "unmatched", "invalid", "added", "removed")


async def _wait_runs(stack: VariantStack, audience: str, n: int) -> list[tuple[str, str, dict[str, Any]]]:
    def done(runs: list[tuple[str, str, dict[str, Any]]]) -> bool:
        return len(runs) == n and runs[-1][0] == "succeeded"

    return await eventually(lambda: stack.runs(audience), until=done, timeout=60)


async def _same_as_strict(stack: VariantStack, variants: dict[str, tuple[int, dict[str, Any]]]) -> None:
    steps = [("full", FULL, set(range(1, 61))), ("iter", DELTA, set(range(11, 81)))]
    for step, (mode, ids, expected) in enumerate(steps, 1):
        await stack.deliver(STRICT_SEGMENT, mode, ids, DEFAULT_DESTINATION)
        for name, (destination, options) in variants.items():
            await stack.deliver(SEGMENTS[name], mode, ids, destination, **options)
        strict = (await _wait_runs(stack, "strict", step))[-1]
        strict_members = await stack.members("strict")
        assert strict_members == expected
        assert strict[2]["received"] == (len(FULL) if mode == "full" else 30)
        for audience in variants:
            run = (await _wait_runs(stack, audience, step))[-1]
            assert run[1] == strict[1], audience
            assert {k: run[2].get(k) for k in COUNTED} == {k: strict[2].get(k) for k in COUNTED}, audience
            assert await stack.members(audience) == strict_members, audience
    assert stack.refused_lines() == []  # header rows and blank lines are neither records nor errors


async def test_each_documented_variant_imports_what_its_strict_form_imports(stack: VariantStack) -> None:
    await _same_as_strict(stack, {name: (DEFAULT_DESTINATION, options) for name, options in VARIANTS.items()})


@pytest.mark.skipif(
    not WIRED, reason="ingest's FileImporter does not pass IMPORT_NAME_TEMPLATES to outbound_batches yet (names=)"
)
async def test_names_made_by_each_destinations_template(stack: VariantStack) -> None:
    await _same_as_strict(stack, TEMPLATE_VARIANTS)
