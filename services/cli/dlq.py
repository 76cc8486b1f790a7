"""``audience-bridge dlq list|show|replay``: the dead letters of every topic, one letter whole, and replaying
them to the topic they came from (:mod:`services.cli.dlq_selection` decides which and what is sent;
:mod:`shared.kafka.dlq_reader` reads the dead-letter topics)."""

from __future__ import annotations

import getpass
import socket
from datetime import UTC, datetime
from typing import Annotated

import orjson
import typer
from rich.table import Table

from services.cli.common import app, console, err, run_sync
from services.cli.dlq_selection import LetterQuery, dlq_topics, parse_position, parse_when, replay_message, select
from shared.errors import BridgeError
from shared.kafka import OutgoingMessage, Producer
from shared.kafka.dlq_reader import DeadLetter, ReadBounds, read_dead_letters
from shared.logging import get_logger
from shared.settings import KafkaSettings, load_settings

log = get_logger(__name__)

dlq_app = typer.Typer(
    help="Dead letters: list them, show one, replay them to the topic they came from.", no_args_is_help=True
)
app.add_typer(dlq_app, name="dlq")

SEND_CHUNK = 500

TopicOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--topic", "-t", help="A topic (base name, such as audience-membership); repeat for more. All by default."
    ),
]
SinceOpt = Annotated[
    str | None, typer.Option(help="Dead-lettered at or after: ISO 8601 (UTC) or an age (15m, 2h, 7d).")
]
UntilOpt = Annotated[str | None, typer.Option(help="Dead-lettered before: ISO 8601 (UTC) or an age (15m, 2h, 7d).")]
ErrorOpt = Annotated[
    str | None,
    typer.Option(help="Only this exception class (dlq.error, such as PoisonMessage) or kind (content, unexpected)."),
]
RunOpt = Annotated[str | None, typer.Option(help="Only letters of this run (dlq.run_id).")]


def _query(
    topics: list[str] | None,
    since: str | None,
    until: str | None,
    error: str | None,
    offset: str | None = None,
    run: str | None = None,
) -> LetterQuery:
    settings = load_settings(KafkaSettings)
    now = datetime.now(UTC)
    try:
        chosen = dlq_topics(settings.topic_prefix, topics or [])
        position = parse_position(offset) if offset is not None else None
        if position is not None and len(chosen) != 1:
            raise BridgeError("--offset names a letter in one topic: give exactly one --topic")
        return LetterQuery(
            topics=chosen,
            since=parse_when(since, now) if since else None,
            until=parse_when(until, now) if until else None,
            error=error,
            run=run,
            position=position,
        )
    except BridgeError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _letters(query: LetterQuery) -> list[DeadLetter]:
    settings = load_settings(KafkaSettings)
    since_ms = int(query.since.timestamp() * 1000) if query.since is not None else None
    # A letter's Kafka timestamp is when it was dead-lettered: reading starts there, the rest filters exactly.
    found = run_sync(read_dead_letters(settings, query.topics, ReadBounds(since_ms=since_ms)))
    return select(found, query)


def _base(topic: str) -> str:
    prefix = load_settings(KafkaSettings).topic_prefix
    return topic.removeprefix(prefix)


@dlq_app.command("list")
def list_cmd(
    topic: TopicOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    error: ErrorOpt = None,
    run: RunOpt = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows shown at most (the newest); all are counted.")] = 50,
) -> None:
    """Dead letters, oldest first, with where each came from and why it was dead-lettered."""
    letters = _letters(_query(topic, since, until, error, run=run))
    table = Table("topic", "letter", "dead-lettered (UTC)", "error", "kind", "service", "run", "original", "reason")
    for x in letters[-limit:]:
        table.add_row(
            _base(x.topic),
            f"{x.partition}:{x.offset}",
            x.failed_at.strftime("%Y-%m-%d %H:%M:%S"),
            x.error,
            x.kind,
            x.headers.get("dlq.service", ""),
            x.run_id,
            x.original_position,
            x.reason[:100],
        )
    console.print(table)
    shown = min(limit, len(letters))
    console.print(f"{len(letters)} dead letters" + (f" ({shown} newest shown)" if shown < len(letters) else ""))


@dlq_app.command("show")
def show_cmd(
    topic: Annotated[str, typer.Argument(help="The topic (base name, such as audience-membership).")],
    letter: Annotated[str, typer.Argument(help="PARTITION:OFFSET of the letter in the dead-letter topic.")],
) -> None:
    """One letter whole: every header (the stack trace too), its key and its value."""
    found = _letters(_query([topic], None, None, None, letter))
    if not found:
        err.print(f"[red]error:[/red] no dead letter {letter} in {topic}")
        raise typer.Exit(1)
    x = found[0]
    data = {
        "topic": x.topic,
        "partition": x.partition,
        "offset": x.offset,
        "failed_at": x.failed_at.isoformat(),
        "headers": dict(x.headers),
        "key": x.key.decode("utf-8", "replace") if x.key is not None else None,
        "value": _value(x.value),
    }
    console.print_json(orjson.dumps(data).decode())


def _value(raw: bytes) -> object:
    """The value as JSON when it is JSON (most are), else as text."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")


@dlq_app.command("replay")
def replay_cmd(
    topic: TopicOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    error: ErrorOpt = None,
    run: RunOpt = None,
    offset: Annotated[str | None, typer.Option(help="Only the letter at PARTITION:OFFSET (with one --topic).")] = None,
    every: Annotated[bool, typer.Option("--all", help="Replay every letter of every topic (no filter).")] = False,
    by: Annotated[str | None, typer.Option(help="Who replays (replay.by header; user@host by default).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be replayed; send nothing.")] = False,
) -> None:
    """Send dead letters back to the topic they came from, unchanged, with replay.* provenance headers. Safe to
    repeat: a replayed batch, request or event that was applied meanwhile is skipped by the consumers' ledgers."""
    if not (topic or since or until or error or run or offset or every):
        err.print("[red]error:[/red] say what to replay: --topic, --since, --until, --error, --run, --offset, or --all")
        raise typer.Exit(2)
    letters = _letters(_query(topic, since, until, error, offset, run))
    if offset is not None and not letters:
        err.print(f"[red]error:[/red] no dead letter {offset} in {topic[0] if topic else ''}")
        raise typer.Exit(1)
    who = by or f"{getpass.getuser()}@{socket.gethostname()}"
    try:
        messages = [replay_message(x, replayed_by=who, at=datetime.now(UTC)) for x in letters]
    except BridgeError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    targets = sorted({_base(m.topic) for m in messages})
    if dry_run:
        console.print(f"would replay {len(messages)} dead letters to {', '.join(targets) or 'no topic'}")
        return
    run_sync(_send(messages))
    log.info("dead_letters_replayed", count=len(messages), topics=targets, by=who)
    console.print(f"replayed {len(messages)} dead letters to {', '.join(targets) or 'no topic'}")


async def _send(messages: list[OutgoingMessage]) -> None:
    producer = Producer(load_settings(KafkaSettings), "audience-bridge-cli")
    try:
        for start in range(0, len(messages), SEND_CHUNK):
            await producer.send(messages[start : start + SEND_CHUNK])
    finally:
        await producer.stop()
