"""Export schedules against real Postgres and Kafka: the CLI keeps them, the scheduler fires each slot once."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
import pytest_asyncio

from services.reconcile import schedules
from services.reconcile.catalog import ensure_list
from services.reconcile.schedule_slots import Cadence, slot_request_id
from services.reconcile.scheduler import Scheduler
from shared.errors import PermanentError
from shared.kafka import Producer, ensure_topics
from shared.messages import AudienceExportRequest
from shared.metrics import RuntimeMetrics
from shared.settings import KafkaSettings
from tests.fixtures.bridge_db import Campaign
from tests.helpers import read_all
from tests.integration.test_cli import _cli

pytestmark = pytest.mark.integration


@dataclass
class Rig:
    campaign: Campaign
    producer: Producer
    topic: str
    bootstrap: str

    def scheduler(self) -> Scheduler:
        return Scheduler(self.campaign.pool, self.producer, requests_topic=self.topic)

    async def requests(self) -> list[AudienceExportRequest]:
        """Every request on the topic now (a tick returns once Kafka acknowledged what it sent)."""
        records = await read_all(self.bootstrap, self.topic)
        return [AudienceExportRequest.model_validate_json(r.value) for r in records]

    async def backdate(self, schedule_id: int, by: timedelta) -> None:
        """As if the schedule had been created (and last resumed) ``by`` ago."""
        await self.campaign.pool.execute(
            """UPDATE export_schedule SET created_at = created_at - $2::interval, anchor = anchor - $2::interval
                WHERE schedule_id = $1""",
            schedule_id,
            by,
        )


@pytest_asyncio.fixture
async def rig(campaign: Campaign, kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[Rig]:
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    topic = f"{topic_prefix}audience-export-requests"
    await ensure_topics(settings, [topic])
    producer = Producer(settings, "test", RuntimeMetrics("test"))
    await producer.start()
    async with campaign.pool.acquire() as conn:
        await ensure_list(conn, "weekly")
    yield Rig(campaign, producer, topic, kafka_bootstrap)
    await producer.stop()


def _hourly(audience: str = "Weekly") -> schedules.NewSchedule:
    return schedules.NewSchedule(
        list_ref="weekly",
        audience_name=audience,
        data_source="crm-ids",
        mode="mirror",
        cadence=Cadence(every_s=3600),
        created_by="alice",
    )


async def test_missed_slots_fire_once_whatever_the_replicas(rig: Rig) -> None:
    async with rig.campaign.pool.acquire() as conn:
        added = await schedules.add_schedule(conn, _hourly())
    assert await rig.scheduler().tick() == []  # created now: nothing due
    await rig.backdate(added.schedule_id, timedelta(hours=3, minutes=10))  # three slots missed meanwhile

    # Two replicas (and a third tick later): the latest slot is fired once.
    first, second = await asyncio.gather(rig.scheduler().tick(), rig.scheduler().tick())
    again = await rig.scheduler().tick()
    fired = first + second + again
    assert len(fired) == 1
    [(schedule_id, slot)] = fired
    assert (schedule_id, slot) == (added.schedule_id, added.created_at - timedelta(minutes=10))

    [request] = await rig.requests()
    assert request.request_id == slot_request_id(added.schedule_id, slot)
    assert (request.list_id, request.audience_name, request.data_source, request.mode) == (
        "weekly",
        "Weekly",
        "crm-ids",
        "mirror",
    )
    assert (request.requested_by, request.requested_via) == ("alice", "cli")
    async with rig.campaign.pool.acquire() as conn:
        after = await schedules.get_schedule(conn, added.schedule_id)
    assert after.last_slot == slot
    assert after.last_request_id == request.request_id
    assert after.next_run == slot + timedelta(hours=1)


async def test_a_paused_schedule_does_not_fire_and_resuming_skips_what_it_missed(rig: Rig) -> None:
    async with rig.campaign.pool.acquire() as conn:
        added = await schedules.add_schedule(conn, _hourly())
        await schedules.set_paused(conn, added.schedule_id, True)
    await rig.backdate(added.schedule_id, timedelta(hours=2, minutes=5))
    assert await rig.scheduler().tick() == []
    async with rig.campaign.pool.acquire() as conn:
        resumed = await schedules.set_paused(conn, added.schedule_id, False)
    assert await rig.scheduler().tick() == []
    assert resumed.next_run == added.created_at - timedelta(hours=2, minutes=5) + timedelta(hours=3)
    assert await rig.requests() == []


async def test_a_cron_schedule_fires_its_latest_slot(rig: Rig) -> None:
    new = _hourly("Cron")
    async with rig.campaign.pool.acquire() as conn:
        added = await schedules.add_schedule(
            conn,
            schedules.NewSchedule(
                new.list_ref, new.audience_name, new.data_source, "append", Cadence(cron="*/5 * * * *"), "bob"
            ),
        )
    await rig.backdate(added.schedule_id, timedelta(minutes=30))
    [(_, slot)] = await rig.scheduler().tick()
    now = await rig.campaign.pool.fetchval("SELECT now()")
    assert slot.minute % 5 == 0
    assert slot.second == 0
    assert now - timedelta(minutes=5) < slot <= now
    assert await rig.scheduler().tick() == []


async def test_bad_schedules_are_refused(rig: Rig) -> None:
    async with rig.campaign.pool.acquire() as conn:
        await schedules.add_schedule(conn, _hourly())
        with pytest.raises(PermanentError, match="has a schedule already"):
            await schedules.add_schedule(conn, _hourly())
        other = _hourly("Other")
        for bad, match in (
            (dataclasses.replace(other, list_ref="nope"), "unknown list"),
            (dataclasses.replace(other, data_source="nope"), "unknown data source"),
            (dataclasses.replace(other, mode="sometimes"), "mode must be"),
            (dataclasses.replace(other, audience_name="bad\nname"), "would be invalid"),
        ):
            with pytest.raises(PermanentError, match=match):
                await schedules.add_schedule(conn, bad)
        with pytest.raises(schedules.UnknownSchedule):
            await schedules.set_paused(conn, 999, True)
        with pytest.raises(schedules.UnknownSchedule):
            await schedules.remove_schedule(conn, 999)


async def test_the_schedule_commands(rig: Rig, database_url: str) -> None:
    env = {"DATABASE_URL": database_url}
    add = ["schedule", "add", "--list", "weekly", "--audience", "Weekly", "--data-source", "crm-ids", "--mode"]
    code, out = await _cli(env, *add, "mirror", "--every", "1h")
    assert code == 0, out
    assert "schedule 1: every 3600 s, next run" in out
    code, out = await _cli(env, *add[:5], "Cron", *add[6:], "append", "--cron", "0 */3 * * *")
    assert code == 0, out
    code, out = await _cli(env, "schedule", "list")
    assert code == 0, out
    assert "every 3600 s" in out
    assert "cron 0 */3 * * *" in out
    assert out.count("active") == 2

    code, out = await _cli(env, "schedule", "pause", "1")
    assert (code, out.strip()) == (0, "schedule 1 paused")
    assert await rig.campaign.pool.fetchval("SELECT paused FROM export_schedule WHERE schedule_id = 1")
    code, out = await _cli(env, "schedule", "resume", "1")
    assert code == 0, out
    assert "schedule 1 resumed: next run" in out
    code, out = await _cli(env, "schedule", "remove", "2")
    assert (code, out.strip()) == (0, "schedule 2 removed")
    assert await rig.campaign.pool.fetchval("SELECT count(*) FROM export_schedule") == 1

    refused = (
        ((*add, "mirror", "--every", "10s"), "--every must be at least 60 s"),
        ((*add, "mirror", "--cron", "61 * * * *"), "--cron is not a valid cron expression"),
        ((*add, "mirror"), "exactly one of --every and --cron"),
        ((*add, "mirror", "--every", "1h", "--cron", "0 * * * *"), "exactly one of --every and --cron"),
        (("schedule", "pause", "42"), "no schedule with this id"),
    )
    # Side by side: each CLI process spends seconds starting, and none of these changes anything.
    answers = await asyncio.gather(*(_cli(env, *args) for args, _ in refused))
    for (_, message), (code, out) in zip(refused, answers, strict=True):
        assert code == 2, out
        assert message in out
    assert await rig.campaign.pool.fetchval("SELECT count(*) FROM export_schedule") == 1


async def test_a_schedule_edited_into_nonsense_does_not_stop_the_others(rig: Rig) -> None:
    async with rig.campaign.pool.acquire() as conn:
        broken = await schedules.add_schedule(conn, _hourly("Broken"))
        fine = await schedules.add_schedule(conn, _hourly("Fine"))
        await conn.execute(
            "UPDATE export_schedule SET every_s = NULL, cron = '61 * * * *' WHERE schedule_id = $1",
            broken.schedule_id,
        )
    await rig.backdate(broken.schedule_id, timedelta(hours=2))
    await rig.backdate(fine.schedule_id, timedelta(hours=1, minutes=1))
    fired = await rig.scheduler().tick()
    assert [schedule_id for schedule_id, _ in fired] == [fine.schedule_id]
