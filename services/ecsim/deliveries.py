"""ecsim's outbound deliveries: segment membership becomes batch files in the import drop zone.

A delivery names a destination (its master DPID and the ID type come from the destination and its data
source: ``masterDataSourceId`` or ``dataSourceId``; none means DPID 0, ECIDs) and segments mapped to it,
and writes one batch with :class:`~shared.formats.outbound.OutboundWriter`::

    <type>_<destination>_<master DPID>[_<alias>]_(iter|full)_<13-digit ms>[NNN].sync[.gz]  + <root>.info

in the strict forms by default, or in any variant the platform's documentation shows (two-space separators,
CRLF, a byte order mark, header rows, blank lines, a JavaScript-style ``.info``, a destination's own name
template: :mod:`services.ecsim.delivery_variants`).

* ``full``: every current member of the named segments, one line per user with all the named segments
  they are in (``include_removals_in_full`` also lists users who left since the last delivery);
* ``iter``: only changes since the last delivery of those segments to that destination: a line per
  changed user with the segments they joined and the segments they left.

Parts are computed first into local spool files (in a thread: a large batch must not stall the HTTP
server), so the ``.info`` with every part's md5 can be written before the parts (``info_first``, which the
contract allows). Writing retries an unavailable drop zone for up to ``ECSIM_DROPZONE_RETRY_MAX_S``; on
failure what was written is removed and the destination's "last delivered" state is left alone, so the
next ``iter`` carries the same changes: nothing is lost. Paused (``INACTIVE``) segments are skipped, as
the platform sends nothing for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from services.ecsim.delivery_variants import BadTemplate, DeliveryVariants
from services.ecsim.profiles import Key, decode_id
from services.ecsim.segments import SegmentMembers
from services.ecsim.store import AamStore, InvalidInput, Json, StoreError, id_type_of, now_ms
from shared.dropzone import DropZone
from shared.errors import TransientError
from shared.formats import FormatError
from shared.formats.outbound import (
    DEFAULT_MAX_PART_BYTES,
    OutboundFileName,
    OutboundMode,
    OutboundRow,
    OutboundWriter,
    SplitStyle,
    SyncType,
)
from shared.formats.parts import PartSummary
from shared.ids import IdType
from shared.logging import get_logger
from shared.retry import Backoff

log = get_logger(__name__)

SPOOL_CHUNK: Final = 1024 * 1024
MAX_HISTORY: Final = 100


class DeliveryUnavailable(StoreError):
    status = 503
    code = "dropzone_unavailable"


class DeliveryRequest(DeliveryVariants):
    """The body of ``POST /sim/deliveries`` (snake_case or camelCase keys); the variant options are
    :class:`~services.ecsim.delivery_variants.DeliveryVariants`'."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    destination_id: int = Field(ge=0)
    mode: OutboundMode = "full"
    segments: list[int] | None = Field(None, description="Default: every segment mapped to the destination.")
    membership: dict[int, list[str]] | None = Field(
        None, description="Set these segments' members (of the destination's ID type) before delivering."
    )
    max_part_bytes: int = Field(DEFAULT_MAX_PART_BYTES, ge=64, description="Split parts above this content size.")
    gzip: bool = False
    info_first: bool = Field(False, description="Write the .info before the parts.")
    write_info: bool = Field(True, description="False leaves the batch without its .info (a fault to test).")
    split_style: SplitStyle = "padded"
    sync_type: SyncType | None = Field(None, description="Default: the destination's syncType, else ftp.")
    pid_alias: str | None = None
    timestamp_ms: int | None = Field(None, description="Default: now (kept increasing per ecsim).")
    include_removals_in_full: bool = False
    skip_if_empty: bool = Field(False, description="Write nothing when there is no line to deliver.")


def plan_rows(
    mode: OutboundMode,
    sids: Sequence[int],
    current: dict[int, set[Key]],
    previous: dict[int, set[Key]],
    *,
    include_removals: bool = False,
) -> Iterator[OutboundRow]:
    """The lines of a batch, one per user: (user id, segments, removed segments). Pure."""
    if mode == "iter":
        changes: dict[Key, tuple[list[int], list[int]]] = {}
        for sid in sids:
            cur, prev = current[sid], previous[sid]
            for key in cur - prev:
                changes.setdefault(key, ([], []))[0].append(sid)
            for key in prev - cur:
                changes.setdefault(key, ([], []))[1].append(sid)
        for key, (joined, left) in changes.items():
            yield decode_id(key), joined, left
        return
    for k, sid in enumerate(sids):
        earlier = [current[s] for s in sids[:k]]
        later = sids[k + 1 :]
        for key in current[sid]:
            # A user in several segments gets one line, when their first segment comes up.
            if any(key in e for e in earlier):
                continue
            segs = [sid, *(s for s in later if key in current[s])]
            left = [s for s in sids if key in previous[s] and key not in current[s]] if include_removals else []
            yield decode_id(key), segs, left
    if include_removals:
        for k, sid in enumerate(sids):
            for key in previous[sid]:
                if any(key in current[s] for s in sids) or any(key in previous[s] for s in sids[:k]):
                    continue
                yield decode_id(key), [], [s for s in sids[k:] if key in previous[s]]


def _spool(
    batch: OutboundFileName, rows: Iterator[OutboundRow], request: DeliveryRequest, folder: Path
) -> OutboundWriter:
    """Write the batch's parts to files in ``folder`` (named like the parts). Runs in a worker thread."""
    writer = OutboundWriter(batch, max_part_bytes=request.max_part_bytes, layout=request.layout(batch))
    handle = (folder / "current").open("wb")
    try:
        for event in writer.write(rows):
            if isinstance(event, bytes):
                handle.write(event)
            else:
                handle.close()
                (folder / "current").rename(folder / event.name)
                handle = (folder / "current").open("wb")
    finally:
        handle.close()
    return writer


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, SPOOL_CHUNK):
            yield chunk
    finally:
        handle.close()


class DeliveryService:
    def __init__(
        self,
        store: AamStore,
        members: SegmentMembers,
        zone: DropZone,
        *,
        retry_max_s: float = 30.0,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.members = members
        self.zone = zone
        self.retry_max_s = retry_max_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self.reset()

    def reset(self) -> None:
        self._last: dict[tuple[int, int, IdType], set[Key]] = {}
        self.history: deque[Json] = deque(maxlen=MAX_HISTORY)
        self._last_ts = 0
        self.counts = {"deliveries": 0, "failed": 0, "files": 0}

    def state(self) -> Json:
        return {**self.counts, "zone": self.zone.url}

    # --- resolving the request -------------------------------------------------------------------------

    def _destination(self, request: DeliveryRequest) -> tuple[Json, int, IdType, list[int], list[int]]:
        dest = self.store.destinations.get(request.destination_id)
        master_ref = dest.get("masterDataSourceId", dest.get("dataSourceId"))
        master = 0 if master_ref is None else int(master_ref)
        ds = self.store.datasources.items.get(master)
        if ds is None and master != 0:
            raise InvalidInput(f"the destination's master data source {master} does not exist")
        mapped = [int(m["sid"]) for m in dest.get("mappings", ())]
        wanted = list(dict.fromkeys(request.segments if request.segments is not None else mapped))
        if not wanted:
            raise InvalidInput("no segment to deliver: the destination has no mappings and none were named")
        unmapped = [s for s in wanted if s not in mapped]
        if unmapped:
            raise InvalidInput(
                "segments must be mapped to the destination",
                details=[{"field": "segments", "message": f"not mapped: {unmapped[:20]}"}],
            )
        active: list[int] = []
        paused: list[int] = []
        for sid in wanted:
            segment = self.store.segments.get(sid)
            (paused if segment.get("status") == "INACTIVE" else active).append(sid)
        return dest, master, id_type_of(ds), active, paused

    def _timestamp(self, requested: int | None, step_ms: int) -> int:
        if requested is not None:
            return requested

        # Two batches in the same millisecond (second, for names in seconds) would share a name: keep stamps
        # strictly increasing.
        def up(ms: int) -> int:
            return -(-ms // step_ms) * step_ms

        self._last_ts = max(up(self._clock()), up(self._last_ts + 1))
        return self._last_ts

    # --- delivering --------------------------------------------------------------------------------------

    async def deliver(self, request: DeliveryRequest) -> Json:
        async with self._lock:
            return await self._deliver(request)

    async def _deliver(self, request: DeliveryRequest) -> Json:
        dest, master, id_type, sids, paused = self._destination(request)
        for sid, ids in (request.membership or {}).items():
            if sid not in sids:
                raise InvalidInput(f"membership names segment {sid}, which this delivery does not carry")
            self.members.change(sid, id_type, add=ids, replace=True)
        dest_id = request.destination_id
        # Copies: the HTTP API may change membership while the worker thread reads them.
        current = {sid: set(self.members.live(sid, id_type)) for sid in sids}
        previous = {sid: self._last.get((dest_id, sid, id_type), set()) for sid in sids}
        try:
            template = request.template(dest_id)
            step = 1000 if template is not None and template.unit == "s" else 1
            # A template naming both: DPID is the destination's data provider, MASTER_DPID its IDs' source.
            both = template is not None and {"DPID", "MASTER_DPID"} <= template.fields
            provider = dest.get("dataSourceId")
            dpid = (master if provider is None else int(provider)) if both else None
            batch = OutboundFileName(
                request.sync_type or dest.get("syncType") or "ftp",
                dest_id,
                master,
                request.mode,
                self._timestamp(request.timestamp_ms, step),
                None,
                request.gzip,
                request.pid_alias,
                request.split_style,
                dpid,
                template,
            )
        except (FormatError, BadTemplate) as exc:
            raise InvalidInput(f"cannot name the batch: {exc}") from None
        rows = plan_rows(request.mode, sids, current, previous, include_removals=request.include_removals_in_full)
        folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="ecsim-delivery-"))
        try:
            try:
                writer = await asyncio.to_thread(_spool, batch, rows, request, folder)
            except FormatError as exc:
                raise InvalidInput(f"cannot write the batch: {exc}") from None
            parts = writer.parts
            info = writer.info()
            if request.skip_if_empty and not parts:
                return {"destinationId": dest_id, "skipped": "nothing to deliver", "files": []}
            written = await self._publish(batch, parts, request.info_bytes(info), folder, request)
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)
        for sid in sids:
            self._last[(dest_id, sid, id_type)] = current[sid]
        result = self._result(request, batch, master, id_type, sids, paused, parts, info.model_dump(by_alias=True))
        result["writeOrder"] = written
        result["segmentCounts"] = {
            str(sid): {
                "members": len(current[sid]),
                "joined": len(current[sid] - previous[sid]),
                "left": len(previous[sid] - current[sid]),
            }
            for sid in sids
        }
        self.counts["deliveries"] += 1
        self.counts["files"] += len(written)
        self.history.append(result)
        log.info(
            "ecsim_delivery_written",
            destination_id=dest_id,
            mode=request.mode,
            batch=batch.batch_root,
            parts=len(parts),
            lines=sum(p.line_count for p in parts),
        )
        return result

    async def _publish(
        self,
        batch: OutboundFileName,
        parts: list[PartSummary],
        info: bytes,
        folder: Path,
        request: DeliveryRequest,
    ) -> list[str]:
        items: list[tuple[str, Path | bytes]] = [(p.name, folder / p.name) for p in parts]
        if request.write_info:
            entry = (batch.info_name, info)
            items = [entry, *items] if request.info_first else [*items, entry]
        deadline = time.monotonic() + self.retry_max_s
        written: list[str] = []
        try:
            for name, source in items:
                await self._write(name, source, deadline)
                written.append(name)
        except TransientError as exc:
            self.counts["failed"] += 1
            log.warning("ecsim_delivery_failed", batch=batch.batch_root, error=str(exc)[:300], written=len(written))
            for name in written:
                # Best effort: a half batch would look like a delivery that lost parts.
                with contextlib.suppress(Exception):
                    await self.zone.delete(name, missing_ok=True)
            raise DeliveryUnavailable("the import drop zone stayed unavailable", batch=batch.batch_root) from None
        return written

    async def _write(self, name: str, source: Path | bytes, deadline: float) -> None:
        backoff = Backoff(0.05, 1.0)
        while True:
            try:
                data = source if isinstance(source, bytes) else _file_chunks(source)
                await self.zone.write(name, data)
                return
            except TransientError as exc:
                delay = backoff.next_delay()
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("ecsim_delivery_write_retry", file=name, error=str(exc)[:200], retry_in_s=round(delay, 3))
                await asyncio.sleep(delay)

    @staticmethod
    def _result(
        request: DeliveryRequest,
        batch: OutboundFileName,
        master: int,
        id_type: IdType,
        sids: list[int],
        paused: list[int],
        parts: list[PartSummary],
        info: dict[str, Any],
    ) -> Json:
        return {
            "destinationId": request.destination_id,
            "masterDataSourceId": master,
            "idType": id_type,
            "mode": request.mode,
            "segments": sids,
            "skippedSegments": paused,
            "batchRoot": batch.batch_root,
            "timestampMs": batch.timestamp_ms,
            "infoName": batch.info_name if request.write_info else None,
            "info": info,
            "files": [
                {
                    "name": p.name,
                    "sequence": p.number,
                    "lines": p.line_count,
                    "bytes": p.byte_size,
                    "contentBytes": p.content_bytes,
                    "md5": p.md5,
                }
                for p in parts
            ],
            "lines": sum(p.line_count for p in parts),
        }

    # --- schedule ----------------------------------------------------------------------------------------

    async def run(self, interval_s: float) -> None:
        """Every ``interval_s``: an ``iter`` batch for each S2S destination with mappings (none if empty)."""
        while True:
            await asyncio.sleep(interval_s)
            for dest in list(self.store.destinations.items.values()):
                if dest.get("destinationType") != "S2S" or not dest.get("mappings"):
                    continue
                request = DeliveryRequest(destination_id=dest["destinationId"], mode="iter", skip_if_empty=True)
                try:
                    await self.deliver(request)
                except StoreError as exc:
                    log.warning("ecsim_scheduled_delivery_failed", destination_id=dest["destinationId"], error=str(exc))
                except Exception:
                    log.exception("ecsim_scheduled_delivery_failed", destination_id=dest["destinationId"])
