"""Every form of secret the bridge can meet, fed through every way text leaves it: the structured log (fields,
bytes, nested values, exceptions, stdlib loggers), dead-letter headers, and run reasons (the status event
and the reason stored for the status page and the CLI)."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord
from hypothesis import given
from hypothesis import strategies as st

from services.reconcile import status_queries
from services.reconcile.status_json import snapshot_json
from services.reconcile.status_page import render_page
from services.reconcile.status_queries import StatusSnapshot
from shared.errors import PermanentError
from shared.kafka.dead_letters import dead_letter_headers
from shared.logging import configure_logging, get_logger, redact, redact_text
from shared.messages import AudienceSyncStatus
from shared.runs import store
from shared.runs.outcome import RunOutcome
from shared.runs.reporter import RunReporter

SECRET = "s3cr3tValue42"

# Each form as it appears in the wild, with SECRET where the secret is.
FORMS: dict[str, Callable[[str], str]] = {
    "dsn": lambda s: f"could not connect to postgresql://ab:{s}@db:5432/bridge",
    "dsn-empty-user": lambda s: f"could not connect to postgresql://:{s}@db:5432/bridge",
    "aws-free-text": lambda s: f"boto said aws_secret_access_key={s} is invalid",
    "s3-setting": lambda s: f"environment: S3_SECRET_ACCESS_KEY={s} S3_REGION=eu-west-1",
    "quoted-setting": lambda s: f'config {{"aws_secret_access_key": "{s}"}}',
    "bearer": lambda s: f"Authorization: Bearer {s}",
    "form-field": lambda s: f"grant_type=client_credentials&client_secret={s}&scope=x",
    "password-field": lambda s: f"DB_PASSWORD: {s}",
}


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("test", "DEBUG", stream=stream)
    yield stream
    logging.getLogger().handlers.clear()


@pytest.mark.parametrize("form", FORMS)
def test_every_form_is_masked_in_text(form: str) -> None:
    text = FORMS[form](SECRET)
    masked = redact_text(text)
    assert SECRET not in masked
    assert "***" in masked


@pytest.mark.parametrize("form", FORMS)
def test_every_form_is_masked_in_bytes(form: str) -> None:
    masked = redact(FORMS[form](SECRET).encode())
    assert isinstance(masked, str)
    assert SECRET not in masked


def _log_every_way(text: str) -> None:
    log = get_logger("t")
    log.warning("field", error=text)
    log.warning("bytes_field", payload=text.encode())
    log.warning("nested", detail={"attempts": [{"message": text}]}, raw=(text.encode(),))
    log.warning(text)  # the event itself
    try:
        raise PermanentError(text, detail=text)
    except PermanentError:
        log.exception("failed")
    stdlib = logging.getLogger("aiokafka.conn")
    stdlib.error("stdlib %s", text)
    stdlib.error("stdlib bytes %r", text.encode())
    stdlib.error("stdlib extra", extra={"detail": text})


@pytest.mark.parametrize("form", FORMS)
def test_every_form_is_masked_on_every_log_path(form: str, captured: io.StringIO) -> None:
    _log_every_way(FORMS[form](SECRET))
    out = captured.getvalue()
    assert out.count("\n") >= 8  # every path wrote its line
    assert SECRET not in out


def _record() -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="audience-membership",
        partition=0,
        offset=7,
        timestamp=0,
        timestamp_type=0,
        key=None,
        value=b"{}",
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=2,
        headers=[],
    )


@pytest.mark.parametrize("form", FORMS)
def test_every_form_is_masked_in_dead_letter_headers(form: str) -> None:
    try:
        raise RuntimeError(FORMS[form](SECRET))  # not a PoisonMessage: the stack trace header is written too
    except RuntimeError as exc:
        headers = dict(dead_letter_headers(_record(), exc, "reconcile"))
    assert "dlq.stacktrace" in headers
    for name, value in headers.items():
        assert SECRET.encode() not in value, name


class _Producer:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send_model(self, topic: str, model: Any) -> None:
        self.sent.append(model)


@pytest.mark.parametrize("form", FORMS)
async def test_every_form_is_masked_in_status_events(form: str, captured: io.StringIO) -> None:
    producer = _Producer()
    reporter = RunReporter(producer, service="test", topic_prefix="")  # type: ignore[arg-type]
    outcome = RunOutcome(uuid.uuid4(), "export", "failed", "ab-x", reason=FORMS[form](SECRET))
    event = await reporter.report(outcome)
    [sent] = producer.sent
    assert isinstance(sent, AudienceSyncStatus)
    assert SECRET not in (event.reason or "")
    assert SECRET not in sent.model_dump_json()
    assert SECRET not in captured.getvalue()  # the run_status log line


class _Conn:
    """Answers the move's UPDATE with the row it would write: what the status page and the CLI would read."""

    def __init__(self) -> None:
        self.written: list[Any] = []

    async def fetchrow(self, _sql: str, *args: Any) -> dict[str, Any]:
        self.written.extend(args)
        run_id, to, keep, reason = args[:4]
        return {
            "run_id": run_id,
            "direction": "export",
            "audience_id": "ab-x",
            "state": to,
            "counts": "{}",
            "match_rate": None,
            "reason": None if keep else reason,
            "id_type": None,
        }

    async def fetch(self, _sql: str, *args: Any) -> list[Any]:
        self.written.extend(args)
        return []


@pytest.mark.parametrize("form", FORMS)
async def test_every_form_is_masked_in_stored_reasons(form: str) -> None:
    conn = _Conn()
    outcome = await store.move(conn, uuid.uuid4(), "failed", reason=FORMS[form](SECRET))
    assert SECRET not in (outcome.reason or "")
    await store.fail_live_attempts(conn, uuid.uuid4(), FORMS[form](SECRET))
    assert not any(SECRET in str(arg) for arg in conn.written)


@given(
    secret=st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=6, max_size=40)
)
def test_any_secret_in_any_form_is_masked(secret: str) -> None:
    # The masked text does not depend on the secret at all: "not in" would fail on a secret that is also a word
    # of the text around it (a secret "postgr" in a postgresql:// URL).
    other = "q" * len(secret)
    for form, make in FORMS.items():
        assert redact_text(make(secret)) == redact_text(make(other)), form


def test_ordinary_text_is_left_alone() -> None:
    for text in ("mode=full", "https://platform.example.com:8443/v1/segments", "received: 10, matched: 8"):
        assert redact_text(text) == text


@pytest.mark.parametrize("form", FORMS)
def test_every_form_is_masked_on_the_status_page_even_if_stored(form: str) -> None:
    """A reason written around shared.runs.store (a direct UPDATE) is still masked when shown."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    row = {
        "run_id": uuid.uuid4(),
        "direction": "export",
        "audience_id": "ab-x",
        "audience_name": "X",
        "mode": "append",
        "state": "failed",
        "counts": "{}",
        "match_rate": None,
        "reason": FORMS[form](SECRET),
        "started_at": now,
        "updated_at": now,
        "finished_at": now,
        "released_by": None,
        "requested_by": "alice",
        "requested_via": "cli",
    }
    snapshot = StatusSnapshot(generated_at=now, runs=[status_queries._run(row)])  # type: ignore[arg-type]
    assert SECRET not in render_page(snapshot)
    assert SECRET not in orjson.dumps(snapshot_json(snapshot)).decode()
