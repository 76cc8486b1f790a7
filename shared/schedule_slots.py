"""When a schedule fires (an export schedule, an import audience's polling interval): its cadence
(``--every 1h`` or ``--cron "0 */3 * * *"``) and its slots, as pure functions.

A slot is a moment the schedule is due: ``created + k * every`` for an interval (counted from the schedule's
creation, so it never drifts), or a time the cron expression matches (UTC). The scheduler fires the latest slot
that is due and later than both the last slot fired and the schedule's anchor (its creation, or its last resume):
slots missed while reconcile was down are fired ONCE (the latest), and slots that fell while it was paused not at
all. Each slot's export request has an id derived from the schedule and the slot, so firing one twice (a restart
between sending and recording, two replicas) asks for one export.

Shared by reconcile's export scheduler and ingest's import polling (:mod:`services.ingest.poll_slots`).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from cronsim import CronSim, CronSimError

from shared.errors import ConfigError

SCHEDULE_NAMESPACE: Final = uuid.UUID("5f0d7a52-3c1e-4d8a-9b7e-6a2c4e8f1d93")
MIN_EVERY_S: Final = 60
_EVERY = re.compile(r"^\s*(\d{1,7})\s*([smhd])\s*$")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class BadCadence(ConfigError):
    """A schedule's ``--every`` or ``--cron`` that cannot be used."""


def parse_every(text: str) -> int:
    """``90s``, ``15m``, ``1h``, ``2d`` as seconds (at least a minute: the scheduler looks every few seconds, and
    an export per second would only queue behind itself)."""
    match = _EVERY.match(text)
    if match is None:
        raise BadCadence("--every must be a whole number and a unit: s, m, h or d (e.g. 15m, 1h)", every=text)
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds < MIN_EVERY_S:
        raise BadCadence(f"--every must be at least {MIN_EVERY_S} s", every=text)
    return seconds


def check_cron(expression: str) -> str:
    """The expression, once it is known to be a valid five-field cron expression."""
    if len(expression.split()) != 5:
        raise BadCadence("--cron takes five fields: minute hour day-of-month month day-of-week", cron=expression)
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise BadCadence(f"--cron is not a valid cron expression: {exc}", cron=expression) from None
    return expression


@dataclass(frozen=True, slots=True)
class Cadence:
    """Exactly one of an interval (seconds) and a cron expression."""

    every_s: int | None = None
    cron: str | None = None

    def __post_init__(self) -> None:
        if (self.every_s is None) == (self.cron is None):
            raise BadCadence("a schedule takes exactly one of --every and --cron")
        if self.every_s is not None and self.every_s < MIN_EVERY_S:
            raise BadCadence(f"--every must be at least {MIN_EVERY_S} s", every_s=self.every_s)
        if self.cron is not None:
            check_cron(self.cron)

    def describe(self) -> str:
        return f"every {self.every_s} s" if self.every_s is not None else f"cron {self.cron}"

    def latest_slot(self, created: datetime, now: datetime) -> datetime | None:
        """The latest slot at or before ``now`` (None: none yet)."""
        if self.every_s is not None:
            done = int((now - created).total_seconds() // self.every_s)
            return created + timedelta(seconds=done * self.every_s) if done >= 1 else None
        assert self.cron is not None
        # CronSim's reverse iteration yields times strictly before its start: start just after now's minute.
        start = now.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        slot: datetime = next(CronSim(self.cron, start, reverse=True))
        return slot if slot >= created else None

    def next_slot(self, created: datetime, after: datetime) -> datetime:
        """The first slot strictly after ``after``."""
        if self.every_s is not None:
            done = max(0, int((after - created).total_seconds() // self.every_s))
            return created + timedelta(seconds=(done + 1) * self.every_s)
        assert self.cron is not None
        slot: datetime = next(CronSim(self.cron, max(after, created).astimezone(UTC)))
        return slot


def due_slot(
    cadence: Cadence, *, created: datetime, anchor: datetime, last_slot: datetime | None, now: datetime
) -> datetime | None:
    """The slot to fire now (None: nothing is due): the latest one at or before ``now`` that is after the anchor
    and after the last slot fired."""
    slot = cadence.latest_slot(created, now)
    if slot is None or slot <= anchor or (last_slot is not None and slot <= last_slot):
        return None
    return slot


def next_run(cadence: Cadence, *, created: datetime, anchor: datetime, last_slot: datetime | None) -> datetime:
    """When the schedule fires next, as the status page and ``schedule list`` show it."""
    after = max(anchor, last_slot) if last_slot is not None else anchor
    return cadence.next_slot(created, after)


def slot_request_id(schedule_id: int, slot: datetime) -> uuid.UUID:
    """The export request of a schedule's slot: the same for every replica and every restart."""
    return uuid.uuid5(SCHEDULE_NAMESPACE, f"{schedule_id}\n{slot.astimezone(UTC).isoformat()}")
