"""ingest's real-time receiver in processes of its own (REALTIME_WORKERS > 0).

In one interpreter, receiving deliveries and consuming ``segment-events`` share one core: measured at 1,000
deliveries/s, ingest used 87% of a core (receiving 33%, the consumer 27%) and topped out near 1,100/s with a
core free. The receiver is stateless (keys, audience directory, producer), so ingest binds
``REALTIME_HOST:REALTIME_PORT`` once and passes the listening socket to REALTIME_WORKERS processes
(services/ingest/realtime_worker.py), which accept from it side by side; ingest keeps its consumers.

* They end with ingest: ``stop`` sends SIGTERM (then SIGKILL after SHUTDOWN_GRACE_S), and a process whose
  stdin (a pipe from ingest) ends stops by itself, so a killed ingest leaves none behind.
* A receiver process that exits while ingest runs ends ingest (``watch`` is a watched task: exit 1, the
  orchestrator restarts it), rather than leave it serving at part capacity unnoticed.
* ``/readyz`` has ``realtime``: every process started and serving. ``/metrics`` has the sum of their
  ``ab_realtime_*`` counters and histograms (services/ingest/realtime_worker_metrics.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from asyncio.subprocess import PIPE, Process
from pathlib import Path
from typing import Final

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry

from services.ingest.audiences import AudienceDirectory
from services.ingest.realtime import RealtimeMetrics, RealtimeServer, build_receiver
from services.ingest.realtime_http import LISTEN_BACKLOG
from services.ingest.realtime_keys import KeyRing
from services.ingest.realtime_settings import RealtimeSettings
from services.ingest.realtime_worker import EXIT_CONFIG
from services.ingest.realtime_worker_metrics import Snapshot, SummedMetrics, parse_snapshot
from shared.errors import ConfigError
from shared.kafka import Producer
from shared.logging import get_logger

log = get_logger(__name__)

STARTUP_TIMEOUT_S: Final = 60.0
REFRESH_TIMEOUT_S: Final = 1.0
CODE_ROOT: Final = Path(__file__).resolve().parents[2]  # holds services/ and shared/


class ReceiverProcessExited(RuntimeError):
    """A receiver process ended while ingest runs (or before it served)."""

    def __init__(self, index: int, returncode: int | None) -> None:
        super().__init__(f"real-time receiver process {index} exited with {returncode}")
        self.index = index
        self.returncode = returncode


def listen(host: str, port: int) -> socket.socket:
    """The listening socket every receiver process accepts from (bound here, so REALTIME_PORT=0 works and a
    port in use is one clear error)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise ConfigError("REALTIME_PORT cannot be bound", host=host, port=port, error=exc.strerror) from exc
    sock.set_inheritable(True)
    return sock


class RealtimeWorkers:
    def __init__(self, settings: RealtimeSettings, registry: CollectorRegistry) -> None:
        self._settings = settings
        self._count = settings.realtime_workers
        self.latest: dict[int, Snapshot] = {}  # process index -> its last metrics report
        template = CollectorRegistry(auto_describe=True)
        RealtimeMetrics(template)
        registry.register(SummedMetrics(template, self.latest))
        self._socket: socket.socket | None = None
        self._processes: dict[int, Process] = {}
        self._readers: list[asyncio.Task[None]] = []
        self._ready: dict[int, asyncio.Event] = {}
        self._asked = 0  # the last ``report <n>`` sent
        self._answers: dict[tuple[int, int], asyncio.Future[None]] = {}  # (process, n) -> answered
        self.bound_port: int | None = None

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes.values()]

    def ready(self) -> bool:
        return bool(self._processes) and all(
            self._ready[i].is_set() and p.returncode is None for i, p in self._processes.items()
        )

    async def start(self, directory: AudienceDirectory) -> None:
        """Bind, start the processes and return once every one serves. ``directory`` is not used: each
        process reads its own."""
        if self._processes:
            return
        self._socket = listen(self._settings.realtime_host, self._settings.realtime_port)
        self.bound_port = self._socket.getsockname()[1]
        fd = self._socket.fileno()
        for index in range(self._count):
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                *("-m", "services.ingest.realtime_worker", "--fd", str(fd), "--index", str(index)),
                stdin=PIPE,
                stdout=PIPE,
                pass_fds=(fd,),
                env=_child_environment(),
            )
            self._processes[index] = process
            self._ready[index] = asyncio.Event()
            self._readers.append(asyncio.create_task(self._read_reports(index, process), name=f"realtime-{index}"))
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT_S):
                await self._all_ready()
        except BaseException:
            await self.stop()
            raise
        log.info("realtime_listening", host=self._settings.realtime_host, port=self.bound_port, workers=self._count)

    async def _all_ready(self) -> None:
        for index, process in self._processes.items():
            ready = asyncio.create_task(self._ready[index].wait())
            exited = asyncio.create_task(process.wait())
            await asyncio.wait((ready, exited), return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            exited.cancel()
            if not self._ready[index].is_set():
                code = await process.wait()
                if code == EXIT_CONFIG:
                    raise ConfigError("a real-time receiver process refused its settings", worker=index)
                raise ReceiverProcessExited(index, code)

    async def _read_reports(self, index: int, process: Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            try:
                message = orjson.loads(line)
                if message.get("ready") is True:
                    self._ready[index].set()
                elif "metrics" in message:
                    self.latest[index] = parse_snapshot(message["metrics"])
                    self._answered(index, message.get("seq"))
            except (orjson.JSONDecodeError, AttributeError, ValueError) as exc:
                log.error("realtime_worker_report_unreadable", worker=index, error=str(exc)[:300])

    def _answered(self, index: int, seq: object) -> None:
        if not isinstance(seq, int):
            return
        for key in [k for k in self._answers if k[0] == index and k[1] <= seq]:
            future = self._answers.pop(key)
            if not future.done():
                future.set_result(None)

    async def refresh(self, timeout_s: float = REFRESH_TIMEOUT_S) -> None:
        """Have every process report its metrics now and wait (at most ``timeout_s``) for the reports, so that
        a scrape counts every delivery answered before it, not only those of the last periodic report."""
        self._asked += 1
        seq = self._asked
        waits: list[asyncio.Future[None]] = []
        for index, process in self._processes.items():
            if process.returncode is None and process.stdin is not None and self._ready[index].is_set():
                future = self._answers[(index, seq)] = asyncio.get_running_loop().create_future()
                waits.append(future)
                process.stdin.write(f"report {seq}\n".encode())
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*waits)
        except TimeoutError:
            log.warning("realtime_worker_metrics_late", timeout_s=timeout_s)
        finally:
            for index in self._processes:
                self._answers.pop((index, seq), None)

    @web.middleware
    async def fresh_metrics(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """On ingest's HTTP port: a GET of /metrics has the processes' figures of the moment."""
        if request.path == "/metrics":
            await self.refresh()
        return await handler(request)

    async def watch(self) -> None:
        """Return never while the processes serve; raise ReceiverProcessExited when one of them ends."""
        waits = {asyncio.create_task(p.wait()): i for i, p in self._processes.items()}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        index = waits[done.pop()]
        raise ReceiverProcessExited(index, self._processes[index].returncode)

    async def stop(self) -> None:
        processes, self._processes = self._processes, {}
        for process in processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        await asyncio.gather(*(self._end(i, p) for i, p in processes.items()))
        # The reports are read to their end (each process's last one counts), then the readers are done.
        await asyncio.gather(*self._readers, return_exceptions=True)
        self._readers.clear()
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def _end(self, index: int, process: Process) -> None:
        try:
            code = await asyncio.wait_for(process.wait(), self._settings.shutdown_grace_s + 5)
        except TimeoutError:
            log.warning("realtime_worker_killed", worker=index)
            process.kill()
            code = await process.wait()
        if process.stdin is not None:
            process.stdin.close()
        if code != 0:
            log.warning("realtime_worker_exit", worker=index, returncode=code)


def _child_environment() -> dict[str, str]:
    """ingest's environment (its settings), with the bridge's code importable whatever the working dir."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(CODE_ROOT), env.get("PYTHONPATH"))))
    return env


def build_realtime_server(
    settings: RealtimeSettings, *, producer: Producer, registry: CollectorRegistry, topic_prefix: str
) -> RealtimeServer | RealtimeWorkers | None:
    """The receiver the settings ask for (None when REALTIME_ENABLED is off): in REALTIME_WORKERS processes
    of its own, or in the service's process (0). A missing, unreadable or empty key file is a ConfigError
    here (the service exits 2). The metrics are registered either way (at 0), so that dashboards and alerts
    tell absent from zero."""
    if settings.realtime_enabled and settings.realtime_workers > 0:
        if settings.realtime_signing_keys_file is not None:
            KeyRing(settings.realtime_signing_keys_file)  # read here too, so a bad file stops ingest itself
        return RealtimeWorkers(settings, registry)
    metrics = RealtimeMetrics(registry)
    if not settings.realtime_enabled:
        return None
    receiver = build_receiver(settings, producer=producer, metrics=metrics, topic_prefix=topic_prefix)
    return RealtimeServer(receiver, settings.realtime_host, settings.realtime_port)
