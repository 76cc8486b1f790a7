"""Everything ecsim holds in memory: objects, tokens, faults and call counters, behind one reset."""

from __future__ import annotations

from collections import Counter
from typing import Any

from services.ecsim.faults import FaultInjector
from services.ecsim.ims import TokenStore
from services.ecsim.settings import EcsimSettings
from services.ecsim.store import AamStore


class Simulator:
    def __init__(self, settings: EcsimSettings) -> None:
        self.settings = settings
        self.store = AamStore(partner_id=settings.ecsim_partner_id)
        self.tokens = TokenStore(
            client_id=settings.ecsim_client_id,
            client_secret=settings.ecsim_client_secret.get_secret_value(),
            lifetime_s=settings.ecsim_token_lifetime_s,
            required_scope=settings.ecsim_required_scope,
        )
        self.faults = FaultInjector(settings.ecsim_fault_seed)
        self.rest_calls: Counter[int] = Counter()

    def reset(self) -> None:
        """Back to a freshly started ecsim: no objects, tokens, faults or counts."""
        self.store.reset()
        self.tokens.reset()
        self.faults.reset()
        self.rest_calls.clear()

    def state(self) -> dict[str, Any]:
        return {
            **self.store.snapshot(),
            "ims": self.tokens.stats(),
            "rest": {
                "calls": sum(self.rest_calls.values()),
                "by_status": {str(k): v for k, v in sorted(self.rest_calls.items())},
            },
            "faults": self.faults.state(),
        }
