"""Who may export what (pure): the catalog's refusal rules, requester patterns, and the audit trail on the page."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.reconcile.export_authorisation import Declaration, may_ask, refusal, requester_of
from services.reconcile.status_json import snapshot_json
from services.reconcile.status_page import render_page
from services.reconcile.status_queries import RunRow, StatusSnapshot
from shared.messages import AudienceExportRequest

DECLARED = Declaration(list_name="vip", list_id=7, modes=("append",), requesters=("api:*", "kafka:workflow"))


def request(**changes: str) -> AudienceExportRequest:
    fields = {"list_id": "vip", "audience_name": "VIP", "data_source": "emails", "requested_by": "workflow"}
    return AudienceExportRequest.model_validate(fields | changes)


def test_a_declared_request_goes_ahead() -> None:
    assert refusal(DECLARED, request(), 7, allow_undeclared=False) is None
    assert refusal(DECLARED, request(requested_via="api", requested_by="anyone"), 7, allow_undeclared=False) is None


@pytest.mark.parametrize(
    ("declaration", "changes", "list_id", "says"),
    [
        (None, {}, 7, "is declared in the catalog"),
        (DECLARED, {}, 8, "for list 'vip', not 'vip'"),
        (DECLARED, {"mode": "mirror"}, 7, "in mode append, not 'mirror'"),
        (DECLARED, {"requested_by": "mallory"}, 7, "'kafka:mallory' may not ask"),
        (DECLARED, {"requested_via": "cli"}, 7, "'cli:workflow' may not ask"),
        # The declared list does not exist: nothing matches it.
        (Declaration("gone", None, ("append",), ("*",)), {}, 7, "for list 'gone'"),
    ],
)
def test_what_the_catalog_refuses(
    declaration: Declaration | None, changes: dict[str, str], list_id: int, says: str
) -> None:
    why = refusal(declaration, request(**changes), list_id, allow_undeclared=False)
    assert why is not None
    assert says in why


def test_allow_undeclared_opens_only_undeclared_audiences() -> None:
    assert refusal(None, request(), 7, allow_undeclared=True) is None
    assert refusal(DECLARED, request(mode="full"), 7, allow_undeclared=True) is not None


def test_a_request_from_kafka_says_so_by_default() -> None:
    assert requester_of(request()) == "kafka:workflow"


@given(st.text(min_size=1, max_size=30).filter(lambda s: not any(c in s for c in "*?[")))
def test_a_literal_pattern_matches_only_itself(name: str) -> None:
    assert may_ask(f"cli:{name}", (f"cli:{name}",))
    assert not may_ask(f"cli:{name}x", (f"cli:{name}",))
    assert not may_ask(f"api:{name}", (f"cli:{name}",))


def test_patterns_are_case_sensitive_globs() -> None:
    assert may_ask("api:bob", ("api:*",))
    assert not may_ask("cli:Alice", ("cli:alice",))


def test_the_status_page_shows_who_asked() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    run = RunRow(
        run_id=uuid.UUID(int=1),
        direction="export",
        audience_id="ab-x",
        audience_name="VIP",
        mode="append",
        state="failed",
        counts={},
        match_rate=None,
        reason="no export audience",
        started_at=now,
        updated_at=now,
        finished_at=None,
        requested_by="<alice>",
        requested_via="cli",
    )
    snapshot = StatusSnapshot(generated_at=now, runs=[run])
    assert "asked by cli:&lt;alice&gt;" in render_page(snapshot)
    [shown] = snapshot_json(snapshot)["runs"]
    assert (shown["requested_by"], shown["requested_via"]) == ("<alice>", "cli")
