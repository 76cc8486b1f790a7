"""One behavioural suite, run against every drop-zone implementation (file:// and s3:// on moto)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.dropzone import (
    AREAS,
    REASON_SUFFIX,
    TEMP_PREFIX,
    DropZone,
    DropZoneRejected,
    DropZoneUnavailable,
    FileDropZone,
    ObjectNotFound,
    S3DropZone,
    UnsafeName,
    open_dropzone,
)
from shared.dropzone.base import CHUNK_SIZE
from shared.errors import TransientError

# Fixtures must be imported to be visible here; tests naming them as parameters need "noqa: F811".
from tests.fixtures.s3 import MotoS3, free_port, moto_server, s3_dropzone  # noqa: F401

MiB = 1024 * 1024
# Above the 5 MiB part size moto_server configures, so S3 writes of this size go through multipart.
BIG = 12 * MiB
SECRET = "never-show-this-secret"

UNSAFE_NAMES = [
    "../x",
    "a/../../x",
    "/etc/passwd",
    "a//b",
    "a\\b",
    "a\x00b",
    "a\nb",
    "",
    "a/./b",
    "a/",
    "x" * 1025,
]


@dataclass
class Harness:
    """A zone plus backend-specific ways to look behind it, so the tests themselves stay shared."""

    backend: str
    zone: DropZone
    in_progress: Callable[[], Awaitable[int]]
    """How many writes are underway: temp files on disk, or open multipart uploads."""
    plant: Callable[[str, bytes], Awaitable[None]]
    """Store an object behind the zone's back, bypassing its name checks."""


def _file_harness(root: Path) -> Harness:
    def count_temps() -> int:
        return sum(1 for p in root.rglob("*") if p.name.startswith(TEMP_PREFIX))

    async def in_progress() -> int:
        return await asyncio.to_thread(count_temps)

    def plant_sync(name: str, data: bytes) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    async def plant(name: str, data: bytes) -> None:
        await asyncio.to_thread(plant_sync, name, data)

    return Harness("file", open_dropzone(root.as_uri()), in_progress, plant)


def _s3_harness(moto: MotoS3) -> Harness:
    prefix = f"t-{uuid.uuid4().hex}"

    async def in_progress() -> int:
        async with moto.client() as client:
            response = await client.list_multipart_uploads(Bucket=moto.bucket, Prefix=f"{prefix}/")
        return len(response.get("Uploads", []))

    async def plant(name: str, data: bytes) -> None:
        async with moto.client() as client:
            await client.put_object(Bucket=moto.bucket, Key=f"{prefix}/{name}", Body=data)

    zone = open_dropzone(f"s3://{moto.bucket}/{prefix}", s3=moto.options)
    return Harness("s3", zone, in_progress, plant)


@pytest.fixture(params=["file", "s3"])
def harness_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Harness]:
    if request.param == "file":
        return lambda: _file_harness(tmp_path / "zone")
    # Resolved here, not as a parameter, so file-only runs never start the S3 server.
    moto: MotoS3 = request.getfixturevalue("moto_server")
    return lambda: _s3_harness(moto)


@pytest.fixture
async def h(harness_factory: Callable[[], Harness]) -> AsyncIterator[Harness]:
    harness = harness_factory()
    async with harness.zone:
        yield harness


@pytest.fixture
def broken_zone(request: pytest.FixtureRequest, tmp_path: Path) -> DropZone:
    """A zone that cannot work: file root below a regular file (root ignores chmod), S3 port closed."""
    backend: str = request.param
    if backend == "file":
        blocker = tmp_path / "not-a-directory"
        blocker.write_bytes(b"")
        return open_dropzone((blocker / "zone").as_uri())
    return S3DropZone(
        "bucket",
        "prefix",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region="us-east-1",
        access_key_id="AKIATESTING",
        secret_access_key=SECRET,
        max_attempts=1,
        connect_timeout=1.0,
    )


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


class Gate:
    """An iterable that yields ``head``, then waits until released before yielding ``tail``.

    ``paused`` is set once the writer has asked for the next chunk, i.e. has fully processed ``head``.
    """

    def __init__(self, head: bytes, tail: bytes, fail: BaseException | None = None) -> None:
        self.head, self.tail, self.fail = head, tail, fail
        self.paused = asyncio.Event()
        self.release = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        self.paused.set()
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        yield self.tail


async def _names(zone: DropZone, prefix: str = "") -> list[str]:
    return [info.name for info in await zone.list(prefix)]


# ---------------------------------------------------------------------------------------- round trip


async def test_small_round_trip(h: Harness) -> None:
    name = "partner/date=2024-05-01/ftp_dpm_478_1366545717.sync"
    info = await h.zone.write(name, b"user-1\td_sid=42\n")

    assert (info.name, info.size) == (name, 16)
    assert info.mtime.tzinfo is not None
    listed = await h.zone.list()
    assert [(i.name, i.size) for i in listed] == [(name, 16)]
    assert await h.zone.read_bytes(name) == b"user-1\td_sid=42\n"
    assert await h.zone.exists(name)
    assert await _names(h.zone, "partner/") == [name]
    assert await _names(h.zone, "partner/date=2024-05-01/ftp_") == [name]
    assert await _names(h.zone, "other/") == []

    await h.zone.write(name, b"replaced")
    assert await h.zone.read_bytes(name) == b"replaced"
    await h.zone.delete(name)
    assert not await h.zone.exists(name)
    assert await h.zone.list() == []


async def test_empty_object(h: Harness) -> None:
    info = await h.zone.write("empty", b"")
    assert info.size == 0
    assert await h.zone.read_bytes("empty") == b""


@pytest.mark.parametrize("as_stream", [True, False], ids=["stream", "bytes"])
async def test_large_object_is_streamed_in_bounded_chunks(h: Harness, as_stream: bool) -> None:
    data = os.urandom(BIG)
    source = _chunks(data, 256 * 1024) if as_stream else data

    info = await h.zone.write("big.bin", source)

    assert info.size == BIG
    sizes: list[int] = []
    received = bytearray()
    async for chunk in h.zone.read("big.bin"):
        sizes.append(len(chunk))
        received += chunk
    assert bytes(received) == data
    assert len(sizes) > 1
    assert max(sizes) <= CHUNK_SIZE
    assert await h.in_progress() == 0

    # Stopping early must release the file or connection at once (no ResourceWarning later).
    async with contextlib.aclosing(h.zone.read("big.bin")) as stream:
        async for chunk in stream:
            assert chunk == data[: len(chunk)]
            break


async def test_s3_large_write_really_uses_multipart(moto_server: MotoS3) -> None:  # noqa: F811
    async with moto_server.zone() as zone:
        await zone.write("big.bin", _chunks(os.urandom(BIG), MiB))
        async with moto_server.client() as client:
            head = await client.head_object(Bucket=zone.bucket, Key=zone.key("big.bin"))
    # A multipart object's ETag is "<md5 of part md5s>-<part count>"; 12 MiB in 5 MiB parts = 3.
    assert head["ETag"].strip('"').endswith("-3")


# ---------------------------------------------------------------------------------------- atomicity


async def test_object_is_invisible_until_the_write_completes(h: Harness) -> None:
    head, tail = os.urandom(6 * MiB), os.urandom(MiB)
    gate = Gate(head, tail)
    writing = asyncio.create_task(h.zone.write("inbox/slow.sync", gate))
    await asyncio.wait_for(gate.paused.wait(), timeout=10)

    # Mid-write, with data already stored somewhere (a temp file, or an uploaded part)...
    assert await h.in_progress() == 1
    # ...a reader sees nothing at all.
    assert await h.zone.list() == []
    assert await h.zone.list("inbox/") == []
    assert not await h.zone.exists("inbox/slow.sync")
    with pytest.raises(ObjectNotFound):
        await h.zone.read_bytes("inbox/slow.sync")

    gate.release.set()
    info = await asyncio.wait_for(writing, timeout=10)

    assert info.size == len(head) + len(tail)
    assert [(i.name, i.size) for i in await h.zone.list()] == [("inbox/slow.sync", info.size)]
    assert await h.zone.read_bytes("inbox/slow.sync") == head + tail
    assert await h.in_progress() == 0


async def test_failing_source_leaves_nothing_behind(h: Harness) -> None:
    await h.zone.write("inbox/kept.sync", b"previous version")
    gate = Gate(os.urandom(6 * MiB), b"never", fail=ValueError("producer failed"))
    gate.release.set()

    with pytest.raises(ValueError, match="producer failed"):
        await h.zone.write("inbox/new.sync", gate)
    gate2 = Gate(os.urandom(6 * MiB), b"never", fail=ValueError("producer failed again"))
    gate2.release.set()
    with pytest.raises(ValueError, match="producer failed again"):
        await h.zone.write("inbox/kept.sync", gate2)

    assert await _names(h.zone) == ["inbox/kept.sync"]
    assert await h.zone.read_bytes("inbox/kept.sync") == b"previous version"
    assert not await h.zone.exists("inbox/new.sync")
    assert await h.in_progress() == 0


async def test_cancelled_write_leaves_nothing_behind(h: Harness) -> None:
    gate = Gate(os.urandom(6 * MiB), b"tail")
    writing = asyncio.create_task(h.zone.write("inbox/cancelled.sync", gate))
    await asyncio.wait_for(gate.paused.wait(), timeout=10)

    writing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writing

    assert await h.zone.list() == []
    assert await h.in_progress() == 0


# ---------------------------------------------------------------------------------------- areas


async def test_move_to_processed_keeps_the_relative_path(h: Harness) -> None:
    name = "partner/date=2024-05-01/a.sync"
    await h.zone.write(name, b"data")

    moved = await h.zone.move(name, "processed")

    assert moved == f"processed/{name}"
    assert not await h.zone.exists(name)
    assert await h.zone.list() == []
    assert await _names(h.zone, "processed/") == [moved]
    assert await h.zone.read_bytes(moved) == b"data"


async def test_move_to_rejected_writes_the_reason_next_to_it(h: Harness) -> None:
    name = "partner/b.sync"
    await h.zone.write(name, b"data")

    moved = await h.zone.move(name, "rejected", reason="line 3: unknown trait id 99")

    assert moved == "rejected/partner/b.sync"
    assert await _names(h.zone, "rejected/") == [moved, moved + REASON_SUFFIX]
    assert await h.zone.read_bytes(moved + REASON_SUFFIX) == b"line 3: unknown trait id 99"
    assert await h.zone.read_bytes(moved) == b"data"
    assert await h.zone.list() == []


async def test_moving_a_missing_object_fails_without_side_effects(h: Harness) -> None:
    for area in AREAS:
        with pytest.raises(ObjectNotFound):
            await h.zone.move("nope.sync", area, reason="irrelevant")
    assert await h.zone.list("processed/") == []
    assert await h.zone.list("rejected/") == []


async def test_listing_hides_areas_and_in_progress_names(h: Harness) -> None:
    for name in ("new.sync", "inbox/new.sync", "processedfoo.sync", "processed/old.sync", "rejected/bad"):
        await h.zone.write(name, b"x")
    # Left behind by a crashed writer (file) or another tool (S3): never offered to readers.
    await h.plant(f"inbox/{TEMP_PREFIX}abandoned", b"partial")
    await h.plant(f"{TEMP_PREFIX}abandoned", b"partial")

    assert await _names(h.zone) == ["inbox/new.sync", "new.sync", "processedfoo.sync"]
    assert await _names(h.zone, "processed") == ["processedfoo.sync"]
    assert await _names(h.zone, "processed/") == ["processed/old.sync"]
    assert await _names(h.zone, "rejected/") == ["rejected/bad"]
    with pytest.raises(UnsafeName):
        await h.zone.write(f"inbox/{TEMP_PREFIX}mine", b"x")


# ---------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", UNSAFE_NAMES, ids=repr)
async def test_unsafe_names_are_rejected_before_any_io(h: Harness, name: str) -> None:
    with pytest.raises(UnsafeName):
        await h.zone.write(name, b"x")
    with pytest.raises(UnsafeName):
        await h.zone.read_bytes(name)
    with pytest.raises(UnsafeName):
        await h.zone.exists(name)
    with pytest.raises(UnsafeName):
        await h.zone.delete(name)
    with pytest.raises(UnsafeName):
        await h.zone.move(name, "rejected", reason="r")
    assert await h.zone.list() == []


@pytest.mark.parametrize("prefix", ["../", "/abs", "a//", "a\\"])
async def test_unsafe_list_prefixes_are_rejected(h: Harness, prefix: str) -> None:
    with pytest.raises(UnsafeName):
        await h.zone.list(prefix)


async def test_missing_object(h: Harness) -> None:
    with pytest.raises(ObjectNotFound) as caught:
        await h.zone.read_bytes("missing/file.sync")
    assert caught.value.context["name"] == "missing/file.sync"
    assert caught.value.context["url"] == h.zone.url
    with pytest.raises(ObjectNotFound):
        async for _ in h.zone.read("missing/file.sync"):
            pass
    with pytest.raises(ObjectNotFound):
        await h.zone.delete("missing/file.sync")
    await h.zone.delete("missing/file.sync", missing_ok=True)
    assert not await h.zone.exists("missing/file.sync")


@pytest.mark.parametrize("broken_zone", ["file", "s3"], indirect=True)
async def test_unreachable_zone_is_a_transient_error(broken_zone: DropZone) -> None:
    async with broken_zone as zone:
        attempts: list[Callable[[], Awaitable[object]]] = [
            lambda: zone.list(),
            lambda: zone.write("a.sync", b"x"),
            lambda: zone.read_bytes("a.sync"),
            lambda: zone.exists("a.sync"),
        ]
        for attempt in attempts:
            with pytest.raises(DropZoneUnavailable) as caught:
                await attempt()
            error = caught.value
            assert isinstance(error, TransientError)
            assert error.context["url"] == zone.url
            assert SECRET not in str(error)
            assert SECRET not in repr(error.context)
        assert SECRET not in repr(zone)


async def test_file_zone_name_clash_is_permanent(tmp_path: Path) -> None:
    # S3 keys "a" and "a/b" coexist; a folder cannot be a file too, and retrying will not change that.
    async with FileDropZone(tmp_path / "zone") as zone:
        await zone.write("a", b"file")
        with pytest.raises(DropZoneRejected):
            await zone.write("a/b", b"x")
        await zone.write("c/d", b"x")
        with pytest.raises(DropZoneRejected):
            await zone.write("c", b"x")
        assert await _names(zone) == ["a", "c/d"]


async def test_s3_zone_is_confined_to_its_prefix(
    s3_dropzone: S3DropZone,  # noqa: F811
    moto_server: MotoS3,  # noqa: F811
) -> None:
    async with moto_server.client() as client:
        await client.put_object(Bucket=moto_server.bucket, Key="outside.sync", Body=b"x")
        await client.put_object(Bucket=moto_server.bucket, Key=s3_dropzone.key("a") + "b", Body=b"x")
    await s3_dropzone.write("inside.sync", b"y")

    # "<prefix>/ab" shares the string prefix "<prefix>/a" but is a sibling of the zone, not inside it.
    assert await _names(s3_dropzone) == ["ab", "inside.sync"]
    assert s3_dropzone.key("inside.sync").endswith("/inside.sync")
    assert not await s3_dropzone.exists("outside.sync")


@pytest.mark.parametrize(("acl", "public"), [("public-read", True), ("bucket-owner-full-control", False)])
async def test_s3_writes_and_moves_carry_the_configured_acl(
    moto_server: MotoS3,  # noqa: F811
    acl: str,
    public: bool,
) -> None:
    # bucket-owner-full-control (the default) is indistinguishable from private within one account,
    # so a visible canned ACL stands in to prove the ACL reaches every kind of write.
    async with moto_server.zone(acl=acl) as zone:
        await zone.write("small", b"x")
        await zone.write("big", _chunks(os.urandom(6 * MiB), MiB))
        await zone.write("moved", b"x")
        await zone.move("moved", "processed")
        async with moto_server.client() as client:
            for name in ("small", "big", "processed/moved"):
                grants = (await client.get_object_acl(Bucket=zone.bucket, Key=zone.key(name)))["Grants"]
                uris = {grant.get("Grantee", {}).get("URI") for grant in grants}
                assert ("http://acs.amazonaws.com/groups/global/AllUsers" in uris) is public, name
