"""ecsim's inbound file processing: the bridge's export files become users' onboarded traits.

The export drop zone is polled (and scanned on ``POST /sim/inbound/scan``). Every object
``<partner>/date=YYYY-MM-DD/ftp_dpm_<DPID>[_<target DPID>]_<ts>.(sync|overwrite)[.N][.gz]`` is streamed
through :class:`~shared.formats.inbound.InboundParser` (one chunk in memory at a time) and applied to the
:class:`~services.ecsim.profiles.ProfileStore`; a receipt with the platform's counters is recorded for the
data source (``GET /v1/datasources/{id}/history/inbound``) and the file moves to ``processed/``.
A file in the form the bridge writes is applied in bulk instead (:mod:`services.ecsim.inbound_bulk`), with
the same receipt and profile changes; any other file, line by line as above.
Files that cannot be processed at all (a name breaking the grammar, an empty file, a corrupt gzip, an
unknown data source) move to ``rejected/`` with a reason, and get a receipt saying why.

Rules the processor applies, where the contract leaves a choice ([INF] in the contract):

* only **onboarded traits of the data source owning the traits** (the target DPID, else the DPID) are
  realised; any other trait id counts as failed validation, and a record realising nothing is
  "No Trait Realized";
* user ids must fit the data source's ID type (``COOKIE``: 38-digit ECIDs, else declared IDs), else
  "Invalid AAM ID"; ID syncs are not modelled, so "No Matching AAM ID" is always 0;
* ``.overwrite`` replaces the user's traits of the owning data source (other data sources' are kept);
  a line with an empty trait list clears them; removal tokens are ignored there, as the contract says;
* signals (``key=value``, bare numbers) are counted but realise nothing: ecsim evaluates no trait rules;
* a file is applied completely or not at all: a failure half-way (corrupt gzip, drop zone gone) rolls the
  profile changes back, and a transient failure leaves the file in place for the next scan;
* a file is processed once: names already handled are remembered; a file whose receipt is recorded but
  whose move failed is only moved on the next scan, and a name that shows up again is rejected as a
  duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import Callable
from datetime import date
from typing import Final

from services.ecsim.inbound_bulk import BULK_ID_TYPES, BulkApplier, NotBulk, TraitRules
from services.ecsim.inbound_faults import REASON_COUNTERS, InboundSchedule, rejects_record
from services.ecsim.inbound_receipts import FileStats, InboundTarget, processed_receipt, rejected_receipt
from services.ecsim.profiles import ProfileStore, Transaction, encode_id
from services.ecsim.store import AamStore, Json, id_type_of, now_ms
from shared.dropzone import Area, DropZone, ObjectNotFound
from shared.errors import TransientError
from shared.formats import BadFileName, CorruptGzip, EmptyFile, FormatError
from shared.formats.inbound import (
    InboundCounters,
    InboundParser,
    InboundRecord,
    parse_inbound_name,
)
from shared.formats.lines import LineError
from shared.logging import get_logger
from shared.retry import Backoff

log = get_logger(__name__)

ON_BOARDED: Final = "ON_BOARDED_TRAIT"
MAX_RECENT: Final = 1000
_DATE_DIR: Final = re.compile(r"date=(\d{4}-\d{2}-\d{2})")
_LOOSE_DPID: Final = re.compile(r"ftp_dpm_(\d{1,18})_")


class _Rejected(Exception):
    def __init__(self, reason: str, dpid: int | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.dpid = dpid


class InboundProcessor:
    """Scans one drop zone and applies its inbound files to a profile store."""

    def __init__(
        self,
        store: AamStore,
        profiles: ProfileStore,
        zone: DropZone,
        *,
        clock: Callable[[], int] = now_ms,
        schedule: InboundSchedule | None = None,
        bulk: bool = True,
    ) -> None:
        self.store = store
        self.bulk = bulk  # False: every file line by line (tests compare the two paths)
        self.profiles = profiles
        self.zone = zone
        self._clock = clock
        self.schedule = schedule or InboundSchedule()
        self._lock = asyncio.Lock()
        self.reset()

    def reset(self) -> None:
        self._processed: set[str] = set()
        self._pending: dict[str, tuple[Area, str | None]] = {}
        self.recent: deque[Json] = deque(maxlen=MAX_RECENT)
        self.counts = {"processed": 0, "rejected": 0, "scans": 0, "scan_failures": 0, "bulk": 0}
        if hasattr(self, "schedule"):
            self.schedule.reset()

    def state(self) -> Json:
        return {
            **self.counts,
            "pending_moves": sorted(self._pending),
            "zone": self.zone.url,
            "schedule": self.schedule.state(),
        }

    # --- scanning ------------------------------------------------------------------------------------

    async def scan(self, *, on_request: bool = True) -> list[Json]:
        """Handle every file now in the zone that is due (:class:`InboundSchedule`); the receipts of the
        files handled by this call. ``on_request``: an explicit scan, which skips the default delay.

        Raises ``DropZoneUnavailable`` (transient) when the zone cannot be used; what was handled before
        stays handled, the rest waits for the next scan.
        """
        async with self._lock:
            self.counts["scans"] += 1
            handled: list[Json] = []
            for obj in await self.zone.list(""):
                key = obj.name
                if key in self._pending:
                    await self._move(key)
                    continue
                loose = _LOOSE_DPID.match(key.rsplit("/", 1)[-1])
                dpid = int(loose.group(1)) if loose else None
                if key not in self._processed and not self.schedule.ready(
                    key, dpid, self._clock() / 1000, on_request=on_request
                ):
                    continue
                self.schedule.forget(key)
                receipt = await self._handle(key)
                if receipt is None:
                    continue
                handled.append(receipt)
                await self._move(key)
            return handled

    async def run(self, interval_s: float) -> None:
        """Scan every ``interval_s`` until cancelled; failures are logged and retried with backoff."""
        backoff = Backoff(interval_s, max(30.0, interval_s))
        while True:
            try:
                await self.scan(on_request=False)
                backoff.reset()
                delay = interval_s
            except TransientError as exc:
                self.counts["scan_failures"] += 1
                delay = backoff.next_delay()
                log.warning("ecsim_inbound_scan_unavailable", error=str(exc)[:300], retry_in_s=round(delay, 2))
            except Exception:
                self.counts["scan_failures"] += 1
                delay = backoff.next_delay()
                log.exception("ecsim_inbound_scan_failed", retry_in_s=round(delay, 2))
            await asyncio.sleep(delay)

    async def _move(self, key: str) -> None:
        area, reason = self._pending[key]
        try:
            await self.zone.move(key, area, reason)
        except ObjectNotFound:
            log.warning("ecsim_inbound_file_vanished", file=key)
        self._pending.pop(key, None)  # gone already if ecsim was reset meanwhile

    # --- one file ------------------------------------------------------------------------------------

    async def _handle(self, key: str) -> Json | None:
        started = self._clock()
        if key in self._processed:
            return self._reject(key, "duplicate: a file of this name was already processed", None, started)
        try:
            target = self._resolve(key)
        except _Rejected as rejected:
            return self._reject(key, rejected.reason, rejected.dpid, started)
        injected = self.schedule.take_file_rejection(target.dpid)
        if injected is not None:
            return self._reject(key, injected, target.dpid, started)
        tx = self.profiles.transaction()
        parser = InboundParser(target.name, id_type=target.id_type)
        stats = FileStats()
        counters = parser.counters
        try:
            bulk = await self._apply_bulk(target, tx)
            if bulk is None:
                await self._apply(target, parser, stats, tx)
            else:
                counters, stats = bulk.counters, bulk.stats
        except ObjectNotFound:
            tx.rollback()
            log.warning("ecsim_inbound_file_vanished", file=key)
            return None
        except FormatError as exc:
            tx.rollback()
            reason = _format_reason(exc)
            return self._reject(key, reason, target.dpid, started, parser.counters)
        except TransientError:
            tx.rollback()  # the zone went away mid-file: all of it is applied again on the next scan
            raise
        except Exception as exc:
            tx.rollback()
            # A bug, not the file's fault; rejecting keeps the poller from failing on it forever.
            log.exception("ecsim_inbound_file_failed", file=key)
            return self._reject(key, f"internal error: {type(exc).__name__}", target.dpid, started)
        except BaseException:
            tx.rollback()
            raise
        removed = tx.removed
        tx.commit()
        injected_as = REASON_COUNTERS[self.schedule.faults.reject_line_reason] if stats.injected else None
        receipt = processed_receipt(target, counters, stats, removed, (started, self._clock()), injected_as)
        return self._record(key, receipt, target.dpid, "processed", None)

    def _resolve(self, key: str) -> InboundTarget:
        parts = key.split("/")
        base = parts[-1]
        loose = _LOOSE_DPID.match(base)
        dpid = int(loose.group(1)) if loose else None
        if len(parts) != 3 or not _valid_date_dir(parts[1]):
            raise _Rejected("not under <partner>/date=YYYY-MM-DD/", dpid)
        try:
            name = parse_inbound_name(base)
        except BadFileName as exc:
            raise _Rejected(f"bad file name: {exc.reason}", dpid) from None
        datasources = self.store.datasources.items
        ds = datasources.get(name.dpid)
        if ds is None:
            raise _Rejected(f"unknown data source {name.dpid}", None)
        if not ds.get("inboundS2S", True):
            raise _Rejected(f"data source {name.dpid} does not accept inbound files", name.dpid)
        owner = name.target_dpid if name.target_dpid is not None else name.dpid
        if owner not in datasources:
            raise _Rejected(f"unknown target data source {owner}", name.dpid)
        return InboundTarget(key, name, parts[0], name.dpid, owner, id_type_of(ds))

    def _rules(self, target: InboundTarget) -> TraitRules:
        overwrite = target.name.mode == "overwrite"
        return TraitRules(
            namespace=target.dpid,
            onboarded=self.store.trait_ids_of(target.owner, trait_type=ON_BOARDED),
            overwrite=overwrite,
            replace=self.store.trait_ids_of(target.owner) if overwrite else None,
        )

    async def _apply_bulk(self, target: InboundTarget, tx: Transaction) -> BulkApplier | None:
        """The file applied by the bulk path (inbound_bulk.py), or None (nothing applied) when only the
        line-by-line path handles it exactly."""
        if not self.bulk or self.schedule.line_share(target.dpid) or target.id_type not in BULK_ID_TYPES:
            return None
        bulk = BulkApplier(target.id_type, self._rules(target), tx)
        try:
            async with contextlib.aclosing(self.zone.read(target.key)) as chunks:
                await bulk.apply(chunks, gzip=target.name.gzip)
        except NotBulk as exc:
            tx.rollback()
            log.info("ecsim_inbound_line_by_line", file=target.key, reason=str(exc))
            return None
        self.counts["bulk"] += 1
        return bulk

    async def _apply(self, target: InboundTarget, parser: InboundParser, stats: FileStats, tx: Transaction) -> None:
        rules = self._rules(target)
        onboarded, overwrite, replace = rules.onboarded, rules.overwrite, rules.replace
        share = self.schedule.line_share(target.dpid)
        reason = self.schedule.faults.reject_line_reason

        def take(item: InboundRecord | LineError) -> None:
            if isinstance(item, LineError):
                stats.sample(item)
                return
            stats.records += 1
            if share and rejects_record(stats.records, share):
                stats.inject(item.line_number, reason)
                return
            adds = [t for t in item.adds if t in onboarded]
            removes = [t for t in item.removes if t in onboarded]
            failed = len(item.adds) + len(item.removes) - len(adds) - len(removes)
            if failed:
                stats.traits_failed += failed
                stats.users_failed += 1
            # An .overwrite line with no trait at all says "this user has none of ours any more".
            clears = overwrite and not (item.adds or item.removes or item.signals)
            if not (adds or removes or clears):
                stats.no_trait += 1
                return
            tx.apply(target.dpid, item.user_id, adds, removes, replace=replace)
            stats.stored += 1
            stats.realized += len(adds)
            stats.devices.add(encode_id(item.user_id))

        async with contextlib.aclosing(self.zone.read(target.key)) as chunks:
            async for chunk in chunks:
                for item in parser.feed(chunk):
                    take(item)
        for item in parser.close():
            take(item)

    # --- receipts (their content: inbound_receipts.py) --------------------------------------------------

    def _reject(
        self, key: str, reason: str, dpid: int | None, started: int, counters: InboundCounters | None = None
    ) -> Json:
        received = counters.records_received if counters is not None else 0
        receipt = rejected_receipt(key, reason, received, started, self._clock())
        return self._record(key, receipt, dpid, "rejected", reason)

    def _record(self, key: str, receipt: Json, dpid: int | None, area: Area, reason: str | None) -> Json:
        if dpid is not None and dpid in self.store.datasources.items:
            receipt = self.store.add_receipt(dpid, receipt)
        else:
            receipt = {**receipt, "dataSourceId": dpid}
        self.recent.append(receipt)
        self._processed.add(key)
        self._pending[key] = (area, reason)
        self.counts[area] += 1
        if area == "processed":
            log.info(
                "ecsim_inbound_processed",
                file=key,
                dpid=dpid,
                received=receipt["recordsReceived"],
                stored=receipt["storedRecords"],
                format_errors=receipt["formatErrors"],
                invalid_ids=receipt["invalidAamIds"],
                no_trait=receipt["noTraitRealized"],
            )
        else:
            log.warning("ecsim_inbound_rejected", file=key, dpid=dpid, reason=reason)
        return receipt


def _valid_date_dir(segment: str) -> bool:
    match = _DATE_DIR.fullmatch(segment)
    if match is None:
        return False
    try:
        date.fromisoformat(match.group(1))
    except ValueError:
        return False
    return True


def _format_reason(exc: FormatError) -> str:
    if isinstance(exc, EmptyFile):
        return "empty file: no record"
    if isinstance(exc, CorruptGzip):
        return "corrupt gzip: the file is not a complete gzip stream"
    return f"unreadable file: {exc.message}"
