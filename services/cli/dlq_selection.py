"""Which dead letters an ``audience-bridge dlq`` command means, and what a replay sends: pure functions.

A query names topics (the base names of :mod:`shared.topics`; all of them by default), a time range, an error
class, or one letter (``PARTITION:OFFSET`` of its dead-letter topic). A replay sends the letter's key and value
unchanged to the topic it was first consumed from, with ``replay.*`` headers saying where it comes from, when
and by whom: the consumers' ledgers (``applied_batch``, run and request ids, event ids) make a replayed message
that was applied meanwhile a no-op.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.errors import PermanentError
from shared.kafka.dlq_reader import DeadLetter
from shared.kafka.producer import OutgoingMessage
from shared.topics import ALL_TOPICS, DLQ_SUFFIX, dlq_name, topic_name

_AGO = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_POSITION = re.compile(r"^(\d{1,9}):(\d{1,19})$")


@dataclass(frozen=True, slots=True)
class LetterQuery:
    """What to select; every given criterion must hold."""

    topics: tuple[str, ...]  # dead-letter topics, full names
    since: datetime | None = None
    until: datetime | None = None
    error: str | None = None  # the exception class (dlq.error) or the kind of failure (dlq.error_class)
    run: str | None = None
    position: tuple[int, int] | None = None  # (partition, offset) of one letter

    def matches(self, letter: DeadLetter) -> bool:
        if letter.topic not in self.topics:
            return False
        if self.position is not None and (letter.partition, letter.offset) != self.position:
            return False
        if self.error is not None and self.error.lower() not in (letter.error.lower(), letter.kind.lower()):
            return False
        if self.run is not None and letter.run_id != self.run:
            return False
        failed = letter.failed_at
        if self.since is not None and failed < self.since:
            return False
        return self.until is None or failed < self.until


def dlq_topics(prefix: str, names: Sequence[str]) -> tuple[str, ...]:
    """The dead-letter topics meant by ``names`` (base topic names, with or without ``.dlq`` or the prefix);
    every topic's when none is given. An unknown name is a PermanentError naming the known ones."""
    if not names:
        return tuple(dlq_name(topic_name(prefix, base)) for base in ALL_TOPICS)
    chosen = []
    for name in names:
        base = name.removesuffix(DLQ_SUFFIX)
        base = base[len(prefix) :] if prefix and base.startswith(prefix) else base
        if base not in ALL_TOPICS:
            raise PermanentError(f"unknown topic {name!r}; the topics are: {', '.join(ALL_TOPICS)}")
        chosen.append(dlq_name(topic_name(prefix, base)))
    return tuple(dict.fromkeys(chosen))


def parse_when(text: str, now: datetime) -> datetime:
    """A time: ISO 8601 (UTC when no offset is given) or an age such as ``90s``, ``15m``, ``2h``, ``7d``."""
    value = text.strip()
    ago = _AGO.match(value)
    if ago is not None:
        return now - timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        hint = "ISO 8601 such as 2026-12-03T08:00, or an age such as 15m, 2h, 7d"
        raise PermanentError(f"not a time: {text!r} ({hint})") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def parse_position(text: str) -> tuple[int, int]:
    """``PARTITION:OFFSET`` of one letter in its dead-letter topic."""
    found = _POSITION.match(text.strip())
    if found is None:
        raise PermanentError(f"not a letter's position: {text!r} (PARTITION:OFFSET, such as 0:42)")
    return int(found.group(1)), int(found.group(2))


def select(letters: Iterable[DeadLetter], query: LetterQuery) -> list[DeadLetter]:
    """The letters the query means, oldest first."""
    return sorted((x for x in letters if query.matches(x)), key=lambda x: (x.failed_at, x.topic, x.partition, x.offset))


def replay_message(letter: DeadLetter, *, replayed_by: str, at: datetime) -> OutgoingMessage:
    """The letter as it was first sent, to its original topic, with provenance headers. A letter whose value
    was omitted (too large for Kafka with its headers) cannot be replayed from the dead-letter topic."""
    if letter.value_omitted:
        raise PermanentError(
            f"the letter at {letter.topic}[{letter.partition}]@{letter.offset} holds no value "
            f"({letter.headers['dlq.value_omitted']}); the original is at {letter.original_position}"
        )
    headers = [
        ("replay.from.topic", letter.topic.encode()),
        ("replay.from.partition", str(letter.partition).encode()),
        ("replay.from.offset", str(letter.offset).encode()),
        ("replay.original", letter.original_position.encode()),
        ("replay.error", letter.error.encode()),
        ("replay.at", str(int(at.timestamp() * 1000)).encode()),
        ("replay.by", replayed_by.encode()),
    ]
    return OutgoingMessage(topic=letter.original_topic, value=letter.value, key=letter.key, headers=headers)
