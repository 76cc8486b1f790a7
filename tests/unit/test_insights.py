"""Audience insights' pure parts: the alert gauges' values from a history, the charts and pages (escaping)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, generate_latest

from services.reconcile.audience_gauges import AudienceGauges, audience_values
from services.reconcile.insights_chart import Series, line_chart
from services.reconcile.insights_page import render_audience, render_index, render_overlap
from services.reconcile.insights_queries import AudienceRef, Overlap, RunPoint

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOSTILE = "<script>alert(1)</script>"


def point(n: int, size: int, added: int, removed: int, rates: dict[str, float], unmatched: int = 0) -> RunPoint:
    at = T0 + timedelta(hours=n)
    return RunPoint(f"run-{n}", at, at, size, added, removed, unmatched, 100, rates)


def test_gauge_values_are_the_last_run_and_the_size_before_it() -> None:
    points = [point(0, 100, 100, 0, {"ecid": 0.9}), point(1, 60, 10, 50, {"declared": 0.5}), point(2, 70, 10, 0, {})]
    values = audience_values("import", points)
    assert (values.size, values.previous_size) == (70, 60)
    # Per ID type, the last two runs that rated it (a run of another type, or without a rate, is skipped).
    assert values.match_rate == {"declared": 0.5, "ecid": 0.9}
    assert values.previous_match_rate == {}
    more = audience_values("import", [*points, point(3, 70, 0, 0, {"ecid": 0.6})])
    assert (more.match_rate["ecid"], more.previous_match_rate["ecid"]) == (0.6, 0.9)


def test_gauge_values_without_runs_say_nothing() -> None:
    values = audience_values("export", [])
    assert (values.size, values.previous_size, values.match_rate) == (None, None, {})


def test_gauges_swap_replaces_every_series() -> None:
    registry = CollectorRegistry()
    gauges = AudienceGauges(registry)
    gauges.swap({"gone": audience_values("import", [point(0, 5, 5, 0, {"ecid": 0.5})])})
    gauges.swap({"kept": audience_values("export", [point(0, 8, 8, 0, {})])})
    text = generate_latest(registry).decode()
    assert 'ab_audience_size{audience_id="kept",direction="export"} 8.0' in text
    assert 'ab_audience_previous_size{audience_id="kept",direction="export"} 0.0' in text
    assert "gone" not in text


def test_line_chart_points_carry_exact_values_and_escape_names() -> None:
    svg = line_chart("c", [T0, T0 + timedelta(hours=1)], [Series(HOSTILE, [3, None])], str)
    assert HOSTILE not in svg
    assert 'data-value="3"' in svg
    assert svg.count("<circle") == 1  # the run without a value is skipped
    assert "No applied run yet" in line_chart("c", [], [Series("s", [])], str)


def test_pages_escape_database_text() -> None:
    ref = AudienceRef("a-1", HOSTILE, "import", 1, HOSTILE)
    for html in (
        render_index([ref]),
        render_audience(ref, [point(0, 10, 10, 0, {"ecid": 0.25}, unmatched=3)]),
        render_overlap(Overlap(HOSTILE, "b", "recipients", 10, 4, 3), HOSTILE, "b", ""),
    ):
        assert HOSTILE not in html
        assert "&lt;script&gt;" in html
    page = render_audience(ref, [point(0, 10, 10, 0, {"ecid": 0.25}, unmatched=3)])
    for shown in ('data-size="10"', 'data-unmatched="3"', 'data-value="0.25"'):
        assert shown in page


def test_overlap_counts_each_side() -> None:
    html = render_overlap(Overlap("x", "y", "IDs", 10, 4, 3), "x", "y", "")
    for key, n in (("a", 10), ("b", 4), ("both", 3), ("only-a", 7), ("only-b", 1)):
        assert f'data-overlap="{key}" data-count="{n}"' in html
