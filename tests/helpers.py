"""Small helpers for tests: wait for a condition (never a fixed sleep), read a topic, build messages."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from shared.formats.outbound import OutboundFileName, OutboundRow, OutboundWriter
from shared.messages import SegmentEvent

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    until: Callable[[T], bool],
    timeout: float = 30.0,
    interval: float = 0.1,
) -> T:
    """Call ``probe`` until ``until(result)`` holds; fail with the last result after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if until(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout}s; last value: {result!r}")
        await asyncio.sleep(interval)


async def waiting_for_a_lock(pool: asyncpg.Pool, pid: int, timeout: float = 10.0) -> None:
    """Wait until the backend ``pid`` is waiting for a lock (a statement blocked by another transaction)."""
    await eventually(
        lambda: pool.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", pid),
        until=lambda wait: wait == "Lock",
        timeout=timeout,
    )


async def committed_offsets(bootstrap: str, group: str) -> dict[int, int]:
    """partition -> committed offset of ``group`` (empty when nothing was committed)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def _from_the_start(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    """A started consumer of every partition of ``topic`` from its start, in no group (commits nothing)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    return consumer


async def read_topic(
    bootstrap: str, topic: str, *, expect: int, timeout: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``expect`` records from the start of ``topic`` (no group, nothing committed)."""
    consumer = await _from_the_start(bootstrap, topic)
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


async def read_all(bootstrap: str, topic: str, *, timeout: float = 30.0) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record ``topic`` holds now: from the start up to the end offsets taken first (no group, nothing
    committed). Unlike ``read_topic(..., expect=<more than there is>)`` it returns as soon as it is at the end
    instead of waiting out a timeout, so it makes a quick probe for ``eventually``."""
    consumer = await _from_the_start(bootstrap, topic)
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout
        while not consumer.assignment():  # without a group, every partition once the metadata is in
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic} has no partitions after {timeout}s")
            await asyncio.sleep(0.05)
        ends = await consumer.end_offsets(list(consumer.assignment()))
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: not at the end offsets {ends} after {timeout}s")
            for part in (await consumer.getmany(*ends, timeout_ms=200)).values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


def segment_event(i: int, *, segment: str = "seg-1", op: Literal["add", "remove"] = "add") -> SegmentEvent:
    return SegmentEvent(
        event_id=f"ev-{i}-{uuid.uuid4().hex[:6]}",
        segment_id=segment,
        id_type="ecid",
        data_source="visitors",
        id=f"{i:038d}",
        op=op,
        occurred_at=datetime.now(UTC),
    )


async def delete_topics_with_prefix(bootstrap: str, prefix: str) -> None:
    """Best effort: a test's topics go with it. A broker keeps files open for every partition it holds,
    and a working copy's broker that kept every test's topics ran out of file descriptors."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await asyncio.wait_for(admin.start(), 10)
        names = [t for t in await asyncio.wait_for(admin.list_topics(), 10) if t.startswith(prefix)]
        if names:
            await asyncio.wait_for(admin.delete_topics(names), 30)
    except (KafkaError, OSError, TimeoutError):
        pass
    finally:
        with contextlib.suppress(KafkaError, OSError, TimeoutError):
            await asyncio.wait_for(admin.close(), 10)


async def drop_database(admin_dsn: str, name: str, *, timeout: float = 60.0) -> None:
    """Drop a scratch database, also while autovacuum works in it.

    ``DROP DATABASE ... WITH (FORCE)`` refuses outright when one of the sessions is autovacuum's (a
    superuser's process, which a non-superuser may not end). So: end this role's own leftover sessions, then
    a plain DROP, which stops autovacuum itself; a session still closing is waited for."""
    admin = await asyncpg.connect(admin_dsn)
    try:
        deadline = time.monotonic() + timeout
        while True:
            await admin.execute(
                """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                    WHERE datname = $1 AND usename = current_user AND pid <> pg_backend_pid()""",
                name,
            )
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
                return
            except asyncpg.ObjectInUseError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await admin.close()


def deliver_outbound(
    zone: Path,
    mode: Literal["full", "iter"],
    rows: Sequence[OutboundRow],
    ts: int,
    *,
    max_part_bytes: int = 256 << 10,
    master_dpid: int = 1001,
    destination_id: int = 7001,
    gzip: bool = False,
) -> OutboundFileName:
    """Deliver a batch of the platform's outbound files into an import zone as the platform does: each file
    written aside (``<zone>/../staging``) and renamed in, parts first, the ``.info`` last. The master DPID
    is the data source whose IDs the rows hold (1001: the fixtures' ``visitors``, 1002: ``hashed-emails``)."""
    batch = OutboundFileName("s3", destination_id, master_dpid, mode, ts, gzip=gzip)
    writer = OutboundWriter(batch, max_part_bytes=max_part_bytes)
    staging = zone.parent / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    chunks: list[bytes] = []
    for event in writer.write(rows):
        if isinstance(event, bytes):
            chunks.append(event)
        else:
            (staging / event.name).write_bytes(b"".join(chunks))
            os.replace(staging / event.name, zone / event.name)
            chunks = []
    (staging / batch.info_name).write_bytes(writer.info().to_json())
    os.replace(staging / batch.info_name, zone / batch.info_name)
    return batch


def open_files_under(folder: Path) -> list[str]:
    """This process's open files in ``folder`` (an unlinked or ``O_TMPFILE`` one reads as
    ``<folder>/#<inode> (deleted)``): what a test checks to see that files were closed, not just unnamed."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # an fd closed between the listing and the look
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(f"{folder}/"):
                found.append(target)
    return found


def kafka_cluster_id() -> str:
    """A random KRaft cluster id as Kafka's own ``Uuid.randomUuid`` makes it: 16 bytes, URL-safe base64, and
    never starting with ``-``, which StorageTool would read as an option (``format -t -SRF…`` fails: 1 id in 64)."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate
