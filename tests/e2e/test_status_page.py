"""The status page and reconcile's metrics, end to end, seen through a real headless Chromium.

A real reconcile process consumes membership batches and an export request from the real broker into a
fresh database: two import runs that succeed, one full snapshot held back by the guards, one export
run. Then ``/metrics`` shows what was counted, and Chromium (Debian's ``chromium``, driven from the
command line: no extra dependency, no browser download) loads the page: it shows the runs, the blocked
run with its release command, a chart with one bar per run, and a hostile audience name as plain text.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
import uuid
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.kafka import OutgoingMessage, Producer
from shared.messages import AudienceExportRequest, AudienceMembership, Message
from shared.metrics import RuntimeMetrics
from shared.settings import REPO_ROOT, KafkaSettings
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of, hashed_email_of
from tests.fixtures.stack import StartService, start_service  # noqa: F401
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

HOSTILE = "<script>alert(1)</script>"
BROWSER_SCRIPT = REPO_ROOT / "deploy" / "local" / "browser.sh"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # tests may run as root (CI containers), where the sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-proxy-server",  # the page is on 127.0.0.1: never route it through an environment proxy
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_binary() -> str:
    """Chromium's path, installed by deploy/local/browser.sh when missing; skips only if that cannot work."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    result = subprocess.run([str(BROWSER_SCRIPT), "install"], capture_output=True, text=True, timeout=600)
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if result.returncode != 0 or not found:
        pytest.skip(f"headless Chromium could not be installed by {BROWSER_SCRIPT}: {result.stderr.strip()[-500:]}")
    return found


async def chromium(binary: str, profile: Path, *args: str) -> bytes:
    """Run headless Chromium once; its stdout (``--dump-dom``) or nothing (``--screenshot``)."""
    process = await asyncio.create_subprocess_exec(
        binary,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, f"chromium exited with {process.returncode}: {stderr.decode()[-2000:]}"
    return stdout


class _Dom(HTMLParser):
    """Start tags with attributes, and the document's text, from Chromium's serialised DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def having(self, tag: str, cls: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and cls in (a.get("class") or "").split()]


def png_summary(data: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values of the decoded pixel rows) of a PNG, with the stdlib only."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


def membership(run_id: uuid.UUID, seq: int, *, last: bool, audience: str, **fields: object) -> AudienceMembership:
    return AudienceMembership.model_validate(
        {"run_id": run_id, "seq": seq, "last": last, "audience_id": audience, **fields}
    )


async def run_states(pool: asyncpg.Pool) -> dict[uuid.UUID, str]:
    return {r["run_id"]: r["state"] for r in await pool.fetch("SELECT run_id, state FROM run")}


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


async def test_status_page_in_chromium_and_reconcile_metrics(
    campaign: Campaign,
    start_service: StartService,  # noqa: F811
    database_url: str,
    topic_prefix: str,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    browser = chromium_binary()
    pool = campaign.pool
    await add_import_audience(pool, "visitors-5001", "visitors", 5001)
    await add_import_audience(pool, "emails-5002", "hashed-emails", 5002)
    # Audience names are user input (the platform's segment names): the page must show this as text.
    await pool.execute("UPDATE shared_audience SET name = $1 WHERE audience_id = 'visitors-5001'", HOSTILE)
    reconcile = await start_service(
        "reconcile",
        env={"TOPIC_PREFIX": topic_prefix, "DATABASE_URL": database_url, "FULL_IMPORT_GUARD_MIN_LIST_SIZE": "10"},
    )

    full, delta, shrink = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    visitors = {"audience": "visitors-5001", "data_source": "visitors", "id_type": "ecid"}
    emails = {"audience": "emails-5002", "data_source": "hashed-emails", "id_type": "declared"}
    batches: list[Message] = [
        # A full snapshot in two batches: 50 known visitors, one unknown ECID, one malformed (37 digits).
        membership(
            full, 0, last=False, mode="full", adds=[ecid_of(i) for i in range(1, 31)] + ["8" * 38, "7" * 37], **visitors
        ),
        membership(full, 1, last=True, mode="full", adds=[ecid_of(i) for i in range(31, 51)], **visitors),
        membership(
            delta, 0, last=True, mode="delta", adds=[hashed_email_of(i) for i in range(100, 131)] + ["e" * 64], **emails
        ),
        # Would remove 45 of the 50 members: held back for an operator (same key, so it comes after `full`).
        membership(shrink, 0, last=True, mode="full", adds=[ecid_of(i) for i in range(1, 6)], **visitors),
    ]
    producer = Producer(KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap), "test", RuntimeMetrics("test"))
    try:
        await producer.send([OutgoingMessage.of(f"{topic_prefix}audience-membership", b) for b in batches])
        expected = {full: "succeeded", delta: "succeeded", shrink: "blocked"}
        await eventually(
            lambda: run_states(pool), until=lambda s: all(s.get(r) == st for r, st in expected.items()), timeout=30
        )
        # Three list members lose their visitor link: an export to the visitors data source excludes them.
        await pool.execute("DELETE FROM visitor_link WHERE recipient_id IN (48, 49, 50)")
        request = AudienceExportRequest(
            list_id="List visitors-5001", audience_name="Visitors again", data_source="visitors", requested_by="test"
        )
        await producer.send([OutgoingMessage.of(f"{topic_prefix}audience-export-requests", request)])
        await eventually(lambda: run_states(pool), until=lambda s: len(s) == 4, timeout=30)
    finally:
        await producer.stop()

    # Metrics, from the real process: counted where the counts were computed.
    # A run is counted once its status event is sent, after its commit: looked at until the last is.
    def imports(values: dict[Any, float], state: str) -> float | None:
        return values.get(("ab_runs_total", (("direction", "import"), ("state", state))))

    def counted(values: dict[Any, float]) -> bool:
        return imports(values, "succeeded") == 2 and imports(values, "blocked") == 1

    async def page() -> dict[Any, float]:
        status, text = await reconcile.get("/metrics")
        assert status == 200
        return metric_values(text)

    values = await eventually(page, until=counted, timeout=10)

    def value(name: str, **labels: str) -> float | None:
        return values.get((name, tuple(sorted(labels.items()))))

    assert value("ab_runs_total", direction="import", state="succeeded") == 2
    assert value("ab_runs_total", direction="import", state="blocked") == 1
    # The export was handed to publish (not running here): it ends, and is counted, there.
    assert value("ab_runs_total", direction="export", state="progress") is None
    assert value("ab_runs_total", direction="export", state="failed") == 0
    assert value("ab_import_ids_total", id_type="ecid", outcome="received") == 57
    assert value("ab_import_ids_total", id_type="ecid", outcome="matched") == 55
    assert value("ab_import_ids_total", id_type="ecid", outcome="unmatched") == 1
    assert value("ab_import_ids_total", id_type="ecid", outcome="invalid") == 1
    assert value("ab_import_ids_total", id_type="declared", outcome="received") == 32
    assert value("ab_import_ids_total", id_type="declared", outcome="matched") == 31
    assert value("ab_list_members_changed_total", change="added") == 50 + 31
    assert value("ab_list_members_changed_total", change="removed") == 0
    assert value("ab_export_ids_excluded_total") == 3

    # The JSON endpoint, for tools.
    status, body = await reconcile.get("/api/runs?limit=10")
    assert status == 200
    api_runs = orjson.loads(body)["runs"]
    assert {r["run_id"] for r in api_runs} == {str(r) for r in await run_states(pool)}
    assert (await reconcile.get("/api/runs?limit=nope"))[0] == 400

    # The page, in a real browser.
    dom_text = (await chromium(browser, tmp_path / "profile", "--dump-dom", reconcile.url + "/")).decode()
    dom = _Dom()
    dom.feed(dom_text)
    text_content = "".join(dom.text)
    assert "Audience Bridge · status" in text_content
    assert not [a for t, a in dom.tags if t == "script"], "a script element made it into the page"
    assert HOSTILE in text_content  # shown as text, not run
    run_ids = {str(r) for r in await run_states(pool)}
    assert {a["data-run-id"] for a in dom.having("tr", "run")} == run_ids
    bars = dom.having("rect", "bar")
    assert sorted(str(b["data-run-id"]) for b in bars) == sorted(run_ids)  # one bar per run
    assert len(dom.having("circle", "point")) == 4  # every run here has a rate (the export: share with an ID)
    assert [a["data-run-id"] for a in dom.having("tr", "blocked-run")] == [str(shrink)]
    assert f"audience-bridge release {shrink}" in text_content
    assert "unknown_ecid" in text_content
    assert "invalid_format" in text_content
    assert "Visitors again" in text_content  # the export audience

    screenshot = tmp_path / "status.png"
    await chromium(
        browser, tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1280,900", reconcile.url + "/status"
    )
    width, height, distinct = png_summary(screenshot.read_bytes())
    assert (width, height) == (1280, 900)
    assert screenshot.stat().st_size > 20_000
    assert distinct > 64, "the screenshot is (almost) blank"


async def test_status_page_shows_dead_letters_per_topic_and_error(
    campaign: Campaign,
    start_service: StartService,  # noqa: F811
    database_url: str,
    topic_prefix: str,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    """Bad messages dead-lettered by the real reconcile show on the page, per topic and error, in Chromium."""
    browser = chromium_binary()
    reconcile = await start_service(
        "reconcile",
        env={"TOPIC_PREFIX": topic_prefix, "DATABASE_URL": database_url, "STATUS_DEAD_LETTERS_REFRESH_S": "0"},
    )
    dom_text = (await chromium(browser, tmp_path / "profile", "--dump-dom", reconcile.url + "/")).decode()
    assert 'id="dead-letters-empty"' in dom_text

    ghost = membership(
        uuid.uuid4(), 0, last=True, audience="no-such-audience", mode="delta", data_source="visitors", id_type="ecid"
    )
    bad = [
        OutgoingMessage(topic=f"{topic_prefix}audience-membership", value=b"{oops", key=b"a"),
        OutgoingMessage(topic=f"{topic_prefix}audience-membership", value=b"[1, 2]", key=b"b"),
        OutgoingMessage.of(f"{topic_prefix}audience-membership", ghost),
        OutgoingMessage(topic=f"{topic_prefix}audience-export-requests", value=HOSTILE.encode(), key=b"c"),
    ]
    producer = Producer(KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap), "test", RuntimeMetrics("test"))
    try:
        await producer.send(bad)
    finally:
        await producer.stop()

    async def dead_letters() -> dict[str, Any]:
        status, body = await reconcile.get("/api/status")
        assert status == 200, body
        found: dict[str, Any] = orjson.loads(body)["dead_letters"]
        return found

    summary = await eventually(dead_letters, until=lambda d: d["total"] == 4, timeout=60)
    assert summary["totals"] == {
        **dict.fromkeys(summary["totals"], 0),
        "audience-membership": 3,
        "audience-export-requests": 1,
    }
    by_error = {(e["topic"], e["error"]): e["count"] for e in summary["by_error"]}
    assert sum(by_error.values()) == 4
    assert sum(n for (topic, _), n in by_error.items() if topic == "audience-membership") == 3

    dom_text = (await chromium(browser, tmp_path / "profile", "--dump-dom", reconcile.url + "/")).decode()
    dom = _Dom()
    dom.feed(dom_text)
    assert not [a for t, a in dom.tags if t == "script"], "a script element made it into the page"
    rows = {(a["data-topic"], a["data-error"]) for a in dom.having("tr", "dead-letter")}
    assert rows == set(by_error)
    text_content = "".join(dom.text)
    assert "Dead letters (4)" in text_content
    assert "audience-bridge dlq list --topic audience-membership --error" in text_content
