"""ecsim's application: the platform's HTTP surface (IMS, REST, admin) over an in-memory simulator."""

from __future__ import annotations

import orjson
from aiohttp import web

from services.ecsim.api import EcsimHttp
from services.ecsim.settings import EcsimSettings
from services.ecsim.simulator import Simulator
from services.ecsim.store import StoreError
from shared.errors import ConfigError
from shared.logging import get_logger
from shared.service import ServiceApp

log = get_logger(__name__)


class EcsimApp(ServiceApp):
    name = "ecsim"
    settings: EcsimSettings

    def __init__(self, settings: EcsimSettings) -> None:
        super().__init__(settings)
        self.sim = Simulator(settings)

    def routes(self, app: web.Application) -> None:
        EcsimHttp(self.sim).add_routes(app)

    async def start(self) -> None:
        seed_file = self.settings.ecsim_seed_file
        if seed_file is not None and not self.started:
            try:
                payload = orjson.loads(seed_file.read_bytes())
                created = self.sim.store.seed(payload, uid=self.sim.tokens.uid)
            except (OSError, orjson.JSONDecodeError, StoreError) as exc:
                # A bad seed file is a setup mistake: refuse to start rather than run half-provisioned.
                raise ConfigError("ECSIM_SEED_FILE cannot be loaded", path=str(seed_file), error=str(exc)) from exc
            log.info("ecsim_seeded", path=str(seed_file), **{k: len(v) for k, v in created.items()})
        log.info(
            "ecsim_ready",
            admin_enabled=self.settings.ecsim_admin_enabled,
            expires_in=self.settings.ecsim_token_lifetime_s,
            client_id=self.settings.ecsim_client_id,
        )
        self.started = True

    async def stop(self) -> None:
        self.started = False


def build(settings: EcsimSettings) -> EcsimApp:
    return EcsimApp(settings)
