"""ingest's emit step: the membership batches a batch of outbound files becomes, whichever way its lines are
read (whole blocks of ordinary lines at once, or line by line), are the batches of a plain line-by-line walk.

Batch boundaries must depend on the file's content only: a restart in the middle re-emits the same batches,
which reconcile recognises by (run, seq)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.audiences import ImportAudience
from services.ingest.files import FileImporter
from services.ingest.outbound_batches import group_names, ready_parts
from shared.dropzone.file import FileDropZone
from shared.formats.outbound import OutboundRow
from shared.kafka import OutgoingMessage
from shared.messages import AudienceMembership
from tests.helpers import deliver_outbound

# Segment 1 feeds audience A, segment 2 feeds A and B, segment 3 feeds nothing.
AUDIENCES = {
    1: [ImportAudience("A", 1, "web", "ecid", 1, ())],
    2: [ImportAudience("A", 1, "web", "ecid", 1, ()), ImportAudience("B", 2, "web", "ecid", 1, ())],
}


class _Directory:
    async def lookup(self, segment: str) -> list[ImportAudience]:
        return list(AUDIENCES.get(int(segment), []))


class _Producer:
    def __init__(self) -> None:
        self.sent: list[AudienceMembership] = []

    async def send(self, messages: Sequence[OutgoingMessage]) -> None:
        self.sent.extend(AudienceMembership.model_validate_json(m.value) for m in messages)


class _Status:
    async def report(self, *_args: Any, **_kwargs: Any) -> None:
        return None


class _SmallReads(FileDropZone):
    """Reads in pieces of a given size: lines cut between pieces, several blocks per part."""

    def __init__(self, root: Path, piece: int) -> None:
        super().__init__(root)
        self.piece = piece

    async def read(self, name: str) -> AsyncGenerator[bytes, None]:
        data = b"".join([chunk async for chunk in super().read(name)])
        for start in range(0, len(data), self.piece):
            yield data[start : start + self.piece]


def walk(rows: list[OutboundRow], mode: str, batch_size: int) -> dict[str, list[tuple[list[str], list[str]]]]:
    """The reference: each line, each of its segments, each audience, one ID at a time."""
    runs: dict[str, list[tuple[list[str], list[str]]]] = {}
    for user_id, segments, removed in rows:
        for ids, is_add in ((segments, True), (removed, False)):
            for segment in ids:
                if mode == "full" and not is_add:
                    continue
                for audience in AUDIENCES.get(segment, []):
                    batches = runs.setdefault(audience.audience_id, [([], [])])
                    if len(batches[-1][0]) + len(batches[-1][1]) >= batch_size:
                        batches.append(([], []))
                    batches[-1][0 if is_add else 1].append(user_id)
    return runs


def emitted(sent: list[AudienceMembership]) -> dict[str, list[tuple[list[str], list[str]]]]:
    runs: dict[str, list[tuple[list[str], list[str]]]] = {}
    for message in sent:
        batches = runs.setdefault(message.audience_id, [])
        assert message.seq == len(batches)
        batches.append((list(message.adds), list(message.removes)))
    return runs


def emit(tmp: Path, rows: list[OutboundRow], mode: str, batch_size: int, piece: int) -> list[AudienceMembership]:
    zone_dir = tmp / "import"
    zone_dir.mkdir(parents=True)
    deliver_outbound(zone_dir, "full" if mode == "full" else "iter", rows, 1_700_000_000_000)
    producer = _Producer()

    async def allowed(_audience: ImportAudience) -> str | None:
        return None

    importer = FileImporter(
        zone=_SmallReads(zone_dir, piece),
        pool=None,  # type: ignore[arg-type]  # emitting does not touch Postgres
        producer=producer,  # type: ignore[arg-type]
        membership_topic="audience-membership",
        directory=_Directory(),  # type: ignore[arg-type]
        governance=allowed,
        status=_Status(),  # type: ignore[arg-type]
        batch_size=batch_size,
    )

    async def run() -> None:
        batches, _bad = group_names(await importer._zone.list())
        [batch] = batches.values()
        ready = await ready_parts(importer._zone, batch, parts_timeout_s=600)
        assert ready is not None
        await importer._emit(batch, ready[1])

    asyncio.run(run())
    return producer.sent


ECIDS = st.integers(10**37, 10**38 - 1).map(str)


@st.composite
def lines(draw: st.DrawFn) -> list[OutboundRow]:
    # Lines joining a run twice (segments 1 and 2 both feed A) make a block go line by line: half the
    # examples keep to segments that never do, so that removals and plain blocks are exercised on their own.
    choices = draw(st.sampled_from([[1, 2, 3], [1, 3], [2, 3]]))
    segments = st.lists(st.sampled_from(choices), max_size=3, unique=len(choices) < 3)
    rows = st.tuples(ECIDS, segments, segments).filter(lambda r: bool(r[1] or r[2]))
    return draw(st.lists(rows, min_size=100, max_size=400))


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines(),
    st.sampled_from(["full", "delta"]),
    st.integers(1, 40),
    st.sampled_from([4_096, 5_000, 9_999, 1 << 20]),
    st.booleans(),
)
def test_batches_are_those_of_a_line_by_line_walk(
    tmp_path_factory: Any, rows: list[OutboundRow], mode: str, batch_size: int, piece: int, adds_only: bool
) -> None:
    if adds_only:  # whole blocks without removals: the path that skips the per-line walk
        rows = [(u, s or [1], []) for u, s, _r in rows]
    sent = emit(tmp_path_factory.mktemp("emit"), rows, mode, batch_size, piece)
    assert emitted(sent) == walk(rows, mode, batch_size)
    last = [m for m in sent if m.last]
    assert sorted(m.audience_id for m in last) == sorted(walk(rows, mode, batch_size))


def test_removals_in_a_delta_keep_their_place(tmp_path: Path) -> None:
    rows: list[OutboundRow] = [(str(10**37 + i), [1], [2] if i % 3 == 0 else []) for i in range(300)]
    sent = emit(tmp_path, rows, "delta", 50, 1 << 20)
    assert emitted(sent) == walk(rows, "delta", 50)
    assert sum(len(m.removes) for m in sent) == 200  # A and B each lose every third user


def test_ordinary_lines_of_one_segment(tmp_path: Path) -> None:
    rows: list[OutboundRow] = [(str(10**37 + i), [1 + i % 2], []) for i in range(5_000)]
    sent = emit(tmp_path, rows, "full", 700, 1 << 20)
    runs = emitted(sent)
    assert runs == walk(rows, "full", 700)
    assert [len(a) for a, _ in runs["B"]] == [700, 700, 700, 400]
