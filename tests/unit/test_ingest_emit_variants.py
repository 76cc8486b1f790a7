"""ingest's emit step on every documented variant of the platform's files (issue 14, part 2): a batch in two-
space, CRLF or mixed lines, with a byte order mark, header rows and blank lines, a JavaScript-style ``.info``,
or names of a destination's template, becomes exactly the membership batches of its strict form, whichever
way its lines are read (whole blocks, or line by line in small pieces)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.audiences import ImportAudience
from services.ingest.files import FileImporter
from services.ingest.outbound_batches import group_names, ready_parts
from shared.formats.outbound import (
    LineLayout,
    NameTemplate,
    OutboundFileName,
    OutboundNames,
    OutboundRow,
    OutboundWriter,
)
from shared.formats.parts import collect_parts
from shared.messages import AudienceMembership
from tests.unit.test_ingest_emit import ECIDS, _Directory, _Producer, _SmallReads, _Status, emitted, walk

TEMPLATE = "<SYNC_TYPE>_<ORDER_ID>_<DPID>_<SYNC_MODE>_<TIMESTAMP>SPLITNUM.sync"  # "Outbound Template Macros"
VARIANTS: dict[str, tuple[LineLayout, bool, str | None]] = {
    "strict": (LineLayout(), False, None),
    "two spaces": (LineLayout(separator="  "), False, None),
    "crlf, bom": (LineLayout(line_ends="crlf", bom=True), False, None),
    "mixed, headers, blank lines": (
        LineLayout(line_ends="mixed", header_rows=("7001\tfull.sync", "UUID SEGMENT_LIST"), blank_every=7),
        False,
        None,
    ),
    "javascript .info": (LineLayout(), True, None),
    "template in seconds": (LineLayout(), False, TEMPLATE),
}


def deliver(zone: Path, rows: list[OutboundRow], mode: str, variant: str, max_part_bytes: int) -> OutboundNames:
    layout, javascript, template_text = VARIANTS[variant]
    template = None if template_text is None else NameTemplate(template_text, destination_id=7001)
    batch = OutboundFileName("s3", 7001, 1001, mode, 1_700_000_000_000, template=template)  # type: ignore[arg-type]
    writer = OutboundWriter(batch, max_part_bytes=max_part_bytes, layout=layout)
    for part in collect_parts(writer.write(rows)):
        (zone / part.summary.name).write_bytes(part.data)
    info = writer.info()
    (zone / batch.info_name).write_bytes(info.to_javascript() if javascript else info.to_json())
    return OutboundNames({} if template_text is None else {"7001": template_text})


def emit(tmp: Path, rows: list[OutboundRow], mode: str, variant: str, piece: int) -> list[AudienceMembership]:
    zone_dir = tmp / "import"
    zone_dir.mkdir(parents=True)
    names = deliver(zone_dir, rows, "full" if mode == "full" else "iter", variant, 20_000)
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
        batch_size=25,
    )

    async def run() -> None:
        batches, bad = group_names(await importer._zone.list(), names)
        assert bad == []
        [batch] = batches.values()
        ready = await ready_parts(importer._zone, batch, parts_timeout_s=600, names=names)
        assert ready is not None
        await importer._emit(batch, ready[1])

    asyncio.run(run())
    return producer.sent


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(ECIDS, st.lists(st.sampled_from([1, 2, 3]), max_size=2, unique=True), st.just([2])), max_size=300
    ),
    st.sampled_from(["full", "delta"]),
    st.sampled_from(sorted(VARIANTS)),
    st.sampled_from([4_096, 9_999, 1 << 20]),
)
def test_each_variant_emits_what_its_strict_form_emits(
    tmp_path_factory: Any, rows: list[OutboundRow], mode: str, variant: str, piece: int
) -> None:
    # Some lines carry segments (the part shows its separator), others only leave segment 2.
    rows = [(u, s, r if k % 4 == 0 or not s else []) for k, (u, s, r) in enumerate(rows)]
    rows.append((str(10**37), [1], []))
    strict = emitted(emit(tmp_path_factory.mktemp("strict"), rows, mode, "strict", 1 << 20))
    assert strict == walk(rows, mode, 25)
    assert emitted(emit(tmp_path_factory.mktemp("variant"), rows, mode, variant, piece)) == strict
