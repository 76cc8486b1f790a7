"""The one rule for what a failure means: retry it, dead-letter the message, or retry a few times then give up.

* ``dependency``: something the bridge depends on (Postgres, Kafka, a drop zone, the platform) is failing.
  The message is fine: it is retried with backoff for as long as it takes, shown on ``/readyz`` and in
  ``ab_dependency_failures_total``, and never dead-lettered. Postgres errors are classified by SQLSTATE
  class: connection (08), insufficient resources (53: disk full, out of memory, too many connections),
  operator intervention (57: cancelled, admin shutdown), transaction rollback (40: serialization,
  deadlock), system errors (58), a read-only transaction (25006, a failed-over primary) and a lock
  not available (55P03).
* ``content``: the message itself is wrong (undecodable, invalid, naming what does not exist, refused by
  policy): a :class:`~shared.errors.PermanentError`. It is dead-lettered at once; retrying cannot help.
* ``statement_timeout``: a statement ran longer than ``DB_COMMAND_TIMEOUT_S``. Retrying may help (a busy
  moment) or not (an oversized snapshot): a bounded number of tries, then given up as below, with a
  reason that names the setting to raise.
* ``unexpected``: anything else, a code bug for all we know. Retried a bounded number of times, then the
  message is dead-lettered with its stack trace and the run it belongs to ends ``failed``.
"""

from __future__ import annotations

import traceback
from enum import StrEnum
from pathlib import Path

import asyncpg
from aiokafka.errors import KafkaError

from shared.errors import PermanentError, TransientError
from shared.logging import redact_text


class FailureKind(StrEnum):
    DEPENDENCY = "dependency"
    CONTENT = "content"
    STATEMENT_TIMEOUT = "statement_timeout"
    UNEXPECTED = "unexpected"


# SQLSTATE classes (first two characters) that say Postgres, not the statement, is in trouble.
_DEPENDENCY_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "40", "58", "HV"})
# Single SQLSTATEs of otherwise mixed classes that are about the server's state, not the statement.
_DEPENDENCY_SQLSTATES = frozenset(
    {
        "25006",  # read_only_sql_transaction: the primary failed over, we talk to a replica for now
        "55P03",  # lock_not_available: someone else holds the lock (lock_timeout)
        "55006",  # object_in_use
        "55000",  # object_not_in_prerequisite_state (e.g. a replica in recovery)
        "F0000",  # config_file_error
        "XX001",  # data_corrupted / index_corrupted: an operator must act, the message is not at fault
        "XX002",
    }
)
_STATEMENT_TIMEOUT_TEXT = "statement timeout"

_DEPENDENCY_TYPES: tuple[type[BaseException], ...] = (
    TransientError,
    ConnectionError,
    OSError,  # drop-zone and socket I/O
    asyncpg.InterfaceError,  # e.g. the connection was closed under us
    asyncpg.PostgresConnectionError,
    KafkaError,
)

_ASYNCPG_DIR = str(Path(asyncpg.__file__).parent)


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a Postgres error (None for anything else)."""
    if isinstance(exc, asyncpg.PostgresError):
        code = getattr(exc, "sqlstate", None)
        return str(code) if code else None
    return None


# Where asyncpg runs a statement: a TimeoutError that went through one of these is a statement's.
_ASYNCPG_STATEMENT_FILES = frozenset(
    str(Path(_ASYNCPG_DIR, name)) for name in ("connection.py", "prepared_stmt.py", "cursor.py")
)


def _raised_by_asyncpg_query(exc: BaseException) -> bool:
    """A TimeoutError from inside an asyncpg statement is its ``command_timeout`` (DB_COMMAND_TIMEOUT_S);
    other TimeoutErrors (waiting for a pooled connection, a Kafka send) never reach a statement."""
    return any(f.filename in _ASYNCPG_STATEMENT_FILES for f in traceback.extract_tb(exc.__traceback__))


def classify(exc: BaseException) -> FailureKind:
    """What ``exc`` means for the message being handled (see the module's docstring)."""
    if isinstance(exc, PermanentError):
        return FailureKind.CONTENT
    code = sqlstate(exc)
    if code is not None:
        return _classify_sqlstate(code, str(exc))
    if isinstance(exc, TimeoutError):
        return FailureKind.STATEMENT_TIMEOUT if _raised_by_asyncpg_query(exc) else FailureKind.DEPENDENCY
    if isinstance(exc, _DEPENDENCY_TYPES):
        return FailureKind.DEPENDENCY
    return FailureKind.UNEXPECTED


def _classify_sqlstate(code: str, text: str) -> FailureKind:
    if code == "57014" and _STATEMENT_TIMEOUT_TEXT in text:
        # A server-side statement_timeout; a cancel from elsewhere (an operator, a failover) is a dependency.
        return FailureKind.STATEMENT_TIMEOUT
    if code in _DEPENDENCY_SQLSTATES or code[:2] in _DEPENDENCY_SQLSTATE_CLASSES:
        return FailureKind.DEPENDENCY
    return FailureKind.UNEXPECTED


def is_dependency_failure(exc: BaseException) -> bool:
    """Retry without bound: the message is fine, what it needs is not there."""
    return classify(exc) is FailureKind.DEPENDENCY


def dependency_of(exc: BaseException) -> str:
    """Which dependency failed, for the metric's label: postgres, kafka or other (drop zone, platform)."""
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError) or sqlstate(exc) is not None:
        return "postgres"
    if isinstance(exc, KafkaError):
        return "kafka"
    return str(getattr(exc, "context", {}).get("dependency", "other")) if isinstance(exc, TransientError) else "other"


def redact(text: str) -> str:
    """``text`` (a stack trace, an error message) with its secrets masked: the log's own redaction, so a dead
    letter or a run's reason masks every form a log line does."""
    return redact_text(text)


def give_up_reason(kind: FailureKind, exc: BaseException, attempts: int) -> str:
    """What a run that failed on ``exc`` after ``attempts`` tries says, naming what to do about it."""
    what = redact(f"{type(exc).__name__}: {exc}")[:500]
    if kind is FailureKind.STATEMENT_TIMEOUT:
        return (
            f"a statement exceeded DB_COMMAND_TIMEOUT_S {attempts} times in a row ({what}); "
            "raise DB_COMMAND_TIMEOUT_S and replay the dead letter"
        )
    return f"unexpected error, given up after {attempts} attempts ({what}); the dead letter holds the stack trace"
