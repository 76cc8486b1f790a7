"""``POST /platform/realtime``: the platform's real-time deliveries, on a port of their own (``REALTIME_PORT``).

The platform wants ``200`` within 3,000 ms and retries once on anything else. A delivery is answered:

* ``401`` when the signature header is missing or matches none of the keys (nothing written, counted);
* ``400`` with the reason when it is not JSON or breaks the documented shape; the body is kept, with the
  reason, in ``segment-events.dlq`` (``audience-bridge dlq list segment-events``);
* ``200`` once its segment changes are on ``segment-events`` with ``acks=all`` (so a ``200`` never loses a
  change); IDs not valid for their data source are skipped and counted by reason, the rest applies;
* ``503`` when they cannot be written in time (``REALTIME_RESPONSE_TIMEOUT_S``; broker or Postgres down),
  so the platform's one retry has a chance.

Its own port keeps the platform-facing endpoint apart from the probes and pages, which stay internal and
behind their own credentials; the signature is this endpoint's authentication.
"""

from __future__ import annotations

import asyncio
import gc
import time
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from services.ingest.audiences import AudienceDirectory, ImportAudience
from services.ingest.realtime_http import LISTEN_BACKLOG, PATH, answer, dispatching_server, error_answer
from services.ingest.realtime_keys import KeyRing
from services.ingest.realtime_oauth import TokenChecker, bearer_token
from services.ingest.realtime_routing import delivery_segments, event_record, route_delivery
from services.ingest.realtime_settings import RealtimeSettings
from services.ingest.realtime_writer import GroupWriter
from shared.errors import ConfigError, TransientError
from shared.formats.realtime import MalformedDelivery, RealtimeDelivery, parse_delivery
from shared.formats.realtime_signature import SignatureAlgorithm, verify
from shared.kafka import OutgoingMessage, Producer
from shared.logging import get_logger
from shared.retry import is_transient
from shared.topics import SEGMENT_EVENTS, dlq_name, topic_name

log = get_logger(__name__)

OUTCOMES: Final = ("accepted", "missing_signature", "bad_signature", "bad_token", "malformed", "unavailable")


class RealtimeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "ab_realtime_deliveries_total",
            "Real-time deliveries answered, by outcome (accepted 200; missing_signature, bad_signature and "
            "bad_token 401; malformed 400; unavailable 503).",
            ["outcome"],
            registry=registry,
        )
        for outcome in OUTCOMES:
            self.deliveries.labels(outcome)
        self.skipped = Counter(
            "ab_realtime_changes_skipped_total",
            "Segment changes of accepted deliveries not applied, by reason (no audience, missing or invalid ID).",
            ["reason"],
            registry=registry,
        )
        self.response_seconds = Histogram(
            "ab_realtime_response_seconds",
            "Time from a delivery's arrival to its answer.",
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5),
            registry=registry,
        )
        self.write_deliveries = Histogram(
            "ab_realtime_write_deliveries",
            "Deliveries whose changes went to Kafka together in one write (group commit: those that arrived "
            "while the previous write waited for its acknowledgement).",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=registry,
        )


class RealtimeReceiver:
    def __init__(
        self,
        *,
        keys: KeyRing | None,
        header: str,
        algorithm: SignatureAlgorithm,
        producer: Producer,
        events_topic: str,
        dead_letter_topic: str,
        metrics: RealtimeMetrics,
        response_timeout_s: float,
        oauth: TokenChecker | None = None,
    ) -> None:
        self._keys = keys
        self._oauth = oauth
        self._header = header
        self._algorithm: SignatureAlgorithm = algorithm
        self._producer = producer
        self._writer = GroupWriter(producer, metrics.write_deliveries.observe)
        self._topic = events_topic
        self._dlq = dead_letter_topic
        self.metrics = metrics
        self._answered = {outcome: metrics.deliveries.labels(outcome) for outcome in OUTCOMES}
        self._timeout_s = response_timeout_s
        self.directory: AudienceDirectory | None = None  # set once the service's dependencies are up

    async def close(self) -> None:
        await self._writer.close()
        if self._oauth is not None:
            await self._oauth.close()

    def web_server(self, **kwargs: Any) -> web.Server:
        """The receiver as aiohttp's low-level server (services/ingest/realtime_http.py: why not an
        Application); ``kwargs`` go to each connection's handler (``access_log=None``...)."""
        return dispatching_server(self.handle, **kwargs)

    async def handle(self, request: web.BaseRequest) -> web.Response:
        started = time.perf_counter()
        try:
            outcome, response = await self._answer(request)
        finally:
            self.metrics.response_seconds.observe(time.perf_counter() - started)
        self._answered[outcome].inc()
        return response

    async def _answer(self, request: web.BaseRequest) -> tuple[str, web.Response]:
        body = await request.read()
        try:
            refused = await self._refusal(request, body)
        except TransientError as exc:
            log.warning("realtime_unavailable", error=type(exc).__name__, detail=str(exc)[:300])
            return "unavailable", error_answer(503, "the bridge cannot check the delivery's token now; retry")
        if refused is not None:
            log.warning("realtime_refused", reason=refused[0], remote=request.remote)
            return refused[0], error_answer(401, refused[1])
        try:
            delivery = parse_delivery(body, received_at=datetime.now(UTC))
        except MalformedDelivery as exc:
            return await self._malformed(body, exc)
        try:
            async with asyncio.timeout(self._timeout_s):  # no task per delivery, unlike wait_for
                events, skipped = await self._write(delivery)
        except Exception as exc:
            if not (isinstance(exc, TimeoutError) or is_transient(exc)):
                raise
            log.warning("realtime_unavailable", error=type(exc).__name__, detail=str(exc)[:300])
            return "unavailable", error_answer(503, "the bridge cannot take the delivery now; retry")
        for reason, count in skipped.items():
            self.metrics.skipped.labels(reason).inc(count)
        return "accepted", answer(200, orjson.dumps({"applied": events, "skipped": skipped}))

    async def _refusal(self, request: web.BaseRequest, body: bytes) -> tuple[str, str] | None:
        """None when the delivery is signed with a known key (or carries an active bearer token); else the
        outcome and the reason."""
        signature = request.headers.get(self._header)
        if signature:
            keys = self._keys.keys() if self._keys is not None else ()
            if verify(body, signature, keys, self._algorithm):
                return None
            return "bad_signature", "signature does not match"
        token = bearer_token(request.headers.get("Authorization"))
        if token is not None and self._oauth is not None:
            if await self._oauth.is_active(token):
                return None
            return "bad_token", "bearer token not active"
        return "missing_signature", f"missing signature header {self._header}"

    async def _write(self, delivery: RealtimeDelivery) -> tuple[int, dict[str, int]]:
        directory = self.directory
        if directory is None:
            raise TransientError("ingest is still starting")
        audiences: dict[str, list[ImportAudience]] = {}
        for segment in delivery_segments(delivery):
            audiences[segment] = await directory.lookup(segment)
        routed = route_delivery(delivery, audiences)
        await self._writer.write([event_record(self._topic, event) for event in routed.events])
        return len(routed.events), dict(routed.skipped)

    async def _malformed(self, body: bytes, exc: MalformedDelivery) -> tuple[str, web.Response]:
        letter = OutgoingMessage(
            topic=self._dlq,
            value=body,
            headers=[
                ("dlq.error", type(exc).__name__.encode()),
                ("dlq.reason", exc.reason[:2000].encode()),
                ("dlq.service", b"ingest"),
                ("dlq.original.topic", self._topic.encode()),
                ("dlq.original.partition", b"-1"),
                ("dlq.original.offset", b"-1"),
                ("dlq.source", f"POST {PATH}".encode()),
                ("dlq.failed_at", str(int(time.time() * 1000)).encode()),
            ],
        )
        try:
            await asyncio.wait_for(self._producer.send([letter]), self._timeout_s)
        except Exception as send_error:
            if not (isinstance(send_error, TimeoutError) or is_transient(send_error)):
                raise
            # Not kept anywhere: answer 503 so the platform sends it again rather than lose the evidence.
            log.warning("realtime_malformed_not_kept", reason=exc.reason, error=type(send_error).__name__)
            return "unavailable", error_answer(503, "the bridge cannot take the delivery now; retry")
        log.warning("realtime_malformed", reason=exc.reason, dead_letter_topic=self._dlq, size=len(body))
        return "malformed", error_answer(400, exc.reason)


class RealtimeServer:
    """The receiver's own HTTP server, started once the service's dependencies are up."""

    def __init__(self, receiver: RealtimeReceiver, host: str, port: int) -> None:
        self._receiver = receiver
        self._host = host
        self._port = port
        self._runner: web.ServerRunner | None = None
        self.bound_port: int | None = None

    def ready(self) -> bool:
        return self._runner is not None

    async def start(self, directory: AudienceDirectory) -> None:
        self._receiver.directory = directory
        if self._runner is not None:
            return
        runner = web.ServerRunner(self._receiver.web_server(access_log=None))
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, reuse_address=True, backlog=LISTEN_BACKLOG)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                "REALTIME_PORT cannot be bound", host=self._host, port=self._port, error=exc.strerror
            ) from exc
        self._runner = runner
        self.bound_port = runner.addresses[0][1] if runner.addresses else self._port
        # What startup built (modules, classes, the directory) lives as long as the process: moved out of the
        # collector's reach, so that the collections the deliveries' allocations trigger do not walk it all.
        gc.freeze()
        log.info("realtime_listening", host=self._host, port=self.bound_port, path=PATH)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self._receiver.close()


def build_receiver(
    settings: RealtimeSettings, *, producer: Producer, metrics: RealtimeMetrics, topic_prefix: str
) -> RealtimeReceiver:
    """The receiver the settings describe (in the service's process, or in a receiver process of its own).
    Reads the keys: a missing, unreadable or empty key file is a ConfigError."""
    keys_file = settings.realtime_signing_keys_file
    oauth = None
    if settings.realtime_oauth_introspection_url:
        secret = settings.realtime_oauth_client_secret
        oauth = TokenChecker(
            settings.realtime_oauth_introspection_url,
            settings.realtime_oauth_client_id,
            secret.get_secret_value() if secret is not None else "",
        )
    events_topic = topic_name(topic_prefix, SEGMENT_EVENTS)
    return RealtimeReceiver(
        keys=KeyRing(keys_file) if keys_file is not None else None,
        oauth=oauth,
        header=settings.realtime_signature_header,
        algorithm=settings.realtime_signature_algorithm,
        producer=producer,
        events_topic=events_topic,
        dead_letter_topic=dlq_name(events_topic),
        metrics=metrics,
        response_timeout_s=settings.realtime_response_timeout_s,
    )
