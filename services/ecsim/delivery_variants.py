"""The forms of outbound files ecsim can deliver besides the strict one: each variant the platform's
documentation shows, so the bridge is tested on what real deliveries look like.

* ``separator``: ``space`` (the documented syntax, ``UUID<SPACE>SEGMENTS<SPACE>REMOVED``) or ``spaces``
  (two, as the documented example line ``59767559181262060060278870901087098252  24,26,27  25,28``);
* ``line_ends``: ``lf``, ``crlf`` or ``mixed`` (the documentation's sample files mix both);
* ``bom``: a UTF-8 byte order mark at the start of the batch's first part;
* ``header_rows``: rows made of the header macros (``<ORDER_ID><TAB><SYNC_MODE>.sync``, ...) before the
  records; ``blank_every``: a blank spacer line after every N records (both counted by the ``.info``);
* ``info_style``: ``json`` or ``javascript`` (the "Transfer-Control Files" page's notation, keys without
  quotes);
* ``name_template``: the destination's file-name template (the macros of "Outbound Template Macros", e.g.
  ``<SYNC_TYPE>_<ORDER_ID>_<DPID>_<SYNC_MODE>_<TIMESTAMP>SPLITNUM.sync``: 10-digit seconds); the default is the
  documented name with 13-digit milliseconds. ``split_style`` (``padded`` or ``dash``) is on the request.

Every default is the strict form: a request naming none of these delivers what ecsim always did.
"""

from __future__ import annotations

from itertools import cycle, islice
from typing import Literal

from pydantic import BaseModel, Field

from shared.formats.outbound import BadTemplate, InfoFile, LineEnds, LineLayout, NameTemplate, OutboundFileName
from shared.formats.outbound.writer import STRICT

MAX_HEADER_ROWS = 10


class DeliveryVariants(BaseModel):
    """The variant options of ``POST /sim/deliveries`` (see the module)."""

    separator: Literal["space", "spaces"] = "space"
    line_ends: LineEnds = "lf"
    bom: bool = False
    header_rows: int = Field(0, ge=0, le=MAX_HEADER_ROWS, description="Header rows before the records.")
    blank_every: int = Field(0, ge=0, description="A blank spacer line after every N records (0: none).")
    info_style: Literal["json", "javascript"] = "json"
    name_template: str | None = Field(
        None, description="The destination's file-name template (default: the documented name)."
    )

    def template(self, destination_id: int) -> NameTemplate | None:
        """The name template, or None for the documented default. Raises ``BadTemplate``."""
        if self.name_template is None:
            return None
        return NameTemplate(self.name_template, destination_id=destination_id)

    def layout(self, batch: OutboundFileName) -> LineLayout:
        if (self.separator, self.line_ends, self.bom, self.header_rows, self.blank_every) == (
            "space",
            "lf",
            False,
            0,
            0,
        ):
            return STRICT
        return LineLayout(
            separator="  " if self.separator == "spaces" else " ",
            line_ends=self.line_ends,
            bom=self.bom,
            header_rows=tuple(islice(cycle(header_rows(batch)), self.header_rows)),
            blank_every=self.blank_every,
        )

    def info_bytes(self, info: InfoFile) -> bytes:
        return info.to_javascript() if self.info_style == "javascript" else info.to_json()


def header_rows(batch: OutboundFileName) -> list[str]:
    """Header rows of the header macros' values, as a template would render them."""
    stamp = batch.timestamp_ms if batch.template is None or batch.template.unit == "ms" else batch.timestamp_ms // 1000
    ids = [str(v) for v in (batch.sync_type, batch.master_dpid, stamp) if v is not None]
    return [
        f"{batch.destination_id}\t{batch.mode}.sync",  # the macro examples' <ORDER_ID><TAB>..., NEW_LINE between rows
        "\x01".join(ids),  # ASCII_SOH as the column separator
        "UUID SEGMENT_LIST REMOVED_SEGMENT_LIST",  # the content macros' names as column titles
    ]


__all__ = ["BadTemplate", "DeliveryVariants", "header_rows"]
