"""The status page's schedules section: each schedule's last and next run, escaped, and the same in the JSON."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.reconcile.schedule_slots import Cadence
from services.reconcile.schedules import Schedule
from services.reconcile.status_json import snapshot_json
from services.reconcile.status_page import render_page
from services.reconcile.status_queries import StatusSnapshot

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def _schedule(schedule_id: int, **changes: object) -> Schedule:
    values: dict[str, object] = {
        "schedule_id": schedule_id,
        "list_ref": "weekly",
        "audience_name": "<b>VIP</b>",
        "data_source": "crm-ids",
        "mode": "mirror",
        "cadence": Cadence(every_s=3600),
        "paused": False,
        "created_by": "alice",
        "created_via": "cli",
        "created_at": T0,
        "anchor": T0,
        "last_slot": T0 + timedelta(hours=2),
        "last_fired_at": T0 + timedelta(hours=2, seconds=3),
        "last_request_id": uuid.uuid4(),
    }
    values.update(changes)
    return Schedule(**values)  # type: ignore[arg-type]


def test_each_schedule_shows_its_last_and_next_run() -> None:
    snapshot = StatusSnapshot(
        generated_at=T0 + timedelta(hours=2, minutes=5),
        schedules=(
            _schedule(1),
            _schedule(2, cadence=Cadence(cron="0 */3 * * *"), last_slot=None, last_fired_at=None),
            _schedule(3, paused=True),
        ),
    )
    page = render_page(snapshot)
    section = page.split('<section id="schedules">', 1)[1].split("</section>", 1)[0]
    rows = section.split('<tr class="schedule"')[1:]
    assert len(rows) == 3
    assert 'class="t last-run">2026-03-01 12:00:03<' in rows[0]
    assert 'class="t next-run">2026-03-01 13:00:00<' in rows[0]
    assert 'class="t last-run">never<' in rows[1]
    assert 'class="t next-run">2026-03-01 12:00:00<' in rows[1]
    assert "cron 0 */3 * * * (UTC)" in rows[1]
    assert 'data-paused="true"' in rows[2]
    assert 'class="t next-run">-<' in rows[2]
    assert "<b>VIP</b>" not in page
    assert "&lt;b&gt;VIP&lt;/b&gt;" in section

    shown = snapshot_json(snapshot)["schedules"]
    assert shown[0]["last_run_at"] == "2026-03-01T12:00:03+00:00"
    assert shown[0]["next_run_at"] == "2026-03-01T13:00:00+00:00"
    assert shown[2]["next_run_at"] is None


def test_no_schedule_says_how_to_add_one() -> None:
    page = render_page(StatusSnapshot(generated_at=T0))
    assert "No export schedule" in page
    assert "audience-bridge schedule add" in page
