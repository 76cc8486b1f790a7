from __future__ import annotations

import contextlib
import gzip
import hashlib
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import PermanentError
from shared.formats import CorruptGzip, FormatError, InvalidRecord, lines, parts
from shared.formats.lines import GzipDecoder, Line, LineSplitter, decode_chunks
from shared.formats.parts import PartSummary, PartWriter, collect_parts

# No deadline nor speed health check: the suite also runs on loaded CI machines.
FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (any order, duplicates allowed: empty chunks are fed too)."""
    points = sorted({min(c, len(data)) for c in cuts})
    out, prev = [], 0
    for p in points:
        out.append(data[prev:p])
        prev = p
    out.append(data[prev:])
    return out


def split_all(data: bytes, max_line: int, cuts: list[int]) -> tuple[list[Line], int]:
    s = LineSplitter(max_line)
    out: list[Line] = []
    peak = 0
    for c in chunked(data, cuts):
        out.extend(s.feed(c))
        peak = max(peak, s.buffered)
    out.extend(s.close())
    return out, peak


def reference(data: bytes, max_line: int) -> list[Line]:
    if not data:
        return []
    pieces = data.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()
    out: list[Line] = []
    for i, p in enumerate(pieces, 1):
        if p.endswith(b"\r"):
            p = p[:-1]
        out.append((i, p if len(p) <= max_line else None))
    return out


def test_splits_lf_crlf_and_a_last_line_without_newline() -> None:
    lines, _ = split_all(b"a\r\nbb\n\nccc", 10, [1, 2, 3])
    assert lines == [(1, b"a"), (2, b"bb"), (3, b""), (4, b"ccc")]


def test_empty_stream_has_no_line_and_a_final_newline_adds_none() -> None:
    assert split_all(b"", 10, [])[0] == []
    assert split_all(b"x\n", 10, [])[0] == [(1, b"x")]
    assert split_all(b"\n", 10, [])[0] == [(1, b"")]


def test_bare_cr_is_not_a_line_break() -> None:
    assert split_all(b"a\rb\n", 10, [])[0] == [(1, b"a\rb")]


def test_over_long_line_is_reported_with_its_number_and_skipped() -> None:
    data = b"ok\n" + b"x" * 50 + b"\nafter\n"
    lines, peak = split_all(data, 10, list(range(0, len(data), 4)))
    assert lines == [(1, b"ok"), (2, None), (3, b"after")]
    assert peak <= 11


def test_line_exactly_at_the_limit_with_crlf_is_kept() -> None:
    data = b"x" * 10 + b"\r\n" + b"y" * 11 + b"\r\n"
    for cuts in ([], [10], [11], [12], [5, 21, 22]):
        assert split_all(data, 10, cuts)[0] == [(1, b"x" * 10), (2, None)]


def test_over_long_last_line_without_newline() -> None:
    assert split_all(b"a\n" + b"z" * 30, 10, [5, 17])[0] == [(1, b"a"), (2, None)]


def test_counters() -> None:
    s = LineSplitter(5)
    s.feed(b"ab\ncd")
    assert (s.line_count, s.bytes_fed, s.buffered) == (1, 5, 2)
    s.close()
    assert s.line_count == 2
    with pytest.raises(ValueError):
        LineSplitter(0)


@FAST
@given(
    st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\r\n", b"\r", b"xxxxxxxxxxxx", b""]), max_size=40).map(b"".join),
    st.integers(1, 12),
    st.lists(st.integers(0, 400), max_size=10),
)
def test_any_chunking_gives_the_reference_split(data: bytes, max_line: int, cuts: list[int]) -> None:
    lines, peak = split_all(data, max_line, cuts)
    assert lines == reference(data, max_line)
    assert peak <= max_line + 1


@FAST
@given(st.binary(max_size=300), st.integers(1, 64), st.lists(st.integers(0, 300), max_size=8))
def test_arbitrary_bytes(data: bytes, max_line: int, cuts: list[int]) -> None:
    assert split_all(data, max_line, cuts)[0] == reference(data, max_line)


# ------------------------------------------------------------------------------------------- gzip


def gunzip_all(chunks: list[bytes], piece: int = 1 << 20) -> bytes:
    d = GzipDecoder(piece)
    out: list[bytes] = []
    for c in chunks:
        out.extend(d.feed(c))
    out.extend(d.close())
    assert all(len(p) <= piece for p in out)
    return b"".join(out)


@FAST
@given(
    st.lists(st.binary(max_size=500), min_size=1, max_size=3),
    st.lists(st.integers(0, 2000), max_size=10),
    st.integers(1, 100),
)
def test_gzip_round_trip_multi_member_any_chunking(members: list[bytes], cuts: list[int], piece: int) -> None:
    stream = b"".join(gzip.compress(m, mtime=0) for m in members)
    assert gunzip_all(chunked(stream, cuts), piece) == b"".join(members)


def test_gzip_output_is_bounded_for_a_bomb() -> None:
    bomb = gzip.compress(b"\0" * 5_000_000)
    d = GzipDecoder(4096)
    total = 0
    for piece in d.feed(bomb):
        assert len(piece) <= 4096
        total += len(piece)
    for piece in d.close():
        total += len(piece)
    assert total == 5_000_000
    assert d.members == 1


def test_truncated_gzip_is_reported_at_close() -> None:
    data = gzip.compress(b"hello world\n" * 100)
    for cut in (1, 5, 15, len(data) - 1):
        with pytest.raises(CorruptGzip) as e:
            gunzip_all([data[:cut]])
        assert isinstance(e.value, FormatError)
        assert isinstance(e.value, PermanentError)


def test_garbage_and_trailing_garbage_are_corrupt() -> None:
    with pytest.raises(CorruptGzip):
        gunzip_all([b"this is not gzip at all"])
    with pytest.raises(CorruptGzip):
        gunzip_all([gzip.compress(b"ok") + b"garbage!!"])


def test_empty_gzip_input_decodes_to_nothing() -> None:
    assert gunzip_all([]) == b""
    assert gunzip_all([b""]) == b""


@FAST
@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=5))
def test_arbitrary_bytes_decode_or_raise_corrupt_gzip(data: bytes, cuts: list[int]) -> None:
    with contextlib.suppress(CorruptGzip):
        gunzip_all(chunked(data, cuts))


def test_decode_chunks() -> None:
    assert b"".join(decode_chunks([b"ab", b"c"], gzip=False)) == b"abc"
    z = gzip.compress(b"abc")
    assert b"".join(decode_chunks([z[:4], z[4:]], gzip=True)) == b"abc"


# ---------------------------------------------------------------------------------------- parts


def names(n: int | None) -> str:
    return "f" if n is None else f"f.{n}"


def write_parts(lines: list[bytes], *, gz: bool, limit: int, chunk: int = 7) -> list[tuple[PartSummary, bytes]]:
    w = PartWriter(names, gzip=gz, max_part_bytes=limit, chunk_bytes=chunk)
    events = list(w.write(lines))
    assert all(isinstance(e, bytes) for e in events if not isinstance(e, PartSummary))
    parts = [(p.summary, p.data) for p in collect_parts(events)]
    assert [s for s, _ in parts] == w.parts
    assert w.done
    return parts


@FAST
@given(
    st.lists(st.binary(max_size=15).map(lambda b: b.replace(b"\n", b"") + b"\n"), max_size=30),
    st.integers(16, 80),
    st.booleans(),
)
def test_parts_respect_the_limit_and_keep_every_line(lines: list[bytes], limit: int, gz: bool) -> None:
    parts = write_parts(lines, gz=gz, limit=limit)
    if not lines:
        assert parts == []
        return
    contents = [zlib.decompress(d, 31) if gz else d for _, d in parts]
    assert b"".join(contents) == b"".join(lines)
    for (s, d), content in zip(parts, contents, strict=True):
        assert s.content_bytes == len(content) <= limit
        assert s.byte_size == len(d)
        assert s.md5 == hashlib.md5(d).hexdigest()
        assert s.line_count == content.count(b"\n")
    # A part ends only when the next line would not fit.
    for (_, _), content, nxt in zip(parts, contents, contents[1:], strict=False):
        first_next = nxt.split(b"\n", 1)[0] + b"\n"
        assert len(content) + len(first_next) > limit
    expected = ["f"] if len(parts) == 1 else [f"f.{i}" for i in range(1, len(parts) + 1)]
    assert [s.name for s, _ in parts] == expected
    assert [s.number for s, _ in parts] == list(range(1, len(parts) + 1))


def test_line_longer_than_the_part_limit_is_refused() -> None:
    w = PartWriter(names, gzip=False, max_part_bytes=5)
    with pytest.raises(InvalidRecord):
        list(w.write([b"abc\n", b"abcdefgh\n"]))


def test_a_part_writer_writes_one_run() -> None:
    w = PartWriter(names, gzip=False, max_part_bytes=5)
    list(w.write([b"a\n"]))
    with pytest.raises(RuntimeError):
        list(w.write([b"a\n"]))


def test_gzip_parts_are_deterministic() -> None:
    a = write_parts([b"hello\n"] * 10, gz=True, limit=1000)
    b = write_parts([b"hello\n"] * 10, gz=True, limit=1000)
    assert a == b


def test_the_part_writer_stays_importable_from_lines() -> None:
    for name in ("DEFAULT_CHUNK_BYTES", "Part", "PartEvent", "PartSummary", "PartWriter", "collect_parts"):
        assert getattr(lines, name) is getattr(parts, name)
