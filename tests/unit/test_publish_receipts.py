"""What receipts say of a run's files and how the run ends by them; which lines ecsim rejects on request."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.ecsim.inbound_faults import InboundFaultRequest, InboundSchedule, rejects_record
from services.publish.receipts import (
    FileVerdict,
    LineRange,
    UploadedFile,
    is_overdue,
    judge,
    match_receipt,
    run_verdict,
    timed_out,
    unapplied_ranges,
)
from shared.platform import InboundReceipt

FILE = UploadedFile("acme/date=2026-12-03/ftp_dpm_1001_1764730000.sync.gz", "sync", 0, 100, 1_000_000)
PART2 = UploadedFile("acme/date=2026-12-03/ftp_dpm_1001_1764730000.sync.2.gz", "sync", 100, 50, 1_000_000)


def receipt(**fields: Any) -> InboundReceipt:
    body = {"dataFileName": FILE.name, "startTime": 1_000_500, "success": True, **fields}
    return InboundReceipt.model_validate(body)


def test_a_receipt_is_matched_by_name_and_to_this_upload() -> None:
    earlier = receipt(startTime=FILE.written_at_ms - 3_600_000, storedRecords=1)
    other = receipt(dataFileName="ftp_dpm_1001_1.sync.gz", storedRecords=100)
    ours = receipt(storedRecords=100)
    assert match_receipt(FILE, [earlier, other]) is None
    assert match_receipt(FILE, [earlier, other, ours]) is ours


def test_every_line_stored_is_applied() -> None:
    v = judge(FILE, receipt(recordsReceived=100, storedRecords=100))
    assert (v.verdict, v.lines_applied, v.lines_rejected) == ("applied", 100, 0)


def test_a_refused_file_applies_nothing() -> None:
    v = judge(FILE, receipt(success=False, status="rejected", reason="unknown data source 1001"))
    assert (v.verdict, v.lines_applied, v.lines_rejected, v.reason) == (
        "rejected",
        0,
        100,
        "unknown data source 1001",
    )
    assert v.rejected_by == {"file_rejected": 100}


def test_refused_lines_are_counted_per_reason_and_named_when_the_samples_cover_them() -> None:
    samples = [{"line": n, "reason": "invalid_aam_id"} for n in (10, 20, 30)]
    v = judge(FILE, receipt(storedRecords=97, invalidAamIds=3, errorSamples=samples))
    assert (v.verdict, v.lines_applied, v.lines_rejected) == ("partial", 97, 3)
    assert v.rejected_by == {"invalid_aam_id": 3}
    assert v.rejected_lines == ((10, "invalid_aam_id"), (20, "invalid_aam_id"), (30, "invalid_aam_id"))
    assert not v.unconfirmed
    assert unapplied_ranges({FILE.key: FILE}, [v]) == [
        LineRange("sync", n - 1, n, FILE.name, "invalid_aam_id") for n in (10, 20, 30)
    ]


def test_refused_lines_the_samples_do_not_cover_leave_the_file_unconfirmed() -> None:
    samples = [{"line": n, "reason": "format_error"} for n in range(1, 11)]
    v = judge(PART2, receipt(dataFileName=PART2.name, storedRecords=30, formatErrors=12, noTraitRealized=5))
    assert v.unconfirmed
    assert v.rejected_by == {"format_error": 12, "no_trait_realized": 5, "other": 3}
    v2 = judge(PART2, receipt(dataFileName=PART2.name, storedRecords=30, formatErrors=20, errorSamples=samples))
    assert v2.unconfirmed
    assert unapplied_ranges({PART2.key: PART2}, [v2]) == [LineRange("sync", 100, 150, PART2.name, "unconfirmed")]


def test_a_file_without_receipt_times_out() -> None:
    assert not is_overdue(FILE, FILE.written_at_ms + 59_999, 60)
    assert is_overdue(FILE, FILE.written_at_ms + 60_000, 60)
    v = timed_out(FILE, 60)
    assert v.verdict == "timed_out"
    assert v.lines_rejected == 100
    assert v.reason is not None
    assert v.reason.startswith("the platform has not processed ftp_dpm_1001_")


def test_the_run_ends_by_its_files() -> None:
    applied = FileVerdict(FILE.key, "applied", 100, 0)
    partial = judge(PART2, receipt(dataFileName=PART2.name, storedRecords=45, invalidAamIds=5))
    rejected = judge(PART2, receipt(dataFileName=PART2.name, success=False, reason="bad"))
    assert run_verdict([applied]).state == "succeeded"
    assert run_verdict([applied]).counts == {"uploaded": 100, "applied": 100, "rejected": 0, "unconfirmed": 0}
    ended = run_verdict([applied, partial])
    assert (ended.state, ended.counts["rejected"], ended.counts["rejected_invalid_aam_id"]) == ("partial", 5, 5)
    assert ended.reason is not None
    assert "rejected 5 of 50 lines" in ended.reason
    assert run_verdict([applied, rejected]).state == "partial"
    assert run_verdict([rejected]).state == "failed"
    late = run_verdict([applied, timed_out(PART2, 60)])
    assert late.state == "failed"
    assert late.reason is not None
    assert "has not processed" in late.reason


@given(st.integers(min_value=0, max_value=2000), st.floats(min_value=0, max_value=1))
def test_ecsim_rejects_exactly_the_share_of_records(n: int, share: float) -> None:
    rejected = sum(rejects_record(i, share) for i in range(1, n + 1))
    assert abs(rejected - n * share) < 1 + 1e-6
    assert rejected <= n


def test_ecsim_rejects_every_tenth_record_at_ten_percent() -> None:
    assert [i for i in range(1, 51) if rejects_record(i, 0.1)] == [10, 20, 30, 40, 50]


def test_ecsim_processes_a_file_after_its_delay_or_never_when_held() -> None:
    schedule = InboundSchedule(default_delay_s=2.0)
    assert not schedule.ready("a", 1001, 100.0, on_request=False)
    assert schedule.ready("a", 1001, 100.0, on_request=True)  # an explicit scan skips the default delay
    assert schedule.ready("a", 1001, 102.0, on_request=False)
    schedule.set_faults(InboundFaultRequest(delay_s=5))
    assert not schedule.ready("a", 1001, 104.0, on_request=True)
    assert schedule.ready("a", 1001, 105.0, on_request=True)
    schedule.set_faults(InboundFaultRequest(hold=True, dpid=1001))
    assert not schedule.ready("a", 1001, 1e9, on_request=True)
    assert schedule.ready("b", 1002, 1e9, on_request=True)  # another data source is not held


def test_ecsim_rejects_the_next_files_it_is_told_to() -> None:
    schedule = InboundSchedule()
    schedule.set_faults(InboundFaultRequest(reject_files=2))
    assert [schedule.take_file_rejection(1001) is not None for _ in range(3)] == [True, True, False]
    schedule.set_faults(InboundFaultRequest(reject_files=-1, reject_file_reason="no", dpid=1002))
    assert schedule.take_file_rejection(1001) is None
    assert [schedule.take_file_rejection(1002) for _ in range(3)] == ["no", "no", "no"]
