"""publish's export run: which states it works on, the outcome it reports, the batches it accepts, and
why a run failed."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from services.publish.export_run import PUBLISH_ENDS, BatchRefused, ExportRun, check_batch, run_counts
from services.publish.publisher import failure_reason
from shared.messages import AudienceExportBatch
from shared.runs.states import ENDED_STATES, RUN_STATES

RUN = ExportRun(
    run_id=uuid.UUID(int=7),
    audience_id="ab-vip",
    audience_name="VIP",
    mode="mirror",
    state="progress",
    reason=None,
    started_at=datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
    counts={"received": 9, "excluded": 1, "adds": 8},
    data_source_id=3,
    dpid=1001,
    trait_id=None,
    segment_id=None,
    staged_batches=2,
    last_seq=1,
    totals={"received": 10, "excluded": 2, "batches": 2},
    file_ts=None,
)


def batch(**fields: object) -> AudienceExportBatch:
    values: dict[str, object] = {
        "run_id": RUN.run_id,
        "seq": 0,
        "last": False,
        "audience_id": "ab-vip",
        "data_source": "visitors",
        "dpid": 1001,
        "mode": "mirror",
        "adds": [],
        "removes": [],
    }
    return AudienceExportBatch.model_validate(values | fields)


def test_run_counts_take_received_and_excluded_from_the_totals() -> None:
    counts = run_counts({"received": 10, "excluded": 2, "batches": 1}, {"received": 9}, added=7, removed=1)
    assert counts == {"received": 10, "added": 7, "removed": 1, "excluded": 2}
    assert run_counts(None, {"received": 9, "excluded": 1}, added=0, removed=0)["received"] == 9


@pytest.mark.parametrize("state", RUN_STATES)
def test_publish_works_on_live_runs_only(state: str) -> None:
    run = replace(RUN, state=state)  # type: ignore[arg-type]
    assert run.live == (state in ("started", "progress", "uploaded"))


def test_publish_ends_runs_as_succeeded_or_failed_never_blocked() -> None:
    assert {"succeeded", "partial", "failed"} == PUBLISH_ENDS
    assert PUBLISH_ENDS <= ENDED_STATES


def test_the_outcome_is_the_export_run_with_the_counts_publish_reports() -> None:
    done = replace(RUN, state="succeeded", counts={"received": 9, "added": 8, "removed": 1})
    outcome = done.outcome(["acme/x.sync.gz"])
    assert (outcome.run_id, outcome.direction, outcome.state, outcome.audience_id) == (
        RUN.run_id,
        "export",
        "succeeded",
        "ab-vip",
    )
    assert outcome.counts == {"received": 10, "added": 8, "removed": 1, "excluded": 2}
    assert outcome.files == ("acme/x.sync.gz",)
    assert outcome.match_rate is None
    started = RUN.started()
    assert started.state == "started"
    assert started.counts == {"received": 10, "added": 0, "removed": 0, "excluded": 2}


def test_a_batch_must_agree_with_its_run() -> None:
    check_batch(RUN, batch(seq=1, last=True))
    for refused in (batch(audience_id="ab-other"), batch(dpid=1002), batch(mode="append"), batch(seq=2)):
        with pytest.raises(BatchRefused):
            check_batch(RUN, refused)


def test_failure_reasons_are_bounded_and_masked() -> None:
    reason = failure_reason("writing", RuntimeError("Authorization: Bearer abc.def.ghi " + "x" * 5000))
    assert "abc.def.ghi" not in reason
    assert reason.startswith("writing: ")
    assert len(reason) <= 1000
