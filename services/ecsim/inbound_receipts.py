"""ecsim's inbound receipts: what the platform reports of each inbound file, processed or rejected (the
counters of ``GET /v1/datasources/{id}/history/inbound`` and the e-mail receipt's own wording), built from
what :mod:`services.ecsim.inbound` counted while applying it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from services.ecsim.profiles import Key
from services.ecsim.store import Json
from shared.formats.inbound import InboundCounters, InboundFileName
from shared.formats.lines import LineError
from shared.ids import IdType

MAX_ERROR_SAMPLES: Final = 10  # per reason, like the platform's error sampling


@dataclass(frozen=True, slots=True)
class InboundTarget:
    """One inbound file resolved: its name, and whose ids and traits it holds."""

    key: str
    name: InboundFileName
    partner: str
    dpid: int  # whose ids the file holds: the receipt's data source and the profile namespace
    owner: int  # whose traits the file realises
    id_type: IdType


@dataclass(slots=True)
class FileStats:
    """What applying one file realised, counted as it streams (the parser counts the rest)."""

    no_trait: int = 0
    stored: int = 0
    realized: int = 0
    traits_failed: int = 0
    users_failed: int = 0
    devices: set[Key] = field(default_factory=set)
    bulk_devices: int = 0  # distinct users stored by the bulk path, which keeps no set of them
    samples: dict[str, list[Json]] = field(default_factory=dict)
    records: int = 0  # records seen so far (the index line rejections are chosen by)
    injected: int = 0  # records rejected by an injected fault

    @property
    def device_count(self) -> int:
        return len(self.devices) + self.bulk_devices

    def inject(self, line_number: int, reason: str) -> None:
        self.injected += 1
        kept = self.samples.setdefault(reason, [])
        if len(kept) < MAX_ERROR_SAMPLES:
            kept.append({"line": line_number, "reason": reason, "detail": "rejected (injected fault)"})

    def sample(self, err: LineError) -> None:
        kept = self.samples.setdefault(err.reason, [])
        if len(kept) < MAX_ERROR_SAMPLES:
            # No user id: a rejected declared id may be raw PII, and receipts are shown to anyone.
            kept.append({"line": err.line_number, "reason": err.reason, "detail": err.detail})


def clock_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def processed_receipt(
    target: InboundTarget,
    c: InboundCounters,
    stats: FileStats,
    removed: int,
    span: tuple[int, int],
    injected_as: str | None,
) -> Json:
    """The receipt of a processed file; ``span`` is (start, end) in epoch ms, ``injected_as`` the counter
    the injected line rejections add to (None when there were none)."""
    started, ended = span
    counters = {
        "recordsReceived": c.records_received,
        "formatErrors": c.format_errors,
        "invalidAamIds": c.invalid_ids,
        "noMatchingAamId": 0,
        "noTraitRealized": stats.no_trait,
        "recordsProcessed": c.records_processed,
        "storedRecords": stats.stored,
        "totalDevices": stats.device_count,
        "totalSignals": c.signals,
        "totalUnusedSignals": c.signals,
        "totalRealizedTraits": stats.realized,
        "totalRemovedTraits": removed,
        "totalTraitsFailedValidation": stats.traits_failed,
        "totalUsersWithTraitsFailedValidation": stats.users_failed,
    }
    if injected_as is not None:
        counters[injected_as] += stats.injected
    # The e-mail receipt's own wording, for whoever compares with a real one.
    platform = {
        "File name": [target.name.name],
        **c.receipt(),
        "No Matching AAM ID": 0,
        "No Trait Realized": stats.no_trait,
        "Stored Records": stats.stored,
        "Total devices": stats.device_count,
        "Total signals": c.signals,
        "Total unused signals": c.signals,
        "Total realized traits": stats.realized,
        "Total removed traits": removed,
        "Total traits failed validation": stats.traits_failed,
        "Total users that have traits which failed validation": stats.users_failed,
        "Job start time": clock_text(started),
        "Job end time": clock_text(ended),
    }
    return {
        "dataFileName": target.name.name,
        "objectKey": target.key,
        "partner": target.partner,
        "targetDataSourceId": target.owner,
        "mode": target.name.mode,
        "part": target.name.part,
        "status": "processed",
        "success": True,
        **counters,
        "discardedOverUserLimit": c.discarded_over_user_limit,
        "removalsIgnored": c.removals_ignored,
        "blankLines": c.blank_lines,
        "errorsByReason": dict(c.errors_by_reason),
        "errorSamples": [s for kept in stats.samples.values() for s in kept],
        "startTime": started,
        "endTime": ended,
        "receipt": platform,
    }


def rejected_receipt(key: str, reason: str, received: int, started: int, ended: int) -> Json:
    """The receipt of a file that could not be processed at all (it moves to ``rejected/``)."""
    base = key.rsplit("/", 1)[-1]
    return {
        "dataFileName": base,
        "objectKey": key,
        "status": "rejected",
        "success": False,
        "reason": reason,
        "recordsReceived": received,
        "formatErrors": 0,
        "invalidAamIds": 0,
        "noMatchingAamId": 0,
        "noTraitRealized": 0,
        "recordsProcessed": 0,
        "storedRecords": 0,
        "totalRemovedTraits": 0,
        "startTime": started,
        "endTime": ended,
        "receipt": {"File name": [base], "Records received": received, "Stored Records": 0, "Error": reason},
    }
