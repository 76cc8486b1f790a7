"""ecsim's application: the platform's HTTP surface (IMS, REST, admin) over an in-memory simulator, and
its background work: processing inbound files from the export zone, and scheduled deliveries."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import orjson
from aiohttp import web

from services.ecsim.admin_auth import check_sim_binding
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
        check_sim_binding(settings)  # before anything: a refused /sim stops ecsim with exit 2
        self.sim = Simulator(settings)
        self.tasks: list[asyncio.Task[None]] = []

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
        settings = self.settings
        if not self.tasks:
            if settings.ecsim_inbound_poll_interval_s > 0:
                poll = self.sim.inbound.run(settings.ecsim_inbound_poll_interval_s)
                self.tasks.append(asyncio.create_task(poll, name="ecsim-inbound"))
            if settings.ecsim_delivery_interval_s is not None:
                schedule = self.sim.deliveries.run(settings.ecsim_delivery_interval_s)
                self.tasks.append(asyncio.create_task(schedule, name="ecsim-deliveries"))
        log.info(
            "ecsim_ready",
            admin_enabled=settings.ecsim_admin_enabled,
            expires_in=settings.ecsim_token_lifetime_s,
            client_id=settings.ecsim_client_id,
            export_dropzone=self.sim.zones["export"].url,
            import_dropzone=self.sim.zones["import"].url,
            inbound_poll_interval_s=settings.ecsim_inbound_poll_interval_s,
            delivery_interval_s=settings.ecsim_delivery_interval_s,
        )
        self.started = True

    async def stop(self) -> None:
        self.started = False
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()
        await self.sim.close()

    def watched_tasks(self) -> Sequence[asyncio.Task[None]]:
        # The loops catch every failure themselves: if one ends anyway, ecsim should not run half-alive.
        return list(self.tasks)


def build(settings: EcsimSettings) -> EcsimApp:
    return EcsimApp(settings)
