"""Inflating a gzip part: off the event loop (in worker threads), a piece at a time, and bounded in total."""

from __future__ import annotations

import asyncio
import gzip
import threading
import zlib
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.outbound_batches import _LineCounter, inflated
from shared.formats import CorruptGzip, DecompressedTooLarge
from shared.formats.lines import GzipDecoder

CONTENT = b"".join(b"%038d\t5001\n" % i for i in range(60_000))  # ~2.6 MB: several 1 MiB pieces


async def _chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.fixture
def inflating_threads(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For every piece inflated: whether it was inflated on the event loop's (main) thread."""
    on_loop: list[bool] = []
    real = GzipDecoder.feed

    def feed(self: GzipDecoder, chunk: bytes) -> Iterator[bytes]:
        for piece in real(self, chunk):
            on_loop.append(threading.current_thread() is threading.main_thread())
            yield piece

    monkeypatch.setattr(GzipDecoder, "feed", feed)
    return on_loop


async def test_a_part_is_inflated_off_the_event_loop(inflating_threads: list[bool]) -> None:
    out = b"".join([piece async for piece in inflated(_chunks(gzip.compress(CONTENT)))])
    assert out == CONTENT
    assert len(inflating_threads) >= 3
    assert not any(inflating_threads)


async def test_verification_counts_lines_off_the_event_loop(inflating_threads: list[bool]) -> None:
    counter = _LineCounter(GzipDecoder())
    async for chunk in _chunks(gzip.compress(CONTENT)):
        await asyncio.to_thread(counter.feed, chunk)
    assert await asyncio.to_thread(counter.close) == 60_000
    assert inflating_threads
    assert not any(inflating_threads)


async def test_a_bomb_stops_at_the_bound() -> None:
    encoder = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(encoder.compress(b"\n" * 1024 * 1024) for _ in range(64)) + encoder.flush()
    seen: list[int] = []

    async def drain() -> None:
        async for piece in inflated(_chunks(bomb), max_total_bytes=4 * 1024 * 1024):
            seen.append(len(piece))

    with pytest.raises(DecompressedTooLarge, match="inflates to more than 4194304 bytes"):
        await drain()
    assert sum(seen) <= 4 * 1024 * 1024


async def test_a_truncated_part_is_corrupt() -> None:
    async def drain() -> None:
        async for _ in inflated(_chunks(gzip.compress(CONTENT)[:-20])):
            pass

    with pytest.raises(CorruptGzip):
        await drain()


@given(st.binary(max_size=5000), st.integers(min_value=1, max_value=6000))
def test_line_counts_match_the_content(content: bytes, bound: int) -> None:
    counter = _LineCounter(GzipDecoder(max_total_bytes=bound))
    stored = gzip.compress(content)
    try:
        for i in range(0, len(stored), 97):
            counter.feed(stored[i : i + 97])
        lines = counter.close()
    except DecompressedTooLarge:
        assert len(content) > bound
        return
    assert len(content) <= bound
    assert lines == content.count(b"\n") + (1 if content and not content.endswith(b"\n") else 0)
