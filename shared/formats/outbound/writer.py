"""The outbound writer: rows in, a batch's parts and its ``.info`` out (what ecsim delivers).

By default the strict forms: one space between fields, LF line ends, no byte order mark, no header row or
blank line, a JSON ``.info``. A ``LineLayout`` writes the other forms the platform's documentation shows
(two-space separators, CRLF or mixed line ends, a byte order mark, header rows, blank spacer lines), so a
reader can be tested on each; the ``.info`` counts every line written, as the platform's does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final, Literal

from shared.formats.lines import UTF8_BOM
from shared.formats.outbound.info import InfoFile, build_info
from shared.formats.outbound.names import OutboundFileName
from shared.formats.outbound.records import OutboundRow, format_outbound_line
from shared.formats.parts import DEFAULT_CHUNK_BYTES, PartEvent, PartSummary, run_part_writer

# The platform splits at up to 10 GB; parts stay far smaller so a consumer can retry one cheaply.
DEFAULT_MAX_PART_BYTES: Final = 256 * 1024 * 1024

LineEnds = Literal["lf", "crlf", "mixed"]


@dataclass(frozen=True, slots=True)
class LineLayout:
    """How the lines of a batch are laid out. ``header_rows`` and the byte order mark open the batch's
    first part; a blank line follows every ``blank_every`` records; ``mixed`` ends every other line with
    CRLF."""

    separator: str = " "
    line_ends: LineEnds = "lf"
    bom: bool = False
    header_rows: tuple[str, ...] = ()
    blank_every: int = 0

    def lines(self, rows: Iterable[OutboundRow]) -> Iterator[bytes]:
        """Each line as the ``PartWriter`` takes it: one line per item, ending in its line end."""
        count = 0

        def ended(line: bytes) -> bytes:
            nonlocal count
            count += 1
            crlf = self.line_ends == "crlf" or (self.line_ends == "mixed" and count % 2 == 0)
            return line[:-1] + b"\r\n" if crlf else line

        first = UTF8_BOM if self.bom else b""
        for k, (user_id, segments, removed) in enumerate(rows, 1):
            if k == 1:  # no rows, no part: the header rows come with the first record
                for row in self.header_rows:
                    yield ended(first + row.encode() + b"\n")
                    first = b""
            yield ended(first + format_outbound_line(user_id, segments, removed, separator=self.separator))
            first = b""
            if self.blank_every and k % self.blank_every == 0:
                yield ended(b"\n")


STRICT: Final = LineLayout()


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
        layout: LineLayout = STRICT,
    ) -> None:
        self._parts = run_part_writer(batch, max_part_bytes=max_part_bytes, chunk_bytes=chunk_bytes)
        self.batch = batch
        self.layout = layout

    @property
    def parts(self) -> list[PartSummary]:
        return self._parts.parts

    @property
    def info_name(self) -> str:
        return self.batch.info_name

    def write(self, rows: Iterable[OutboundRow]) -> Iterator[PartEvent]:
        if self.layout == STRICT:
            return self._parts.write(format_outbound_line(u, s, r) for u, s, r in rows)
        return self._parts.write(self.layout.lines(rows))

    def info(self) -> InfoFile:
        if not self._parts.done:
            raise RuntimeError("info() needs every part written first")
        return build_info(self.batch, self._parts.parts)
