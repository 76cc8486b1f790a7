"""Audience insights and the per-audience alert gauges, end to end: a real reconcile applies import runs from
the real broker into a fresh database; headless Chromium (Debian's ``chromium``) loads the insights pages,
and every figure they show equals what the test computes itself from the database (sizes after each run,
match rates per ID type, unmatched IDs, overlaps as Python set intersections of the rows); ``/metrics``
carries the same last and previous values for the alerts (deploy/prometheus/alerts.yml).
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
import yaml

from shared.kafka import OutgoingMessage, Producer
from shared.metrics import RuntimeMetrics
from shared.settings import KafkaSettings
from tests.e2e.test_status_page import _Dom, chromium, chromium_binary, membership, metric_values, png_summary
from tests.fixtures.bridge_db import Campaign, add_export_run, add_import_audience, ecid_of, hashed_email_of
from tests.fixtures.stack import StartService, start_service  # noqa: F401
from tests.helpers import eventually
from tests.unit.test_prometheus_rules import ALERTS, promtool

pytestmark = pytest.mark.e2e

VISITORS = {"audience": "visitors-6001", "data_source": "visitors", "id_type": "ecid"}
EMAILS = {"audience": "emails-6002", "data_source": "hashed-emails", "id_type": "declared"}


@dataclass(frozen=True)
class AppliedRun:
    run_id: str
    counts: dict[str, int]
    match_rate: dict[str, float]


async def applied_runs(pool: asyncpg.Pool, audience_id: str) -> list[AppliedRun]:
    rows = await pool.fetch(
        """SELECT run_id, counts, match_rate FROM run WHERE audience_id = $1 AND state IN ('succeeded', 'partial')
            ORDER BY started_at, run_id""",
        audience_id,
    )
    return [
        AppliedRun(
            str(r["run_id"]), orjson.loads(r["counts"]), orjson.loads(r["match_rate"]) if r["match_rate"] else {}
        )
        for r in rows
    ]


def sizes_after(runs: list[AppliedRun], size_now: int) -> list[int]:
    """Walking back from today's size: each run's size is the next one's minus that next run's net change."""
    sizes = [size_now]
    for run in reversed(runs[1:]):
        sizes.append(sizes[-1] - run.counts.get("added", 0) + run.counts.get("removed", 0))
    return list(reversed(sizes))


def state_of(pool: asyncpg.Pool, run_id: uuid.UUID) -> Callable[[], Awaitable[str | None]]:
    async def probe() -> str | None:
        state: str | None = await pool.fetchval("SELECT state FROM run WHERE run_id = $1", run_id)
        return state

    return probe


def firing_alerts(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], tmp_path: Path) -> set[tuple[str, str]]:
    """The per-audience alerts deploy/prometheus/alerts.yml fires on these scraped ``ab_audience_*`` samples:
    promtool evaluates the rules on them and counts the firing ``ALERTS`` of each (alert, audience)."""
    series = [
        {
            "series": name + "{" + ",".join(f'{k}="{v}"' for k, v in (*labels, ("job", "reconcile"))) + "}",
            "values": f"{value}x5",
        }
        for (name, labels), value in values.items()
        if name.startswith("ab_audience_")
    ]
    firing = set()
    for alert in ("AudienceBridgeMatchRateDropped", "AudienceBridgeAudienceSizeChanged"):
        for audience in ("visitors-6001", "emails-6002", "exp-visitors"):
            selector = f'ALERTS{{alertstate="firing",alertname="{alert}",audience_id="{audience}"}}'
            expr_test: dict[str, object] = {"expr": f"count({selector}) or vector(0)", "eval_time": "2m"}
            case = {"interval": "1m", "input_series": series, "promql_expr_test": [expr_test]}
            for count in (0, 1):
                expr_test["exp_samples"] = [{"labels": "{}", "value": count}]
                (tmp_path / "case.yml").write_text(
                    yaml.safe_dump({"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": [case]})
                )
                done = subprocess.run([promtool(), "test", "rules", "case.yml"], capture_output=True, cwd=tmp_path)
                if done.returncode == 0:
                    if count:
                        firing.add((alert, audience))
                    break
            else:
                pytest.fail(f"promtool answered neither 0 nor 1 for {selector}: {done.stdout!r} {done.stderr!r}")
    return firing


async def page(browser: str, tmp_path: Path, url: str) -> _Dom:
    dom = _Dom()
    dom.feed((await chromium(browser, tmp_path / "profile", "--dump-dom", url)).decode())
    assert not [a for t, a in dom.tags if t == "script"], "a script element made it into the page"
    return dom


async def test_insights_in_chromium_and_audience_gauges(
    campaign: Campaign,
    start_service: StartService,  # noqa: F811
    database_url: str,
    topic_prefix: str,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    browser = chromium_binary()
    pool = campaign.pool
    await add_import_audience(pool, "visitors-6001", "visitors", 6001)
    await add_import_audience(pool, "emails-6002", "hashed-emails", 6002)
    reconcile = await start_service(
        "reconcile",
        env={"TOPIC_PREFIX": topic_prefix, "DATABASE_URL": database_url, "AUDIENCE_GAUGES_REFRESH_S": "0.5"},
    )
    first, second, emails = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    producer = Producer(KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap), "test", RuntimeMetrics("test"))
    try:
        # 40 known visitors and 2 unknown ECIDs; then a delta: 10 known and 8 unknown added, 5 removed.
        full = membership(
            first, 0, last=True, mode="full", adds=[ecid_of(i) for i in range(1, 41)] + ["8" * 38, "9" * 38], **VISITORS
        )
        unknown = [str(10**37 * 7 + i) for i in range(8)]
        delta = membership(
            second,
            0,
            last=True,
            mode="delta",
            adds=[ecid_of(i) for i in range(41, 51)] + unknown,
            removes=[ecid_of(i) for i in range(1, 6)],
            **VISITORS,
        )
        by_email = membership(
            emails, 0, last=True, mode="delta", adds=[hashed_email_of(i) for i in range(30, 61)], **EMAILS
        )
        for batch, run_id in ((full, first), (delta, second), (by_email, emails)):
            await producer.send([OutgoingMessage.of(f"{topic_prefix}audience-membership", batch)])
            await eventually(state_of(pool, run_id), until=lambda s: s == "succeeded", timeout=30)
    finally:
        await producer.stop()

    # An exported audience of the visitors data source, as publish leaves it: 20 of the list's ECIDs and 5 others.
    export_run = await add_export_run(pool, audience_id="exp-visitors", data_source="visitors")
    shared = [ecid_of(i) for i in range(1, 21)] + [str(10**37 * 6 + i) for i in range(5)]
    await pool.executemany(
        "INSERT INTO exported_member (audience_id, id, run_id) VALUES ('exp-visitors', $1, $2)",
        [(i, export_run) for i in shared],
    )
    await pool.execute(
        """UPDATE run SET state = 'succeeded', finished_at = now(), counts = counts || '{"added": 25}'::jsonb
            WHERE run_id = $1""",
        export_run,
    )

    # What the test computes itself: the lists' members, sizes after each run, rates, unmatched IDs.
    list_ids = {
        r["name"]: r["list_id"]
        for r in await pool.fetch(
            "SELECT list_id, name FROM list WHERE name IN ('List visitors-6001', 'List emails-6002')"
        )
    }
    members = {
        name: {
            r["recipient_id"] for r in await pool.fetch("SELECT recipient_id FROM list_member WHERE list_id = $1", lid)
        }
        for name, lid in list_ids.items()
    }
    runs = await applied_runs(pool, "visitors-6001")
    assert [r.run_id for r in runs] == [str(first), str(second)]
    sizes = sizes_after(runs, len(members["List visitors-6001"]))
    assert sizes == [40, 45]

    # /metrics: the last and previous values the alerts compare.
    async def gauges() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = await reconcile.get("/metrics")
        assert status == 200
        return metric_values(text)

    def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return (name, tuple(sorted(labels.items())))

    values = await eventually(
        gauges, until=lambda v: key("ab_audience_size", direction="export", audience_id="exp-visitors") in v, timeout=30
    )
    assert values[key("ab_audience_size", direction="import", audience_id="visitors-6001")] == 45
    assert values[key("ab_audience_previous_size", direction="import", audience_id="visitors-6001")] == 40
    assert values[key("ab_audience_size", direction="export", audience_id="exp-visitors")] == 25
    assert values[key("ab_audience_previous_size", direction="export", audience_id="exp-visitors")] == 0
    rates = [r.match_rate for r in runs]
    assert values[key("ab_audience_match_rate", audience_id="visitors-6001", id_type="ecid")] == rates[1]["ecid"]
    assert (
        values[key("ab_audience_previous_match_rate", audience_id="visitors-6001", id_type="ecid")] == rates[0]["ecid"]
    )

    # The alerts on those gauges, as scraped from the real process: only the visitors' match rate fell by more
    # than 20 % (sizes 40 -> 45, +12.5 %; the other audiences have no previous run worth comparing).
    assert (rates[0]["ecid"] - rates[1]["ecid"]) / rates[0]["ecid"] > 0.2
    firing = firing_alerts(values, tmp_path)
    assert firing == {("AudienceBridgeMatchRateDropped", "visitors-6001")}

    # One audience's history, in Chromium.
    dom = await page(browser, tmp_path, reconcile.url + "/insights?audience=visitors-6001")
    rows = [a for t, a in dom.tags if t == "tr" and a.get("data-run")]
    assert [a["data-run"] for a in rows] == [str(second), str(first)]  # newest first
    assert [int(str(a["data-size"])) for t, a in dom.tags if t == "td" and "data-size" in a] == sizes[::-1]
    shown_unmatched = [int(str(a["data-unmatched"])) for t, a in dom.tags if t == "td" and "data-unmatched" in a]
    assert shown_unmatched == [r.counts.get("unmatched", 0) for r in reversed(runs)] == [8, 2]
    shown_rates = [float(str(a["data-value"])) for t, a in dom.tags if t == "td" and a.get("data-rate") == "ecid"]
    assert shown_rates == [r.match_rate["ecid"] for r in reversed(runs)]
    size_points = [float(str(a["data-value"])) for t, a in dom.tags if t == "circle" and a.get("data-series") == "size"]
    assert size_points == sizes
    unmatched_points = [a for t, a in dom.tags if t == "circle" and a.get("data-series") == "unmatched IDs"]
    assert [float(str(a["data-value"])) for a in unmatched_points] == [2, 8]
    for chart in ("size-chart", "match-rate-chart", "unmatched-chart"):
        assert any(t == "svg" and a.get("id") == chart for t, a in dom.tags), chart

    screenshot = tmp_path / "insights.png"
    await chromium(
        browser,
        tmp_path / "profile",
        f"--screenshot={screenshot}",
        "--window-size=1280,1200",
        reconcile.url + "/insights?audience=visitors-6001",
    )
    width, height, distinct = png_summary(screenshot.read_bytes())
    assert (width, height) == (1280, 1200)
    assert distinct > 64, "the screenshot is (almost) blank"

    # The overlap of two lists: recipients in both, as a set intersection of the rows.
    a, b = members["List visitors-6001"], members["List emails-6002"]
    dom = await page(browser, tmp_path, reconcile.url + "/insights/overlap?a=List+visitors-6001&b=List+emails-6002")
    cells = _overlap_cells(dom)
    assert cells == {"a": len(a), "b": len(b), "both": len(a & b), "only-a": len(a - b), "only-b": len(b - a)}
    assert cells["both"] == 21  # recipients 30..50

    # A list against an exported audience: the list's ECIDs (recipient 2 has two) against the IDs shared.
    list_ecids = {
        r["ecid"]
        for r in await pool.fetch(
            "SELECT v.ecid FROM list_member lm JOIN visitor_link v USING (recipient_id) WHERE lm.list_id = $1",
            list_ids["List visitors-6001"],
        )
    }
    dom = await page(browser, tmp_path, reconcile.url + "/insights/overlap?a=List+visitors-6001&audience=exp-visitors")
    cells = _overlap_cells(dom)
    assert cells["a"] == len(list_ecids)
    assert cells["b"] == len(set(shared))
    assert cells["both"] == len(list_ecids & set(shared)) == 15  # recipients 6..20

    # The index lists every audience; bad or unknown references are refused plainly.
    dom = await page(browser, tmp_path, reconcile.url + "/insights")
    listed = {a["data-audience"] for t, a in dom.tags if t == "tr" and a.get("data-audience")}
    assert listed == {"visitors-6001", "emails-6002", "exp-visitors"}
    assert (await reconcile.get("/insights/overlap?a=List+visitors-6001"))[0] == 400
    assert (await reconcile.get("/insights/overlap?a=nope&b=List+emails-6002"))[0] == 404
    assert (await reconcile.get("/insights/overlap?a=List+visitors-6001&audience=nope"))[0] == 404
    assert (await reconcile.get("/insights?audience=nope"))[0] == 404


def _overlap_cells(dom: _Dom) -> dict[str, int]:
    """The overlap table's figures (each cell's ``data-count``); the text shows the same, formatted."""
    cells = {
        str(a["data-overlap"]): int(str(a["data-count"])) for t, a in dom.tags if t == "td" and "data-overlap" in a
    }
    text = "".join(dom.text)
    for n in cells.values():
        assert f"{n:,}" in text
    return cells


async def test_insights_need_the_page_credential(
    start_service: StartService,  # noqa: F811
    topic_prefix: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    """The insights are behind the status page's credentials, and their form may submit only to the page."""
    token = "e2e-insights-token-0123456789"
    credentials = tmp_path / "page-credentials"
    credentials.write_text(f"token:dashboards:{token}\n")
    reconcile = await start_service(
        "reconcile",
        env={
            "TOPIC_PREFIX": topic_prefix,
            "DATABASE_URL": database_url,
            "STATUS_PAGE_CREDENTIALS_FILE": str(credentials),
        },
    )
    async with aiohttp.ClientSession() as session:
        for path in ("/insights", "/insights?audience=x", "/insights/overlap?a=x&b=y"):
            async with session.get(reconcile.url + path) as resp:
                assert resp.status == 401, path
                assert "Audience Bridge" not in await resp.text()
        async with session.get(reconcile.url + "/insights", headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200
            assert "Audience Bridge · insights" in await resp.text()
            csp = resp.headers["Content-Security-Policy"]
            assert "form-action 'self'" in csp
            assert "script-src" not in csp
            assert "default-src 'none'" in csp
