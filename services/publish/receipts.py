"""What the platform's processing receipts say of a run's files, and how the run ends by them (no I/O).

The platform processes inbound files later (twice a day, up to 48 h) and answers each with a receipt
(``GET /datasources/{id}/history/inbound``): records received, the lines it refused by reason (format
errors, invalid IDs, no matching ID, no trait realised), the records it stored, or why it refused the file.
A receipt names its file (``dataFileName``); publish's file names are fixed per run, so a receipt is
matched to a file by name, and to this upload of it by time (a job that started before the file was written
is about an earlier file of the same name).

A file's verdict:

* ``applied``: every line stored;
* ``rejected``: the platform refused the file: none of its lines applied;
* ``partial``: some lines refused. Which ones is known only when the receipt's error samples (at most 10
  per reason, with line numbers) account for every refused line; otherwise the file's lines are
  *unconfirmed*: its adds are kept as shared (so a later removal is still sent) and listed for the operator,
  its removes are kept as still shared (sent again by the next ``mirror``);
* ``timed_out``: no receipt within ``EXPORT_RECEIPT_TIMEOUT_S``; the file is withdrawn from the drop zone
  and none of its lines counts as applied.

The run: ``succeeded`` when every file is applied, ``failed`` when no line was applied (every file rejected)
or a file timed out, ``partial`` otherwise, with the counters and the reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from services.publish.apply_sql import DEFAULT_APPLY_WORK_MEM_MB
from shared.platform import InboundReceipt

Verdict = Literal["applied", "partial", "rejected", "timed_out"]
# A receipt's job may start a little before our clock says the file was written (clock skew).
CLOCK_SLACK_MS: Final = 60_000
# Rejected lines per reason, as counted on the run ("rejected_<reason>") and the status page.
REASON_FIELDS: Final = (
    ("format_error", "format_errors"),
    ("invalid_aam_id", "invalid_aam_ids"),
    ("no_matching_aam_id", "no_matching_aam_id"),
    ("no_trait_realized", "no_trait_realized"),
)
FILE_REJECTED: Final = "file_rejected"
TIMED_OUT: Final = "not_processed"
OTHER: Final = "other"
UNCONFIRMED: Final = "unconfirmed"


@dataclass(frozen=True, slots=True)
class ReceiptOptions:
    """How runs wait for their receipts (``EXPORT_RECEIPT_*``)."""

    poll_s: float = 1.0
    poll_max_s: float = 300.0
    poll_fast_s: float = 60.0  # polls stay at poll_s this long after an upload (receipt_pacing.py)
    timeout_s: float = 172_800.0
    work_mem_mb: int = DEFAULT_APPLY_WORK_MEM_MB  # recording the ended run (EXPORT_RECORD_WORK_MEM_MB)


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """One file of a run as publish recorded it (``published_file``)."""

    key: str  # the object key in the drop zone
    file_set: str  # "sync" or "overwrite": the rows it was cut from
    first_line: int  # 0-based position of its first line in its set's rows
    lines: int
    written_at_ms: int

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class FileVerdict:
    key: str
    verdict: Verdict
    lines_applied: int
    lines_rejected: int
    rejected_by: Mapping[str, int] = field(default_factory=dict)
    # 1-based line numbers of the refused lines when the receipt names them all; None: the refused lines are
    # the whole file (rejected, timed out) or unknown (partial, unconfirmed).
    rejected_lines: tuple[tuple[int, str], ...] | None = None  # (line, the sample's reason)
    reason: str | None = None

    @property
    def unconfirmed(self) -> bool:
        return self.verdict == "partial" and self.rejected_lines is None


def match_receipt(file: UploadedFile, receipts: Iterable[InboundReceipt]) -> InboundReceipt | None:
    """The newest receipt of this upload of the file (by name, job started after it was written)."""
    best: InboundReceipt | None = None
    for r in receipts:
        if r.data_file_name != file.name:
            continue
        started = r.start_time if r.start_time is not None else r.end_time
        if started is not None and started < file.written_at_ms - CLOCK_SLACK_MS:
            continue
        if best is None or (started or 0) > (best.start_time or best.end_time or 0):
            best = r
    return best


def _refused(receipt: InboundReceipt) -> bool:
    return receipt.success is False or (receipt.status or "").lower() in ("rejected", "failed", "error")


def judge(file: UploadedFile, receipt: InboundReceipt) -> FileVerdict:
    """The file's verdict from its receipt."""
    if _refused(receipt):
        reason = receipt.reason or "the platform rejected the file"
        return FileVerdict(file.key, "rejected", 0, file.lines, {FILE_REJECTED: file.lines}, None, reason)
    stored = receipt.stored_records if receipt.stored_records is not None else file.lines
    rejected = max(0, min(file.lines, file.lines - stored))
    if rejected == 0:
        return FileVerdict(file.key, "applied", file.lines, 0)
    by: Counter[str] = Counter()
    for reason, attr in REASON_FIELDS:
        value = getattr(receipt, attr) or 0
        if value > 0:
            by[reason] = min(value, rejected - sum(by.values()))
    if sum(by.values()) < rejected:
        by[OTHER] = rejected - sum(by.values())
    sampled = {
        int(s["line"]): str(s.get("reason") or OTHER)
        for s in receipt.error_samples or ()
        if isinstance(s.get("line"), int) and 1 <= int(s["line"]) <= file.lines
    }
    exact = tuple(sorted(sampled.items())) if len(sampled) == rejected else None
    return FileVerdict(
        file.key, "partial", file.lines - rejected, rejected, dict(+by), exact, _count_reason(rejected, file.lines, by)
    )


def timed_out(file: UploadedFile, timeout_s: float) -> FileVerdict:
    reason = f"the platform has not processed {file.name} within {timeout_s:g} s of its upload"
    return FileVerdict(file.key, "timed_out", 0, file.lines, {TIMED_OUT: file.lines}, None, reason)


def is_overdue(file: UploadedFile, now_ms: int, timeout_s: float) -> bool:
    return now_ms - file.written_at_ms >= timeout_s * 1000


def _count_reason(rejected: int, lines: int, by: Mapping[str, int]) -> str:
    detail = ", ".join(f"{k}: {v}" for k, v in sorted(by.items()))
    return f"the platform rejected {rejected} of {lines} lines ({detail})"


@dataclass(frozen=True, slots=True)
class RunVerdict:
    state: Literal["succeeded", "partial", "failed"]
    reason: str | None
    counts: dict[str, int]


def run_verdict(verdicts: Sequence[FileVerdict]) -> RunVerdict:
    """How a run ends once every one of its files has a verdict."""
    applied = sum(v.lines_applied for v in verdicts)
    rejected = sum(v.lines_rejected for v in verdicts)
    by: Counter[str] = Counter()
    for v in verdicts:
        by.update(v.rejected_by)
    counts = {
        "uploaded": applied + rejected,
        "applied": applied,
        "rejected": rejected,
        "unconfirmed": sum(v.lines_rejected for v in verdicts if v.unconfirmed),
        **{f"rejected_{k}": n for k, n in sorted(by.items())},
    }
    late = [v for v in verdicts if v.verdict == "timed_out"]
    if late:
        return RunVerdict("failed", "; ".join(v.reason or "" for v in late)[:1000], counts)
    if rejected == 0:
        return RunVerdict("succeeded", None, counts)
    if applied == 0:
        reasons = "; ".join(f"{v.key.rsplit('/', 1)[-1]}: {v.reason}" for v in verdicts if v.reason)
        return RunVerdict("failed", f"the platform applied none of the run's lines ({reasons})"[:1000], counts)
    reasons = "; ".join(f"{v.key.rsplit('/', 1)[-1]}: {v.reason}" for v in verdicts if v.reason)
    return RunVerdict("partial", reasons[:1000], counts)


@dataclass(frozen=True, slots=True)
class LineRange:
    """Lines ``[lo, hi)`` of a file set the platform did not (or not verifiably) apply."""

    file_set: str
    lo: int
    hi: int
    file: str
    reason: str  # why: a receipt's reason name, ``file_rejected``, ``not_processed`` or ``unconfirmed``


def unapplied_ranges(files: Mapping[str, UploadedFile], verdicts: Iterable[FileVerdict]) -> list[LineRange]:
    """The set-row ranges not applied, from the verdicts (an exact refusal is one range per line)."""
    out: list[LineRange] = []
    for v in verdicts:
        if v.verdict == "applied":
            continue
        f = files[v.key]
        if v.rejected_lines is not None:
            out += [
                LineRange(f.file_set, f.first_line + n - 1, f.first_line + n, f.name, why)
                for n, why in v.rejected_lines
            ]
            continue
        reason = UNCONFIRMED if v.unconfirmed else next(iter(v.rejected_by), OTHER)
        out.append(LineRange(f.file_set, f.first_line, f.first_line + f.lines, f.name, reason))
    return out
