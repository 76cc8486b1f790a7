"""Governance's verdict on an import audience's row (reconcile reads it with the batch's claim, in one statement)."""

from __future__ import annotations

from typing import Any

import pytest

from services.reconcile.import_governance import PolicyRefused, governed_target
from services.reconcile.import_target import ImportTarget
from shared.errors import PermanentError

_ROW: dict[str, Any] = {
    "audience_id": "seg-1",
    "list_id": 7,
    "data_source_id": 3,
    "id_type": "declared",
    "reconciliation_key": "email",
    "key_transform": "sha256",
    "data_source_name": "Hashed e-mails",
    "export_controls": ["SSO"],
    "refusal": None,
    "fresh": True,
}


def test_an_allowed_audience_gives_its_target() -> None:
    assert governed_target(_ROW, "seg-1") == ImportTarget("seg-1", 7, 3, "declared", "email", "sha256")


@pytest.mark.parametrize("row", [None, {**_ROW, "list_id": None}])
def test_no_import_audience_or_no_list_is_refused_as_such(row: dict[str, Any] | None) -> None:
    with pytest.raises(PermanentError, match="no import audience") as refused:
        governed_target(row, "seg-1")
    assert not isinstance(refused.value, PolicyRefused)
    assert refused.value.context["audience_id"] == "seg-1"


def test_the_pii_restriction_refuses_by_policy() -> None:
    with pytest.raises(PolicyRefused, match="'Hashed e-mails' carries the PII export restriction") as refused:
        governed_target({**_ROW, "export_controls": ["SSO", "PII"]}, "seg-1")
    assert refused.value.context["reason"] == "policy"


def test_a_segment_ingest_found_restricted_is_refused_with_its_reason() -> None:
    with pytest.raises(PolicyRefused, match="policy: segment 5001 is restricted"):
        governed_target({**_ROW, "refusal": "segment 5001 is restricted"}, "seg-1")
