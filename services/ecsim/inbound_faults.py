"""When ecsim processes an inbound file, and the rejections it can be told to make (``/sim/inbound/faults``).

The platform processes inbound files hours after they land (twice a day; up to 48 h) and may reject a file
or some of its lines. ecsim models that with:

* a processing delay: a file is processed no sooner than ``delay_s`` after ecsim first saw it in the zone
  (``ECSIM_INBOUND_DELAY_S`` for the background poller; an injected delay also holds back ``POST
  /sim/inbound/scan``), and ``hold``: nothing is processed, receipts never come;
* file rejections: the next ``reject_files`` files (or every one, ``-1``) are rejected whole, with a
  receipt saying why;
* line rejections: a share of each file's records is rejected (counted under ``reject_line_reason``,
  sampled with its line number like the platform's error sampling) and not applied. Which lines is
  deterministic: record ``i`` (1-based) is rejected when ``floor(i * share)`` steps up, so a file of ``n``
  records loses exactly ``floor(n * share)`` of them, spread evenly.

No I/O here: the processor asks, this module answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

LineReason = Literal["invalid_aam_id", "format_error", "no_trait_realized"]
# The receipt counter each injected line rejection adds to.
REASON_COUNTERS: Final[dict[str, str]] = {
    "invalid_aam_id": "invalidAamIds",
    "format_error": "formatErrors",
    "no_trait_realized": "noTraitRealized",
}
DEFAULT_FILE_REASON: Final = "the platform rejected the file (injected fault)"


class InboundFaultRequest(BaseModel):
    """Body of ``PUT /sim/inbound/faults`` (every field optional; what is left out is off)."""

    model_config = ConfigDict(extra="forbid")

    delay_s: float = Field(0.0, ge=0, le=7 * 86400, description="Process a file no sooner than this after it landed.")
    hold: bool = Field(False, description="Process nothing: receipts never come.")
    reject_files: int = Field(0, ge=-1, description="Reject the next N files whole (-1: every file).")
    reject_file_reason: str = Field(DEFAULT_FILE_REASON, min_length=1, max_length=500)
    reject_line_share: float = Field(0.0, ge=0, le=1, description="Share of each file's records rejected.")
    reject_line_reason: LineReason = "invalid_aam_id"
    dpid: int | None = Field(None, description="Only files of this DPID (unset: every file).")


@dataclass(slots=True)
class InboundSchedule:
    """The processing delay, the injected faults, and when each file was first seen."""

    default_delay_s: float = 0.0
    faults: InboundFaultRequest = field(default_factory=InboundFaultRequest)
    clock: Callable[[], float] | None = None
    _first_seen: dict[str, float] = field(default_factory=dict)

    def set_faults(self, faults: InboundFaultRequest) -> None:
        self.faults = faults

    def clear(self) -> None:
        self.faults = InboundFaultRequest()

    def forget(self, key: str) -> None:
        self._first_seen.pop(key, None)

    def reset(self) -> None:
        self.clear()
        self._first_seen.clear()

    def _applies(self, dpid: int | None) -> bool:
        return self.faults.dpid is None or self.faults.dpid == dpid

    def ready(self, key: str, dpid: int | None, now: float, *, on_request: bool) -> bool:
        """May the file be processed now? ``on_request``: an explicit scan, which skips the default delay
        (it means "process now") but not an injected one."""
        first = self._first_seen.setdefault(key, now)
        if not self._applies(dpid):
            return on_request or now - first >= self.default_delay_s
        if self.faults.hold:
            return False
        delay = self.faults.delay_s if on_request else max(self.faults.delay_s, self.default_delay_s)
        return now - first >= delay

    def take_file_rejection(self, dpid: int | None) -> str | None:
        """The reason to reject this file whole, or None; counts down ``reject_files``."""
        if not self._applies(dpid) or self.faults.reject_files == 0:
            return None
        if self.faults.reject_files > 0:
            self.faults = self.faults.model_copy(update={"reject_files": self.faults.reject_files - 1})
        return self.faults.reject_file_reason

    def line_share(self, dpid: int | None) -> float:
        return self.faults.reject_line_share if self._applies(dpid) else 0.0

    def state(self) -> dict[str, object]:
        return {"default_delay_s": self.default_delay_s, **self.faults.model_dump(), "waiting": len(self._first_seen)}


def rejects_record(index: int, share: float) -> bool:
    """Is the ``index``-th record (1-based) of a file rejected at this share? Exactly ``floor(n * share)``
    of the first ``n`` records are."""
    if share <= 0 or index < 1:
        return False
    return math.floor(index * share + 1e-9) > math.floor((index - 1) * share + 1e-9)
