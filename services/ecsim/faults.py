"""Fault injection: a share of calls answered with 429/5xx, and added latency, reproducibly.

Every random choice comes from one ``random.Random`` seeded from the settings or the admin request, so
a test that sets a seed sees the same sequence of failures on every run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class FaultConfig(BaseModel):
    """What ``PUT /sim/faults`` accepts (and ``GET /sim/faults`` shows)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate: float = Field(0.0, ge=0.0, le=1.0, description="Share of calls that fail.")
    statuses: list[int] = Field(
        default_factory=lambda: [429, 500], min_length=1, description="Statuses failed calls get, at random."
    )
    retry_after_s: int = Field(1, ge=0, le=3600, description="Retry-After of a 429, in seconds.")
    latency_s: float = Field(0.0, ge=0.0, le=30.0, description="Added to every affected call.")
    ims: bool = Field(False, description="Also affect the IMS token endpoint (REST calls always are).")
    max_faults: int | None = Field(None, ge=0, description="Stop failing after this many faults.")
    seed: int | None = Field(None, description="Reseed the random choices.")

    @field_validator("statuses")
    @classmethod
    def _error_statuses(cls, value: list[int]) -> list[int]:
        if any(not 400 <= s <= 599 for s in value):
            raise ValueError("statuses must be HTTP error statuses (400-599)")
        return value


@dataclass(frozen=True, slots=True)
class Fault:
    status: int
    retry_after_s: int | None


class FaultInjector:
    def __init__(self, seed: int | None = None) -> None:
        self._default_seed = seed
        self.reset()

    def reset(self) -> None:
        self.config = FaultConfig()
        self._random = random.Random(self._default_seed)
        self.injected = 0

    def configure(self, config: FaultConfig) -> None:
        self.config = config
        self.injected = 0
        if config.seed is not None:
            self._random = random.Random(config.seed)

    def latency(self, *, ims: bool) -> float:
        return self.config.latency_s if self.applies(ims=ims) else 0.0

    def applies(self, *, ims: bool) -> bool:
        return not ims or self.config.ims

    def draw(self, *, ims: bool) -> Fault | None:
        """The fault this call gets, if any."""
        config = self.config
        if config.rate <= 0 or not self.applies(ims=ims):
            return None
        if config.max_faults is not None and self.injected >= config.max_faults:
            return None
        # rate 1.0 must fail every call: random() is in [0, 1).
        if self._random.random() >= config.rate:
            return None
        self.injected += 1
        status = self._random.choice(config.statuses)
        return Fault(status, config.retry_after_s if status == 429 else None)

    def state(self) -> dict[str, Any]:
        return {**self.config.model_dump(), "injected": self.injected}
