"""The demo's dry run and schedule (services/cli/demo_preview.py) against real Postgres and Kafka, with the
demo's own catalog: the dry run matches the export that follows it, and the export is scheduled daily."""

from __future__ import annotations

import dataclasses

import pytest

from services.cli import demo_preview
from services.cli.demo_setup import CATALOG, EXPORT_AUDIENCE, TARGETED_LIST
from services.reconcile.catalog import apply_catalog
from services.reconcile.exporting import Exporter
from shared.messages import AudienceExportRequest
from tests.fixtures.export_rig import ExportRig, rig  # noqa: F401

pytestmark = pytest.mark.integration


async def test_the_demo_previews_its_export_and_schedules_it(rig: ExportRig) -> None:  # noqa: F811
    pool = rig.campaign.pool
    async with pool.acquire() as conn:
        await apply_catalog(conn, CATALOG)
    await rig.make_list(TARGETED_LIST, range(1, 51))
    request = AudienceExportRequest(
        list_id=TARGETED_LIST,
        audience_name=EXPORT_AUDIENCE,
        data_source="hashed-emails",
        mode="mirror",
        requested_by="demo",
    )
    # The reconcile the demo talks to: undeclared exports refused, as by default.
    exporter = Exporter(pool, rig.producer, batches_topic=rig.topic, reporter=rig.reporter, batch_size=40)
    since = await pool.fetchval("SELECT now()")
    async with pool.acquire() as conn:
        preview = await demo_preview.preview(conn, request)
        assert (preview.verdict, preview.to_add, preview.to_remove) == ("would_run", 50, 0)
        first = await demo_preview.schedule_daily(conn, request)
        schedule = await demo_preview.schedule_daily(conn, request)  # a second demo replaces the first's
        assert await conn.fetchval("SELECT count(*) FROM export_schedule") == 1
        assert schedule.schedule_id != first.schedule_id
        assert (schedule.created_by, schedule.created_via, schedule.cadence.cron) == ("demo", "kafka", "0 6 * * *")

    await exporter.export(request)
    async with pool.acquire() as conn:
        checks = await demo_preview.checks(conn, preview, schedule, since)
    assert [(title, ok) for title, ok, _ in checks] == [
        ("the dry run showed the export before it ran", True),
        ("the export is scheduled daily", True),
    ]
    assert "dry run: 50 to add, 0 to remove (would_run); the export added 50, removed 0" in checks[0][2]

    # A dry run that disagreed with the export is a failed check.
    wrong = dataclasses.replace(preview, to_add=49)
    async with pool.acquire() as conn:
        assert not (await demo_preview.checks(conn, wrong, schedule, since))[0][1]
        assert not (await demo_preview.checks(conn, None, None, since))[0][1]
