"""Export schedules' cadences and slots: the slot logic lives in :mod:`shared.schedule_slots` (ingest's import
polling uses it too); re-exported here for reconcile's and the CLI's existing imports."""

from __future__ import annotations

from shared.schedule_slots import (
    MIN_EVERY_S,
    SCHEDULE_NAMESPACE,
    BadCadence,
    Cadence,
    check_cron,
    due_slot,
    next_run,
    parse_every,
    slot_request_id,
)

__all__ = [
    "MIN_EVERY_S",
    "SCHEDULE_NAMESPACE",
    "BadCadence",
    "Cadence",
    "check_cron",
    "due_slot",
    "next_run",
    "parse_every",
    "slot_request_id",
]
