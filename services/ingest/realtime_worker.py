"""One receiver process: ``python -m services.ingest.realtime_worker --fd N --index I``, started by ingest
(services/ingest/realtime_workers.py) with REALTIME_WORKERS > 0, never by hand.

It serves ``POST /platform/realtime`` on the listening socket ingest bound and passed down (fd ``N``), with
its own Kafka producer, Postgres connection (the audience directory) and group writer: the receiver keeps no
state a delivery needs from another, so the processes need not talk to each other. Its settings are
ingest's (the same environment). It talks to ingest over its standard streams only:

* stdout: JSON lines, ``{"ready": true}`` once it serves, then ``{"metrics": [...]}`` every
  ``REPORT_INTERVAL_S`` and once more as it stops (ingest sums them into its /metrics);
* stdin: ``report <n>`` lines, answered at once with ``{"metrics": [...], "seq": n}`` (so a scrape of
  ingest's /metrics counts every delivery answered before it); its end (ingest exited, however it died)
  stops the process, so a receiver never outlives its service. SIGTERM stops it too: it stops accepting,
  answers the deliveries under way, exits 0.

Logs go to stderr, which is ingest's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import socket
import sys
from typing import Any, BinaryIO

import orjson
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from services.ingest.audiences import AudienceDirectory
from services.ingest.realtime import RealtimeMetrics, build_receiver
from services.ingest.realtime_http import LISTEN_BACKLOG, PATH
from services.ingest.realtime_worker_metrics import REPORT_INTERVAL_S, snapshot
from services.ingest.settings import IngestSettings
from shared import db, event_loop
from shared.errors import ConfigError
from shared.event_loop import running_loop_name
from shared.kafka import Producer
from shared.logging import configure_logging, get_logger
from shared.metrics import RuntimeMetrics
from shared.settings import load_settings

log = get_logger(__name__)

EXIT_CONFIG: int = 2  # bad settings or key file: ingest does not retry

# The collector's pace in a receiver process. A delivery leaves no reference cycle (nothing for the collector to
# free: tests/integration/test_realtime_receiver.py), but the deliveries waiting for their write hold their
# objects, so at 2,000 deliveries/s CPython's default (a young collection every 700 objects more allocated than
# freed) ran ~145 young, 13 middle and 1-2 full collections a second: 11% of the process's time, and full ones of
# 7-64 ms that every delivery under way waited for. A young collection every 50,000 keeps what a cycle could
# hold, if one ever appears (an error's traceback), to a few MB.
COLLECTOR_THRESHOLDS: tuple[int, int, int] = (50_000, 20, 20)


def report(out: BinaryIO, message: dict[str, Any]) -> None:
    out.write(orjson.dumps(message) + b"\n")
    out.flush()


async def _listen_to_ingest(stop: asyncio.Event, registry: CollectorRegistry, out: BinaryIO) -> None:
    """Answer ingest's ``report <n>`` lines (a scrape of its /metrics) with the metrics now; set ``stop`` on
    SIGTERM/SIGINT and when stdin ends (ingest is gone)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command, _, seq = line.decode("ascii", "replace").partition(" ")
        if command == "report" and seq.strip().isdigit():
            report(out, {"metrics": snapshot(registry), "seq": int(seq)})
    stop.set()


async def serve(settings: IngestSettings, listening: socket.socket, out: BinaryIO) -> int:
    stop = asyncio.Event()
    registry = CollectorRegistry()
    watcher = asyncio.create_task(_listen_to_ingest(stop, registry, out), name="realtime-worker-ingest")
    producer = Producer(settings, "ingest", RuntimeMetrics("ingest"))
    pool = None
    runner: web.ServerRunner | None = None
    receiver = None
    try:
        receiver = build_receiver(
            settings, producer=producer, metrics=RealtimeMetrics(registry), topic_prefix=settings.topic_prefix
        )
        # ingest has its dependencies up before it starts the receivers: no retry loop here, a failure ends the
        # process and ingest with it (its orchestrator restarts it).
        pool = await db.create_pool(settings, application_name="audience-bridge-ingest-realtime")
        await producer.start()
        receiver.directory = AudienceDirectory(pool, refresh_s=settings.metadata_refresh_s)
        runner = web.ServerRunner(
            receiver.web_server(access_log=None), handle_signals=False, shutdown_timeout=settings.shutdown_grace_s
        )
        await runner.setup()
        await web.SockSite(runner, listening, backlog=LISTEN_BACKLOG).start()
        gc.freeze()  # what startup built lives as long as the process: out of the collector's walks
        gc.set_threshold(*COLLECTOR_THRESHOLDS)
        log.info(
            "realtime_worker_listening", path=PATH, port=listening.getsockname()[1], event_loop=running_loop_name()
        )
        report(out, {"ready": True})
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REPORT_INTERVAL_S)
            report(out, {"metrics": snapshot(registry)})
    finally:
        watcher.cancel()
        if runner is not None:
            await runner.cleanup()  # stops accepting; the deliveries under way get their answer
        if receiver is not None:
            await receiver.close()
        await producer.stop()
        if pool is not None:
            await pool.close()
    with contextlib.suppress(BrokenPipeError):
        report(out, {"metrics": snapshot(registry)})
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.ingest.realtime_worker")
    parser.add_argument("--fd", type=int, required=True, help="the listening socket ingest passed down")
    parser.add_argument("--index", type=int, required=True, help="this process's number, for logs and metrics")
    args = parser.parse_args(argv)
    try:
        # One Postgres connection is enough: the directory is read once a refresh.
        settings = load_settings(IngestSettings, db_pool_min_size=1, db_pool_max_size=2)
    except ConfigError as exc:
        sys.stderr.write(f"realtime worker: {exc}\n")
        sys.exit(EXIT_CONFIG)
    configure_logging("ingest", settings.log_level)
    structlog.contextvars.bind_contextvars(realtime_worker=args.index)
    listening = socket.socket(fileno=args.fd)
    try:
        sys.exit(event_loop.run(serve(settings, listening, sys.stdout.buffer), loop=settings.event_loop))
    except ConfigError as exc:
        log.error("invalid_settings", error=str(exc))
        sys.exit(EXIT_CONFIG)


if __name__ == "__main__":
    main()
