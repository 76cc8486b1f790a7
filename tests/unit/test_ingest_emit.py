"""ingest's emit step: the membership batches a batch of outbound files becomes, whichever way its lines are
read (whole blocks of ordinary lines at once, or line by line), are the batches of a plain line-by-line walk.

Batch boundaries must depend on the file's content only: a restart in the middle re-emits the same batches,
which reconcile recognises by (run, seq). A file feeds only the audiences of its data source (its master
DPID) and, for an audience naming a destination, of that destination (issue 14, part 1)."""

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

VISITORS_DPID, EMAILS_DPID = 1001, 1002
# Segment 1 feeds audience A, segment 2 feeds A and B, segment 3 feeds nothing: for the ECID files
# (DPID 1001). The same segments also feed lists of hashed e-mails (E, DPID 1002), and a list that takes
# only the files of destination 7002 (D); ECID files come from destination 7001.
_A = ImportAudience("A", 1, "web", "ecid", VISITORS_DPID, ())
_B = ImportAudience("B", 2, "web", "ecid", VISITORS_DPID, ())
_E = ImportAudience("E", 1, "emails", "declared", EMAILS_DPID, ())
_D = ImportAudience("D", 2, "web", "ecid", VISITORS_DPID, (), platform_destination_id=7002)
AUDIENCES = {1: [_A, _E], 2: [_A, _E, _B, _D]}


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


def walk(
    rows: list[OutboundRow], mode: str, batch_size: int, dpid: int = VISITORS_DPID
) -> dict[str, list[tuple[list[str], list[str]]]]:
    """The reference: each line, each of its segments, each audience of the file's data source (and
    destination 7001), one ID at a time."""
    runs: dict[str, list[tuple[list[str], list[str]]]] = {}
    for user_id, segments, removed in rows:
        for ids, is_add in ((segments, True), (removed, False)):
            for segment in ids:
                if mode == "full" and not is_add:
                    continue
                for audience in AUDIENCES.get(segment, []):
                    if audience.dpid != dpid or audience.platform_destination_id not in (None, 7001):
                        continue
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


def emit(
    tmp: Path,
    rows: list[OutboundRow],
    mode: str,
    batch_size: int,
    piece: int,
    *,
    dpid: int = VISITORS_DPID,
    destination: int = 7001,
) -> list[AudienceMembership]:
    zone_dir = tmp / "import"
    zone_dir.mkdir(parents=True)
    deliver_outbound(
        zone_dir,
        "full" if mode == "full" else "iter",
        rows,
        1_700_000_000_000,
        master_dpid=dpid,
        destination_id=destination,
    )
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


def test_a_file_feeds_only_the_audiences_of_its_data_source(tmp_path: Path) -> None:
    """One segment, one list per data source: the ECID file feeds the ECID lists, the e-mail file the e-mail
    list, never the other way round (an ECID file was a full snapshot of nobody for the e-mail list)."""
    rows: list[OutboundRow] = [(str(10**37 + i), [1, 2], []) for i in range(50)]
    ecids = emit(tmp_path / "ecid", rows, "full", 1000, 1 << 20)
    assert {m.audience_id for m in ecids} == {"A", "B"}
    assert {m.data_source for m in ecids} == {"web"}
    emails: list[OutboundRow] = [(f"{i:064x}", [1, 2], []) for i in range(50)]
    sent = emit(tmp_path / "email", emails, "full", 1000, 1 << 20, dpid=EMAILS_DPID)
    assert {m.audience_id for m in sent} == {"E"}
    assert emitted(sent) == walk(emails, "full", 1000, EMAILS_DPID)
    assert set(sent[0].adds) == {u for u, _s, _r in emails}


def test_an_audience_naming_a_destination_takes_only_that_destinations_files(tmp_path: Path) -> None:
    rows: list[OutboundRow] = [(str(10**37 + i), [2], []) for i in range(20)]
    assert {m.audience_id for m in emit(tmp_path / "d7001", rows, "delta", 100, 1 << 20)} == {"A", "B"}
    from_7002 = emit(tmp_path / "d7002", rows, "delta", 100, 1 << 20, destination=7002)
    assert {m.audience_id for m in from_7002} == {"A", "B", "D"}
