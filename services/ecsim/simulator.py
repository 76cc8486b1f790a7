"""Everything ecsim holds in memory: objects, tokens, faults, profiles, segment members, file processing
and deliveries, behind one reset."""

from __future__ import annotations

from collections import Counter
from typing import Any

from services.ecsim.deliveries import DeliveryService
from services.ecsim.faults import FaultInjector
from services.ecsim.ims import TokenStore
from services.ecsim.inbound import InboundProcessor
from services.ecsim.inbound_faults import InboundSchedule
from services.ecsim.profiles import ProfileStore
from services.ecsim.realtime import RealtimeSender
from services.ecsim.segments import SegmentMembers
from services.ecsim.settings import EcsimSettings
from services.ecsim.store import AamStore
from services.ecsim.zones import FaultyDropZone, ZoneFault, ZoneName
from shared.dropzone import DropZone, S3Options, open_dropzone
from shared.population import PopulationSpec


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
        self.profiles = ProfileStore()
        self.members = SegmentMembers()
        self.population: PopulationSpec | None = None
        # No I/O here: a zone is only reached on first use, so a bad URL surfaces as a transient error then.
        s3 = S3Options(endpoint_url=settings.ecsim_s3_endpoint_url, region=settings.ecsim_s3_region)
        self.zone_faults: dict[ZoneName, ZoneFault] = {"export": ZoneFault(), "import": ZoneFault()}
        self.zones: dict[ZoneName, DropZone] = {
            "export": FaultyDropZone(open_dropzone(settings.export_dropzone_url, s3=s3), self.zone_faults["export"]),
            "import": FaultyDropZone(open_dropzone(settings.import_dropzone_url, s3=s3), self.zone_faults["import"]),
        }
        self.inbound = InboundProcessor(
            self.store,
            self.profiles,
            self.zones["export"],
            schedule=InboundSchedule(default_delay_s=settings.ecsim_inbound_delay_s),
        )
        self.deliveries = DeliveryService(
            self.store, self.members, self.zones["import"], retry_max_s=settings.ecsim_dropzone_retry_max_s
        )
        self.realtime = RealtimeSender(client_id=settings.ecsim_client_id)

    def reset(self) -> None:
        """Back to a freshly started ecsim: no objects, tokens, faults, profiles, members or counts.

        Files in the drop zones are left alone: they belong to whoever wrote them.
        """
        self.store.reset()
        self.tokens.reset()
        self.faults.reset()
        self.rest_calls.clear()
        self.profiles.reset()
        self.members.reset()
        self.population = None
        for fault in self.zone_faults.values():
            fault.clear()
        self.inbound.reset()
        self.deliveries.reset()
        self.realtime.reset()

    async def close(self) -> None:
        await self.realtime.close()
        for zone in self.zones.values():
            await zone.close()

    def zones_state(self) -> dict[str, Any]:
        return {name: {"url": zone.url, **self.zone_faults[name].state()} for name, zone in self.zones.items()}

    def state(self) -> dict[str, Any]:
        return {
            **self.store.snapshot(),
            "ims": self.tokens.stats(),
            "rest": {
                "calls": sum(self.rest_calls.values()),
                "by_status": {str(k): v for k, v in sorted(self.rest_calls.items())},
            },
            "faults": self.faults.state(),
            "profiles": self.profiles.stats(),
            "segment_members": self.members.stats(),
            "inbound": self.inbound.state(),
            "deliveries": self.deliveries.state(),
            "realtime": self.realtime.state(),
            "dropzones": self.zones_state(),
        }
