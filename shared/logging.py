"""Structured JSON logging with secret redaction.

Every log line is one JSON object carrying the service name. Values of keys named like a secret are
replaced, wherever they are nested, and secrets embedded in strings or bytes (bearer tokens, passwords in
URLs, even with an empty user, ``client_secret=`` form fields, ``aws_secret_access_key=`` or
``S3_SECRET_ACCESS_KEY=`` settings) are masked, so a careless ``log.info("x", headers=headers)`` cannot
leak. Standard-library loggers (aiokafka, aiohttp, asyncpg) are routed through the same pipeline, and
:func:`redact_text` is applied to what leaves the bridge outside logs too: dead-letter headers
(``shared/kafka/dead_letters.py``) and run reasons (``shared/runs``).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import orjson
import structlog
from pydantic import SecretStr
from structlog.tracebacks import ExceptionDictTransformer

REDACTED = "***"

_SECRET_KEY = re.compile(r"secret|token|passw|pwd|authorization|api[-_]?key|credential|cookie|sasl", re.I)
# Keys that merely mention a secret-ish word but carry no secret.
_NOT_SECRET_KEYS = frozenset({"token_type", "expires_in", "token_expires_at"})
# Each pattern starts only where a name starts (a lookbehind, not \b) and takes names possessively: a long
# run of name characters in a log line stays linear instead of being rescanned from every position.
_SECRET_IN_TEXT: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1" + REDACTED),
    # The user may be empty (postgresql://:pw@host): the password is still one.
    (
        re.compile(r"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*+://[^:/@\s]{0,256}+:)[^@\s]{1,512}+@"),
        r"\1" + REDACTED + "@",
    ),
    # A setting or field named like a secret, anywhere in a longer name (aws_secret_access_key=,
    # S3_SECRET_ACCESS_KEY=, DB_PASSWORD:, "client_secret": ...).
    (
        re.compile(
            r"(?i)(?<![a-z0-9_.-])([a-z0-9_.-]{0,64}?(?:secret|passw(?:or)?d|pwd|token|api[-_]?key|credential)"
            r"[a-z0-9_.-]*+[\"']?\s*+[=:]\s*+[\"']?)[^&\s\"',}]+"
        ),
        r"\1" + REDACTED,
    ),
]


def redact_text(text: str) -> str:
    """Mask secrets embedded in free text (URLs with passwords, bearer tokens, secret=... pairs)."""
    for pattern, replacement in _SECRET_IN_TEXT:
        text = pattern.sub(replacement, text)
    return text


def redact(value: Any, key: str | None = None) -> Any:
    """Return ``value`` with secrets masked; ``key`` is the name it was stored under, if any."""
    if key is not None and key.lower() not in _NOT_SECRET_KEYS and _SECRET_KEY.search(key):
        return REDACTED if value not in (None, "") else value
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes | bytearray | memoryview):
        # Logged as text from here on: orjson cannot write bytes, and a secret in them is still a secret.
        return redact_text(bytes(value).decode("utf-8", "backslashreplace"))
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    return value


def _redact_processor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        event_dict[key] = redact(event_dict[key], key)
    return event_dict


def _default(obj: Any) -> Any:
    return repr(obj)


def _dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=_default).decode()


def configure_logging(service: str, level: str = "INFO", stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib root logger to write JSON lines to ``stream`` (stderr)."""
    out = stream or sys.stderr
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        # Locals are left out of tracebacks: they are where secrets live.
        structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
        _redact_processor,
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder(), *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _add_service(service),
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka is chatty at INFO about every (re)join; its warnings and errors still come through.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _add_service(service: str) -> Any:
    def processor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event_dict.setdefault("service", service)
        return event_dict

    return processor


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A structlog logger; ``initial`` fields are bound to every line it writes."""
    return structlog.get_logger(name, **initial)
