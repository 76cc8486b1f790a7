"""Which names of the import zone ingest leaves alone, and when a misnamed file has settled (issue 14, part 4)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.arrivals import PARTIAL_SUFFIXES, QuietPeriod, left_alone, split_arrivals
from shared.dropzone import ObjectInfo
from shared.dropzone.base import TEMP_PREFIX
from shared.formats.outbound.names import outbound_name

NAME_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters="/\\")
SEGMENT = st.text(NAME_CHARS, min_size=1, max_size=20).filter(lambda s: s not in (".", ".."))
NAMES = st.lists(SEGMENT, min_size=1, max_size=3).map("/".join)

BATCH_NAMES = st.builds(
    lambda sync, dest, dpid, mode, ts, part, gz, alias: outbound_name(
        sync, dest, dpid, mode, ts, part=part, gzip=gz, pid_alias=alias
    ),
    st.sampled_from(["ftp", "s3", "S3", "http"]),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.sampled_from(["iter", "full"]),
    st.integers(10**12, 10**13 - 1),
    st.none() | st.integers(1, 999),
    st.booleans(),
    st.none() | st.from_regex(r"[A-Za-z0-9-]{1,12}", fullmatch=True),
)


@pytest.mark.parametrize(
    "name",
    [
        ".s3_7001_1001_full_1700000000000.sync",  # an SFTP client's hidden upload name
        "s3_7001_1001_full_1700000000000.sync.tmp",
        "s3_7001_1001_full_1700000000000.sync.part",
        "s3_7001_1001_full_1700000000000.sync.filepart",  # WinSCP
        "s3_7001_1001_full_1700000000000.sync.partial",
        "s3_7001_1001_full_1700000000000.info~",
        "S3_7001_1001_FULL_1700000000000.SYNC.TMP",
        f"{TEMP_PREFIX}abc",  # the bridge's own
        "incoming/.staging/s3_7001_1001_full_1700000000000.sync",  # inside a hidden folder
        ".DS_Store",
    ],
)
def test_hidden_and_partial_upload_names_are_left_alone(name: str) -> None:
    assert left_alone(name)


@pytest.mark.parametrize(
    "name",
    [
        "s3_7001_1001_full_1700000000000.sync",
        "s3_7001_1001_full_1700000000000.info",
        "sub/s3_7001_1001_full_1700000000000001.sync.gz",
        "report.csv",  # breaks the grammar: considered, and rejected once it settles
        "tmp_7001.sync",
        "a.partition",
    ],
)
def test_other_names_are_considered(name: str) -> None:
    assert not left_alone(name)


@given(BATCH_NAMES)
def test_the_platforms_names_are_never_left_alone(name: str) -> None:
    assert not left_alone(name)
    assert not left_alone("folder/" + name)


@given(NAMES, st.sampled_from(PARTIAL_SUFFIXES), st.booleans())
def test_a_partial_suffix_or_a_leading_dot_is_always_left_alone(name: str, suffix: str, upper: bool) -> None:
    assert left_alone(name + (suffix.upper() if upper else suffix))
    head, _, base = name.rpartition("/")
    assert left_alone(f"{head}/.{base}" if head else f".{base}")


@given(NAMES)
def test_left_alone_is_exactly_the_rule(name: str) -> None:
    hidden = any(segment.startswith(".") for segment in name.split("/"))
    partial = any(name.lower().endswith(s) for s in PARTIAL_SUFFIXES)
    assert left_alone(name) == (hidden or partial)


def _obj(name: str, size: int = 10, mtime: float = 1_700_000_000.0) -> ObjectInfo:
    return ObjectInfo(name, size, datetime.fromtimestamp(mtime, UTC))


def test_split_keeps_the_listing_order() -> None:
    listing = [_obj("a.sync"), _obj(".b"), _obj("c.tmp"), _obj("d.csv")]
    considered, alone = split_arrivals(listing)
    assert [o.name for o in considered] == ["a.sync", "d.csv"]
    assert [o.name for o in alone] == [".b", "c.tmp"]


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_growing_file_never_settles_and_a_still_one_does_after_the_period() -> None:
    clock = _Clock()
    quiet = QuietPeriod(5.0, clock=clock)
    for size in range(1, 20):  # grows every second for 19 s: never quiet for 5 s
        assert quiet.settled([_obj("report.csv", size)]) == set()
        clock.now += 1
    clock.now += 3.9  # 4.9 s since it last grew
    assert quiet.settled([_obj("report.csv", 19)]) == set()
    clock.now += 0.1
    assert quiet.settled([_obj("report.csv", 19)]) == {"report.csv"}


def test_a_new_mtime_restarts_the_wait_and_a_file_that_left_is_forgotten() -> None:
    clock = _Clock()
    quiet = QuietPeriod(2.0, clock=clock)
    quiet.settled([_obj("x.csv", mtime=1.0)])
    clock.now += 3
    assert quiet.settled([_obj("x.csv", mtime=2.0)]) == set()  # touched: same size, new mtime
    clock.now += 3
    assert quiet.settled([]) == set()  # gone (renamed to its real name, say)
    assert quiet.settled([_obj("x.csv", mtime=2.0)]) == set()  # back: watched from scratch


def test_a_zero_period_settles_at_first_sight() -> None:
    assert QuietPeriod(0.0, clock=_Clock()).settled([_obj("x.csv")]) == {"x.csv"}


def test_a_negative_period_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        QuietPeriod(-1.0)


# Steps of a file's life between scans: (seconds since the previous scan, whether it changed meanwhile).
STEPS = st.lists(st.tuples(st.floats(0, 10, allow_nan=False), st.booleans()), min_size=1, max_size=30)


@given(STEPS, st.floats(0, 8, allow_nan=False))
def test_settled_exactly_when_unchanged_for_the_period_since_first_seen_or_last_change(
    steps: list[tuple[float, bool]], period: float
) -> None:
    clock = _Clock()
    quiet = QuietPeriod(period, clock=clock)
    size = 0
    since = clock.now
    for k, (elapsed, changed) in enumerate(steps):
        clock.now += elapsed
        if k == 0 or changed:  # first seen, or changed since the previous scan
            size += k > 0
            since = clock.now
        settled = quiet.settled([_obj("f.csv", size)])
        assert ("f.csv" in settled) == (clock.now - since >= period)
