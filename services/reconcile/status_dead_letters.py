"""The status page's dead letters: how many each topic holds, and per topic and error class how many of the
recent ones, with the command to look at them (``audience-bridge dlq``).

Read from the dead-letter topics themselves (the one place every service writes them; a metric would be per
process and lost at a restart): the totals from their offsets (no record read), the breakdown by error from
at most the last ``STATUS_DEAD_LETTERS_SCAN`` letters of each partition. One read serves every viewer for
``STATUS_DEAD_LETTERS_REFRESH_S`` and is bounded by ``STATUS_DEAD_LETTERS_TIMEOUT_S``; Kafka away or slow
leaves the last known figures on the page, saying so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from services.reconcile.status_chart import esc, fmt_int, fmt_time
from shared.errors import TransientError
from shared.kafka.dlq_reader import DeadLetter, ReadBounds, dead_letter_totals, read_dead_letters
from shared.logging import get_logger
from shared.settings import KafkaSettings
from shared.shared_read import SharedRead
from shared.topics import ALL_TOPICS, DLQ_SUFFIX, dlq_name, topic_name

log = get_logger(__name__)

LIST_COMMAND: Final = "audience-bridge dlq list"


@dataclass(frozen=True, slots=True)
class DeadLetterCount:
    topic: str  # base name of the original topic
    error: str
    count: int
    last_at: datetime


@dataclass(frozen=True, slots=True)
class DeadLetterSummary:
    totals: Mapping[str, int]  # base topic -> letters its dead-letter topic holds
    counts: tuple[DeadLetterCount, ...] = ()
    scanned: int = 0  # letters the breakdown was counted from
    unavailable: str | None = None  # why the figures may be stale (Kafka not answering)
    read_at: datetime | None = None

    @property
    def total(self) -> int:
        return sum(self.totals.values())


def summarize(
    prefix: str, totals: Mapping[str, int], letters: Iterable[DeadLetter], read_at: datetime
) -> DeadLetterSummary:
    """Totals per base topic, and per (topic, error) how many of the scanned letters and the latest one."""
    seen: Counter[tuple[str, str]] = Counter()
    latest: dict[tuple[str, str], datetime] = {}
    scanned = 0
    for letter in letters:
        scanned += 1
        key = (_base(prefix, letter.topic), letter.error)
        seen[key] += 1
        latest[key] = max(latest.get(key, letter.failed_at), letter.failed_at)
    counts = tuple(
        DeadLetterCount(topic=topic, error=error, count=n, last_at=latest[(topic, error)])
        for (topic, error), n in sorted(seen.items(), key=lambda item: (-item[1], item[0]))
    )
    return DeadLetterSummary(
        totals={_base(prefix, t): n for t, n in totals.items()}, counts=counts, scanned=scanned, read_at=read_at
    )


def _base(prefix: str, dlq_topic: str) -> str:
    return dlq_topic.removesuffix(DLQ_SUFFIX).removeprefix(prefix)


def dead_letters_section(summary: DeadLetterSummary | None) -> str:
    """The page's section (empty when the page has no Kafka to read from)."""
    if summary is None:
        return ""
    stale = (
        f'<p class="reason" id="dead-letters-stale">Kafka is not answering ({esc(summary.unavailable)}): '
        "these are the last figures read.</p>"
        if summary.unavailable
        else ""
    )
    if summary.total == 0:
        body = '<p class="empty-state" id="dead-letters-empty">No dead letters: every message was handled.</p>'
    else:
        rows = "".join(
            f'<tr class="dead-letter" data-topic="{esc(c.topic)}" data-error="{esc(c.error)}">'
            f'<td>{esc(c.topic)}</td><td>{esc(c.error)}</td><td class="n">{fmt_int(c.count)}</td>'
            f'<td class="t">{esc(fmt_time(c.last_at))}</td>'
            f"<td><code>{esc(LIST_COMMAND)} --topic {esc(c.topic)} --error {esc(c.error)}</code></td></tr>"
            for c in summary.counts
        )
        totals = ", ".join(f"{esc(t)}: {fmt_int(n)}" for t, n in sorted(summary.totals.items()) if n)
        body = (
            f'<p id="dead-letters-totals">{fmt_int(summary.total)} dead letters kept ({totals}); by error, of the '
            f"{fmt_int(summary.scanned)} most recent:</p>"
            '<div class="scroll"><table id="dead-letters"><thead><tr><th>topic</th><th>error</th>'
            '<th class="n">letters</th><th>latest (UTC)</th><th>to see them</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></div>"
        )
    return (
        f'<section id="dead-letters-section"><h2>Dead letters ({fmt_int(summary.total)})</h2>'
        "<p class=muted>Messages whose own content was wrong, set aside in &lt;topic&gt;.dlq. Fix the cause, then "
        "<code>audience-bridge dlq replay</code> sends them again (a batch applied meanwhile is skipped).</p>"
        f"{stale}{body}</section>"
    )


def dead_letters_json(summary: DeadLetterSummary | None) -> dict[str, Any] | None:
    if summary is None:
        return None
    return {
        "total": summary.total,
        "totals": dict(summary.totals),
        "by_error": [
            {"topic": c.topic, "error": c.error, "count": c.count, "last_at": c.last_at.isoformat()}
            for c in summary.counts
        ],
        "scanned": summary.scanned,
        "unavailable": summary.unavailable,
        "read_at": summary.read_at.isoformat() if summary.read_at else None,
    }


@dataclass
class DeadLetterTally:
    """Reads the summary for the page: one read shared by every viewer (``SharedRead``), bounded in records
    and time; Kafka away keeps the last figures read, marked stale."""

    settings: KafkaSettings
    cache_s: float
    scan_per_partition: int
    timeout_s: float
    _previous: DeadLetterSummary | None = field(default=None, init=False)
    _shared: SharedRead[DeadLetterSummary] = field(init=False)

    def __post_init__(self) -> None:
        self._shared = SharedRead(self._read, ttl_s=self.cache_s, name="status-dead-letters-read")

    async def summary(self) -> DeadLetterSummary:
        return await self._shared.get()

    async def _read(self) -> DeadLetterSummary:
        prefix = self.settings.topic_prefix
        topics = [dlq_name(topic_name(prefix, base)) for base in ALL_TOPICS]
        try:
            totals = await dead_letter_totals(self.settings, topics, timeout_s=self.timeout_s)
            bounds = ReadBounds(max_per_partition=self.scan_per_partition)
            letters = await read_dead_letters(self.settings, topics, bounds, timeout_s=self.timeout_s)
        except TransientError as exc:
            log.warning("status_dead_letters_unavailable", error=str(exc))
            previous = self._previous or DeadLetterSummary(totals={})
            summary = DeadLetterSummary(
                totals=previous.totals,
                counts=previous.counts,
                scanned=previous.scanned,
                unavailable=str(exc),
                read_at=previous.read_at,
            )
        else:
            summary = summarize(prefix, totals, letters, datetime.now(UTC))
        self._previous = summary
        return summary
