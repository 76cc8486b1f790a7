"""Which dead letters a ``dlq`` command means, what a replay sends, and the status page's dead-letter figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.cli.dlq_selection import LetterQuery, dlq_topics, parse_position, parse_when, replay_message, select
from services.reconcile.status_dead_letters import DeadLetterTally, dead_letters_json, dead_letters_section, summarize
from shared.errors import PermanentError
from shared.kafka.dlq_reader import DeadLetter
from shared.settings import KafkaSettings

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
PREFIX = "p."


def _letter(
    offset: int, *, error: str = "PoisonMessage", at: datetime = NOW, headers: dict[str, str] | None = None
) -> DeadLetter:
    millis = int(at.timestamp() * 1000)
    return DeadLetter(
        topic="p.audience-membership.dlq",
        partition=1,
        offset=offset,
        timestamp_ms=millis,
        key=b"k",
        value=b'{"run_id": "x"}',
        headers={
            "dlq.error": error,
            "dlq.reason": "bad <b>",
            "dlq.original.topic": "p.audience-membership",
            "dlq.original.partition": "3",
            "dlq.original.offset": str(offset + 100),
            "dlq.failed_at": str(millis),
            **(headers or {}),
        },
    )


@given(st.integers(0, 10**9 - 1), st.integers(0, 10**18))
def test_a_position_reads_back(partition: int, offset: int) -> None:
    assert parse_position(f"{partition}:{offset}") == (partition, offset)
    assert parse_position(f" {partition}:{offset} ") == (partition, offset)


@given(st.text(max_size=30).filter(lambda t: ":" not in t or not t.replace(":", "").strip().isdigit()))
def test_anything_else_is_not_a_position(text: str) -> None:
    with pytest.raises(PermanentError, match="PARTITION:OFFSET"):
        parse_position(text)


@given(st.integers(0, 10_000), st.sampled_from(["s", "m", "h", "d"]))
def test_an_age_is_counted_back_from_now(n: int, unit: str) -> None:
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit] * n
    assert parse_when(f"{n}{unit}", NOW) == NOW - timedelta(seconds=seconds)


def test_times_are_utc_unless_they_say_otherwise() -> None:
    assert parse_when("2026-12-03T07:30", NOW) == datetime(2026, 12, 3, 7, 30, tzinfo=UTC)
    assert parse_when("2026-12-03T09:30+02:00", NOW) == datetime(2026, 12, 3, 7, 30, tzinfo=UTC)
    with pytest.raises(PermanentError, match="not a time"):
        parse_when("yesterday", NOW)


def test_topics_by_base_name_with_or_without_prefix_and_suffix() -> None:
    assert dlq_topics(PREFIX, ["audience-membership", "p.segment-events.dlq"]) == (
        "p.audience-membership.dlq",
        "p.segment-events.dlq",
    )
    assert "p.audience-export-batches.dlq" in dlq_topics(PREFIX, [])
    with pytest.raises(PermanentError, match="unknown topic 'nope'"):
        dlq_topics(PREFIX, ["nope"])


def test_a_query_selects_by_error_time_and_position() -> None:
    letters = [
        _letter(0, at=NOW - timedelta(hours=2)),
        _letter(1, error="ValueError", at=NOW - timedelta(minutes=30)),
        _letter(2, at=NOW - timedelta(minutes=5)),
    ]
    topics = ("p.audience-membership.dlq",)
    assert [x.offset for x in select(letters, LetterQuery(topics=topics))] == [0, 1, 2]
    assert [x.offset for x in select(letters, LetterQuery(topics=topics, error="poisonmessage"))] == [0, 2]
    since = LetterQuery(topics=topics, since=NOW - timedelta(hours=1), until=NOW - timedelta(minutes=10))
    assert [x.offset for x in select(letters, since)] == [1]
    assert [x.offset for x in select(letters, LetterQuery(topics=topics, position=(1, 2)))] == [2]
    assert select(letters, LetterQuery(topics=("p.segment-events.dlq",))) == []
    tagged = [_letter(3, headers={"dlq.error_class": "content", "dlq.run_id": "r-1"}), _letter(4)]
    assert [x.offset for x in select(tagged, LetterQuery(topics=topics, error="content"))] == [3]
    assert [x.offset for x in select(tagged, LetterQuery(topics=topics, run="r-1"))] == [3]


def test_a_replay_goes_to_the_original_topic_unchanged_with_provenance() -> None:
    message = replay_message(_letter(7), replayed_by="ops@host", at=NOW)
    assert (message.topic, message.key, message.value) == ("p.audience-membership", b"k", b'{"run_id": "x"}')
    headers = dict(message.headers)
    assert headers["replay.from.topic"] == b"p.audience-membership.dlq"
    assert (headers["replay.from.partition"], headers["replay.from.offset"]) == (b"1", b"7")
    assert headers["replay.original"] == b"p.audience-membership[3]@107"
    assert headers["replay.at"] == str(int(NOW.timestamp() * 1000)).encode()
    assert headers["replay.by"] == b"ops@host"
    assert not any(name.startswith("dlq.") for name, _ in message.headers)


def test_a_letter_without_its_value_cannot_be_replayed() -> None:
    with pytest.raises(PermanentError, match=r"the original is at p.audience-membership\[3\]@107"):
        replay_message(_letter(7, headers={"dlq.value_omitted": "value=5000000"}), replayed_by="x", at=NOW)


def test_the_page_counts_per_topic_and_error_and_escapes_what_it_shows() -> None:
    letters = [_letter(0), _letter(1, at=NOW + timedelta(seconds=5)), _letter(2, error="<script>")]
    summary = summarize(PREFIX, {"p.audience-membership.dlq": 3, "p.segment-events.dlq": 0}, letters, NOW)
    assert summary.total == 3
    assert [(c.topic, c.error, c.count) for c in summary.counts] == [
        ("audience-membership", "PoisonMessage", 2),
        ("audience-membership", "<script>", 1),
    ]
    assert summary.counts[0].last_at == NOW + timedelta(seconds=5)
    html = dead_letters_section(summary)
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "audience-bridge dlq list --topic audience-membership --error PoisonMessage" in html
    body = dead_letters_json(summary)
    assert body is not None
    assert body["totals"] == {"audience-membership": 3, "segment-events": 0}
    assert 'id="dead-letters-empty"' in dead_letters_section(summarize(PREFIX, {}, [], NOW))
    assert dead_letters_section(None) == ""


async def test_the_page_says_so_when_kafka_does_not_answer(free_port: int) -> None:
    settings = KafkaSettings(kafka_bootstrap_servers=f"127.0.0.1:{free_port}", topic_prefix=PREFIX)
    tally = DeadLetterTally(settings, cache_s=0, scan_per_partition=10, timeout_s=1)
    summary = await tally.summary()
    assert summary.unavailable is not None
    assert summary.total == 0
    assert 'id="dead-letters-stale"' in dead_letters_section(summary)
