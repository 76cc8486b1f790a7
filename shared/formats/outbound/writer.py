"""The outbound writer: rows in, a batch's parts and its ``.info`` out (what ecsim delivers)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

from shared.formats.outbound.info import InfoFile, build_info
from shared.formats.outbound.names import OutboundFileName
from shared.formats.outbound.records import OutboundRow, format_outbound_line
from shared.formats.parts import DEFAULT_CHUNK_BYTES, PartEvent, PartSummary, run_part_writer

# The platform splits at up to 10 GB; parts stay far smaller so a consumer can retry one cheaply.
DEFAULT_MAX_PART_BYTES: Final = 256 * 1024 * 1024


class OutboundWriter:
    """Writes rows as one batch, split into numbered parts when over ``max_part_bytes``, and its
    ``.info``.

    ``batch`` gives everything but the part (which must be None). A batch that fits one part gets the
    unnumbered name; a split one ``001``, ``002``, … (or ``-1``, ``-2``, … with ``split_style="dash"``).
    See ``PartWriter`` for the events. Once they are consumed, ``info()`` gives the control file (zero
    rows give zero parts and an ``.info`` listing none).
    """

    def __init__(
        self,
        batch: OutboundFileName,
        *,
        max_part_bytes: int = DEFAULT_MAX_PART_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        self._parts = run_part_writer(batch, max_part_bytes=max_part_bytes, chunk_bytes=chunk_bytes)
        self.batch = batch

    @property
    def parts(self) -> list[PartSummary]:
        return self._parts.parts

    @property
    def info_name(self) -> str:
        return self.batch.info_name

    def write(self, rows: Iterable[OutboundRow]) -> Iterator[PartEvent]:
        return self._parts.write(format_outbound_line(u, s, r) for u, s, r in rows)

    def info(self) -> InfoFile:
        if not self._parts.done:
            raise RuntimeError("info() needs every part written first")
        return build_info(self.batch, self._parts.parts)
