"""The status page's renderer: a pure function of a snapshot. Escaping, the chart, the empty state, JSON."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import orjson
import pytest

from services.reconcile.status_chart import nice_ceiling, render_chart
from services.reconcile.status_json import snapshot_json
from services.reconcile.status_page import fmt_duration, render_page
from services.reconcile.status_queries import AudienceRow, RunRow, StatusSnapshot, UnmatchedRow

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
HOSTILE = "<script>alert(1)</script>"
HOSTILE_ATTR = '" onmouseover="alert(2)" x=\''


def run(
    i: int,
    *,
    direction: str = "import",
    state: str = "succeeded",
    counts: Mapping[str, int] | None = None,
    name: str | None = None,
    reason: str | None = None,
    match_rate: float | None = None,
) -> RunRow:
    started = NOW - timedelta(minutes=100 - i)
    return RunRow(
        run_id=uuid.UUID(int=i + 1),
        direction=direction,
        audience_id=f"aud-{i}",
        audience_name=name if name is not None else f"Audience {i}",
        mode="full",
        state=state,
        counts=counts if counts is not None else {"received": 100 * (i + 1), "matched": 80 * (i + 1), "invalid": 0},
        match_rate=match_rate,
        reason=reason,
        started_at=started,
        updated_at=started + timedelta(seconds=30),
        finished_at=started + timedelta(seconds=12.5) if state in ("succeeded", "failed") else None,
    )


class _Elements(HTMLParser):
    """Every start tag with its attributes; fails on nothing, records everything."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def elements(markup: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Elements()
    parser.feed(markup)
    parser.close()
    return parser.tags


def with_class(markup: str, tag: str, cls: str) -> list[dict[str, str | None]]:
    return [a for t, a in elements(markup) if t == tag and cls in (a.get("class") or "").split()]


def test_hostile_names_reasons_and_ids_are_escaped_everywhere() -> None:
    hostile_run = run(1, name=HOSTILE, reason=HOSTILE_ATTR + HOSTILE, state="blocked")
    snapshot = StatusSnapshot(
        generated_at=NOW,
        audiences=[
            AudienceRow(
                audience_id=HOSTILE_ATTR,
                name=HOSTILE,
                direction="import",
                data_source=HOSTILE,
                id_type="ecid",
                list_id=1,
                list_name=HOSTILE,
                list_size=3,
                export_mode=None,
                platform_segment_id=5001,
                last_state="blocked",
                last_started_at=NOW,
            )
        ],
        runs=[hostile_run],
        blocked=[hostile_run],
        unmatched=[UnmatchedRow(HOSTILE_ATTR, HOSTILE, "unknown_ecid", 2, NOW)],
    )
    page = render_page(snapshot)
    assert "<script" not in page.lower()
    assert "onmouseover=" not in page.replace("&quot; onmouseover=&quot;", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # No element anywhere carries an event handler attribute, and no script element exists.
    for tag, attrs in elements(page):
        assert tag != "script"
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
    # The attribute-breaking id stays inside its attribute.
    audience_rows = with_class(page, "tr", "audience")
    assert [a["data-audience-id"] for a in audience_rows] == [HOSTILE_ATTR]


def test_blocked_runs_show_the_release_command() -> None:
    blocked = run(3, state="blocked", reason="full snapshot would remove 90 of 100 list members")
    page = render_page(StatusSnapshot(generated_at=NOW, runs=[blocked], blocked=[blocked]))
    assert f"audience-bridge release {blocked.run_id}" in page
    assert 'id="blocked"' in page
    assert "would remove 90 of 100" in page
    assert 'id="blocked"' not in render_page(StatusSnapshot(generated_at=NOW, runs=[run(1)]))


def test_empty_state() -> None:
    page = render_page(StatusSnapshot(generated_at=NOW))
    assert "No runs yet" in page
    assert 'id="runs-empty"' in page
    assert 'id="audiences-empty"' in page
    assert 'id="unmatched-empty"' in page
    chart = render_chart([])
    assert with_class(chart, "rect", "bar") == []
    assert with_class(chart, "circle", "point") == []
    assert "No runs yet" in chart


def test_chart_with_one_run() -> None:
    only = run(0, match_rate=0.8)
    chart = render_chart([only])
    bars = with_class(chart, "rect", "bar")
    assert [b["data-run-id"] for b in bars] == [str(only.run_id)]
    points = with_class(chart, "circle", "point")
    assert len(points) == 1
    assert "polyline" not in chart  # a line needs two points
    bar = bars[0]
    assert float(bar["height"] or 0) > 100  # the tallest bar fills the plot
    assert float(bar["width"] or 0) <= 36  # one run is not a slab across the chart


@pytest.mark.parametrize("n", [2, 7, 40])
def test_chart_has_one_bar_per_run_and_a_point_per_rate(n: int) -> None:
    runs = [run(i) for i in range(n)]
    runs.append(run(n, direction="export", counts={"received": 0, "excluded": 0}))  # no rate: no point
    chart = render_chart(runs)
    bars = with_class(chart, "rect", "bar")
    assert [b["data-run-id"] for b in bars] == [str(r.run_id) for r in runs]
    assert all(float(b["height"] or 0) >= 1 for b in bars)  # even an empty run is visible
    xs = [float(b["x"] or 0) for b in bars]
    assert xs == sorted(xs)  # in the order given (oldest first)
    points = with_class(chart, "circle", "point")
    assert [p["data-run-id"] for p in points] == [str(r.run_id) for r in runs[:-1]]
    # Volumes scale: a run with twice the IDs has a bar twice as tall.
    heights = {b["data-run-id"]: float(b["height"] or 0) for b in bars}
    assert heights[str(runs[1].run_id)] == pytest.approx(2 * heights[str(runs[0].run_id)], rel=0.02)


def test_rates_and_durations() -> None:
    imported = run(1, counts={"received": 110, "invalid": 10, "matched": 75})
    assert imported.rate == pytest.approx(0.75)
    assert run(1, match_rate=0.5).rate == 0.5  # the stored rate wins
    exported = run(2, direction="export", counts={"received": 200, "excluded": 50})
    assert exported.rate == pytest.approx(0.75)
    assert run(3, direction="export", counts={}).rate is None
    assert imported.duration_s(NOW) == pytest.approx(12.5)
    running = run(4, state="progress")
    assert running.duration_s(NOW) == pytest.approx((NOW - running.started_at).total_seconds())
    assert fmt_duration(0.25) == "0.2 s"
    assert fmt_duration(125) == "2 min 05 s"
    assert fmt_duration(7380) == "2 h 03 min"


@pytest.mark.parametrize(
    ("peak", "axis"), [(0, 1), (1, 1), (3, 3), (52, 60), (100, 100), (101, 120), (1234, 1600), (9_100_000, 1e7)]
)
def test_volume_axis_ends_on_a_round_number(peak: float, axis: float) -> None:
    assert nice_ceiling(peak) == pytest.approx(axis)


def test_page_lists_runs_audiences_and_unmatched() -> None:
    runs = [run(i) for i in range(5)]
    snapshot = StatusSnapshot(
        generated_at=NOW,
        audiences=[
            AudienceRow(
                "aud-1", "Visitors", "import", "visitors", "ecid", 7, "List visitors", 12_345, None, 5001, None, None
            )
        ],
        runs=list(reversed(runs)),
        unmatched=[
            UnmatchedRow("aud-1", "Visitors", "unknown_ecid", 1200, NOW),
            UnmatchedRow("aud-1", "Visitors", "invalid_format", 3, NOW),
        ],
        totals={"runs": 5, "running": 0, "failed": 0},
    )
    page = render_page(snapshot)
    assert len(with_class(page, "tr", "run")) == 5
    assert "12,345" in page
    assert "List visitors" in page
    assert re.search(r"unknown_ecid: <b>1,200</b>", page)
    # The chart shows the runs oldest first, whatever order the table has.
    bars = with_class(page, "rect", "bar")
    assert [b["data-run-id"] for b in bars] == [str(r.run_id) for r in runs]


def test_snapshot_json_is_serialisable_and_complete() -> None:
    blocked = run(1, state="blocked", name=HOSTILE)
    body = orjson.loads(
        orjson.dumps(snapshot_json(StatusSnapshot(generated_at=NOW, runs=[blocked], blocked=[blocked])))
    )
    assert body["runs"][0]["audience_name"] == HOSTILE  # JSON carries the data as is; escaping is the page's job
    assert body["blocked"][0]["release_command"] == f"audience-bridge release {blocked.run_id}"
    assert body["runs"][0]["duration_s"] == 30.0
