"""The export guards' pure decisions: mass removal, list binding, who may be cancelled, the shared locks."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from services.publish.publisher import _lock_key
from services.reconcile.export_binding import Binding, refusal
from services.reconcile.export_guard import ExportGuards, RemovalPlan, guarded, held_reason
from services.reconcile.export_locks import audience_lock, publish_run_lock
from services.reconcile.export_waiting import STALLING_STATES, stuck_reason
from services.reconcile.run_cancel import CANCELLABLE
from services.reconcile.run_cancel import refusal as cancel_refusal
from shared.runs.states import ENDED_STATES, LIVE_STATES, RUN_STATES, may_move


@given(
    shared=st.integers(0, 10_000),
    removing_share=st.floats(0, 1),
    max_share=st.floats(0, 1),
    min_size=st.integers(0, 10_000),
)
def test_a_run_is_held_exactly_when_it_removes_too_much_of_a_large_enough_audience(
    shared: int, removing_share: float, max_share: float, min_size: int
) -> None:
    plan = RemovalPlan(shared, int(shared * removing_share))
    reason = held_reason(plan, ExportGuards(max_removal_share=max_share, min_size=min_size))
    expected = shared >= min_size and shared > 0 and plan.removing / shared > max_share
    assert (reason is not None) == expected
    if reason is not None:
        assert f"would remove {plan.removing} of the {shared} IDs" in reason
        assert "EXPORT_MAX_REMOVAL_SHARE" in reason
        assert "audience-bridge release" in reason


def test_the_default_guard_holds_a_mirror_emptying_a_large_audience() -> None:
    guards = ExportGuards()
    assert held_reason(RemovalPlan(1000, 1000), guards) is not None
    assert held_reason(RemovalPlan(1000, 500), guards) is None  # half is not more than half
    assert held_reason(RemovalPlan(99, 99), guards) is None  # a small audience is not protected
    assert [m for m in ("append", "mirror", "full") if guarded(m)] == ["mirror", "full"]


def test_an_audience_is_refused_with_another_list_only() -> None:
    bound = Binding("ab-1", "VIP", 7, "vip list")
    assert refusal(None, 8, "other") is None  # a new audience
    assert refusal(Binding("ab-1", "VIP", None, None), 8, "other") is None  # bound to no list
    assert refusal(bound, 7, "vip list") is None
    reason = refusal(bound, 8, "other")
    assert reason is not None
    assert "belongs to list 'vip list'" in reason
    assert "audience-bridge audience rebind ab-1 --list" in reason


def test_exports_are_cancelled_only_before_the_platform_has_their_files() -> None:
    assert CANCELLABLE["export"] == {"started", "progress", "blocked", "failed"}
    assert CANCELLABLE["import"] == {"blocked"}
    for state in RUN_STATES:
        assert (cancel_refusal("export", state) is None) == (state in CANCELLABLE["export"])
        assert (cancel_refusal("import", state) is None) == (state in CANCELLABLE["import"])
        if state in CANCELLABLE["export"]:
            assert may_move(state, "cancelled")
    assert "receipts" in (cancel_refusal("export", "uploaded") or "")
    assert "cancelled" in ENDED_STATES
    assert not any(may_move("cancelled", s) for s in RUN_STATES)


def test_only_the_bridges_own_work_is_failed_as_stuck() -> None:
    assert set(STALLING_STATES) < LIVE_STATES
    assert "uploaded" not in STALLING_STATES  # the platform's receipts are publish's to wait for
    assert "EXPORT_RUN_TIMEOUT_S" in stuck_reason(1800)
    assert "1800 s" in stuck_reason(1800)


@given(st.uuids())
def test_the_run_lock_is_publishs_own(run_id: uuid.UUID) -> None:
    assert publish_run_lock(run_id) == _lock_key(run_id)


@given(st.text(min_size=1, max_size=50))
def test_audience_locks_are_two_int4_keys(audience_id: str) -> None:
    space, key = audience_lock(audience_id)
    assert -(2**31) <= key < 2**31
    assert (space, key) == audience_lock(audience_id)
