"""Log lines are JSON with the service name, and secrets never reach them."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from shared.logging import REDACTED, configure_logging, get_logger, redact, redact_text


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("ingest", "DEBUG", stream=stream)
    yield stream
    logging.getLogger().handlers.clear()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_lines_are_json_with_service_name(captured: io.StringIO) -> None:
    get_logger("t").info("run_started", run_id="r1", count=3)
    [line] = _lines(captured)
    assert line["event"] == "run_started"
    assert line["service"] == "ingest"
    assert line["count"] == 3
    assert line["level"] == "info"
    assert "ts" in line


def test_secret_fields_are_redacted_at_any_depth(captured: io.StringIO) -> None:
    get_logger("t").info(
        "token_fetched",
        client_secret="cs-123",
        access_token="at-456",
        password="pw",
        headers={"Authorization": "Bearer at-456", "x-api-key": "client"},
        nested=[{"db_password": "pw2"}],
        secret_obj=SecretStr("inner"),
        token_type="bearer",
    )
    text = captured.getvalue()
    for secret in ("cs-123", "at-456", "pw2", "inner"):
        assert secret not in text
    [line] = _lines(captured)
    assert line["client_secret"] == REDACTED
    assert line["token_type"] == "bearer"  # a harmless field that merely mentions "token"


def test_secrets_inside_text_and_stdlib_logs(captured: io.StringIO) -> None:
    log = get_logger("t")
    log.warning("connect_failed", error="could not connect to postgresql://ab:hunter2@db:5432/x")
    logging.getLogger("aiohttp.client").error("sent grant_type=client_credentials&client_secret=zzz&scope=a")
    try:
        raise RuntimeError("Authorization: Bearer eyJhbGciOi.abc")
    except RuntimeError:
        log.exception("boom")
    text = captured.getvalue()
    assert "hunter2" not in text
    assert "zzz" not in text
    assert "eyJhbGciOi" not in text
    assert "postgresql://ab:***@db:5432/x" in text


def test_traceback_locals_are_not_logged(captured: io.StringIO) -> None:
    def fails(api_secret_value: str) -> None:
        raise ValueError("bad")

    try:
        fails("plain-secret-in-a-local")
    except ValueError:
        get_logger("t").exception("failed")
    assert "plain-secret-in-a-local" not in captured.getvalue()


@given(st.from_regex(r"[A-Za-z0-9._~+/=-]{1,60}", fullmatch=True))
def test_bearer_tokens_never_survive(token: str) -> None:
    assert redact_text(f"Authorization: Bearer {token} next") == f"Authorization: Bearer {REDACTED} next"
    assert redact({"client_secret": token}) == {"client_secret": REDACTED}
