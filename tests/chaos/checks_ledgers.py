"""The fault scenario's checks that do not trust the bridge's own ledgers alone.

* Applied once: the driver reads every membership batch ingest sent (the topic, not ``applied_batch``) and
  counts the distinct (run, seq); ``applied_batch`` must hold exactly those, and each import run must have
  applied as many batches as the driver saw for it.
* Processed once: the file batches the driver delivered (its own list) against ``processed_file``.
* Dead letters: every dead-letter topic holds only the bad messages the driver sent on purpose.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable

import asyncpg
import orjson

from shared.kafka import OutgoingMessage, Producer, ensure_topics
from shared.kafka.dlq_reader import read_dead_letters
from shared.settings import KafkaSettings
from shared.topics import ALL_TOPICS, dlq_name, topic_name
from tests.helpers import read_topic

Check = tuple[str, bool, str]


async def sent_batches(settings: KafkaSettings) -> set[tuple[uuid.UUID, int]]:
    """Distinct (run_id, seq) of the membership batches on the topic (redeliveries counted once)."""
    topic = topic_name(settings.topic_prefix, "audience-membership")
    records = await read_topic(settings.kafka_bootstrap_servers, topic, expect=10**9, timeout=10)
    seen: set[tuple[uuid.UUID, int]] = set()
    for record in records:
        try:
            body = orjson.loads(record.value or b"")
            seen.add((uuid.UUID(body["run_id"]), int(body["seq"])))
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError):
            continue  # a bad message the driver sent on purpose
    return seen


async def applied_once(pool: asyncpg.Pool, sent: set[tuple[uuid.UUID, int]]) -> Check:
    applied = {(r["run_id"], r["seq"]) for r in await pool.fetch("SELECT run_id, seq FROM applied_batch")}
    per_run = Counter(run for run, _ in sent)
    runs = {
        r["run_id"]: r["batches_applied"]
        for r in await pool.fetch("SELECT run_id, batches_applied FROM run WHERE direction = 'import'")
    }
    wrong = {run: (runs.get(run), n) for run, n in per_run.items() if runs.get(run) != n}
    ok = applied == sent and not wrong
    return (
        "import batches applied once, as counted by the driver",
        ok,
        f"driver saw {len(sent)} distinct batches of {len(per_run)} runs on the topic; applied_batch holds "
        f"{len(applied)} ({len(applied - sent)} unknown to the driver, {len(sent - applied)} missing); "
        f"runs whose batches_applied differ (bridge, driver): {dict(list(wrong.items())[:5]) or 'none'}",
    )


async def processed_once(pool: asyncpg.Pool, delivered: Iterable[str]) -> Check:
    want = set(delivered)
    rows = await pool.fetch("SELECT batch_root, state FROM processed_file")
    got = Counter(r["batch_root"] for r in rows)
    states = Counter(r["state"] for r in rows)
    twice = [root for root, n in got.items() if n > 1]
    ok = set(got) == want and not twice and set(states) <= {"processed"}
    return (
        "file batches processed once, as counted by the driver",
        ok,
        f"driver delivered {len(want)} batches; processed_file holds {len(got)} ({len(set(got) - want)} unknown, "
        f"{len(want - set(got))} missing, {len(twice)} twice), states {dict(states)}",
    )


async def dead_letters_only(settings: KafkaSettings, on_purpose: set[bytes]) -> Check:
    topics = [dlq_name(topic_name(settings.topic_prefix, base)) for base in ALL_TOPICS]
    letters = await read_dead_letters(settings, topics)
    keys = Counter(x.key or b"" for x in letters)
    unexpected = [x for x in letters if (x.key or b"") not in on_purpose]
    by_error = Counter((x.topic.removeprefix(settings.topic_prefix), x.error) for x in unexpected)
    ok = not unexpected and set(keys) == on_purpose and all(keys[k] == 1 for k in on_purpose)
    return (
        "dead-letter topics hold only the bad messages sent on purpose",
        ok,
        f"{len(letters)} dead letters, {len(on_purpose)} sent on purpose; unexpected by topic and error: "
        f"{dict(by_error) or 'none'}" + "".join(f"; {x.error}: {x.reason[:200]}" for x in unexpected[:3]),
    )


BAD_MESSAGES = {
    # (base topic, key, value): a value that is not JSON, and one that is JSON but no event.
    ("audience-membership", b"chaos-bad-membership", b"{not json"),
    ("segment-events", b"chaos-bad-event", b"[1, 2, 3]"),
}


async def send_bad_messages(settings: KafkaSettings) -> set[bytes]:
    """Messages whose own content is wrong, sent on purpose: they, and only they, must be dead-lettered."""
    producer = Producer(settings, "chaos")
    try:
        await ensure_topics(settings, [topic_name(settings.topic_prefix, base) for base, _, _ in BAD_MESSAGES])
        await producer.send(
            [
                OutgoingMessage(topic=topic_name(settings.topic_prefix, base), key=key, value=value)
                for base, key, value in BAD_MESSAGES
            ]
        )
    finally:
        await producer.stop()
    return {key for _, key, _ in BAD_MESSAGES}


async def verify_ledgers(
    checks: list[Check], pool: asyncpg.Pool, prefix: str, delivered: Iterable[str], on_purpose: set[bytes]
) -> None:
    settings = KafkaSettings(topic_prefix=prefix)
    checks.append(await applied_once(pool, await sent_batches(settings)))
    checks.append(await processed_once(pool, delivered))
    checks.append(await dead_letters_only(settings, on_purpose))
    open_runs = await pool.fetch(
        "SELECT run_id, direction, state FROM run WHERE state NOT IN ('succeeded', 'partial', 'failed', 'blocked')"
    )
    checks.append(
        (
            "no run left open",
            not open_runs,
            f"{len(open_runs)} open" + "".join(f"; {r['direction']} {r['run_id']} {r['state']}" for r in open_runs[:5]),
        )
    )
