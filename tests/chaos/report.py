"""What the fault scenario tells: its timeline, its checks, and plainly what it could not exercise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class Event:
    at: float
    what: str
    recovery_s: float | None = None


@dataclass
class ChaosReport:
    events: list[Event] = field(default_factory=list)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    # Faults asked for that did not happen, with why (a broker or server this checkout did not start, no
    # toxiproxy): printed as such, never skipped silently.
    not_exercised: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    def print(self) -> None:
        print("\nchaos timeline (seconds since start):")
        for event in self.events:
            recovery = f", back in {event.recovery_s:.1f}s" if event.recovery_s is not None else ""
            print(f"  {event.at:7.1f}  {event.what}{recovery}")
        if self.not_exercised:
            print("\nNOT EXERCISED (asked for, but could not be done here):")
            for what in self.not_exercised:
                print(f"  - {what}")
        print(f"\nchecks (scenario took {self.seconds:.0f}s):")
        for name, ok, detail in self.checks:
            print(f"  {'ok  ' if ok else 'FAIL'} {name}: {detail}")


def dumps(report: ChaosReport) -> bytes:
    data: dict[str, Any] = {
        "events": [{"at": e.at, "what": e.what, "recovery_s": e.recovery_s} for e in report.events],
        "checks": [{"name": n, "ok": ok, "detail": d} for n, ok, d in report.checks],
        "not_exercised": report.not_exercised,
        "seconds": report.seconds,
    }
    return orjson.dumps(data, option=orjson.OPT_INDENT_2)
