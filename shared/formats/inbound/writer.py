"""The inbound writer: rows in, an export file's parts out. It refuses removals in ``.overwrite`` files:
the platform would drop them silently."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

from shared.formats import InvalidRecord
from shared.formats.inbound.names import InboundFileName
from shared.formats.inbound.records import InboundRow, format_inbound_line
from shared.formats.parts import DEFAULT_CHUNK_BYTES, PartEvent, PartSummary, run_part_writer

# The platform's "optimal" uncompressed file is 1 GB (maximum 5 GB); stay well below.
DEFAULT_MAX_PART_BYTES: Final = 256 * 1024 * 1024


class InboundWriter:
    """Writes rows as one inbound file, split into numbered parts when over ``max_part_bytes``.

    ``file_name`` gives DPID, timestamp, mode and gzip; its ``part`` must be None (the writer numbers
    parts: ``.sync`` alone for a single part, ``.sync.1``, ``.sync.2``, … for a split file). See
    ``PartWriter`` for the events. Zero rows give zero parts: the platform rejects empty files.
    The writer does not track lines per user: give each user one row.
    """

    def __init__(
        self,
        file_name: InboundFileName,
        *,
        max_part_bytes: int = DEFAULT_MAX_PART_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        self._parts = run_part_writer(file_name, max_part_bytes=max_part_bytes, chunk_bytes=chunk_bytes)
        self.file_name = file_name

    @property
    def parts(self) -> list[PartSummary]:
        return self._parts.parts

    def write(self, rows: Iterable[InboundRow]) -> Iterator[PartEvent]:
        return self._parts.write(self._lines(rows))

    def _lines(self, rows: Iterable[InboundRow]) -> Iterator[bytes]:
        overwrite = self.file_name.mode == "overwrite"
        for user_id, adds, removes in rows:
            if overwrite and removes:
                raise InvalidRecord("the platform ignores removals in .overwrite files")
            yield format_inbound_line(user_id, adds, removes)


def write_inbound(
    rows: Iterable[InboundRow],
    file_name: InboundFileName,
    *,
    max_part_bytes: int = DEFAULT_MAX_PART_BYTES,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Iterator[PartEvent]:
    return InboundWriter(file_name, max_part_bytes=max_part_bytes, chunk_bytes=chunk_bytes).write(rows)
