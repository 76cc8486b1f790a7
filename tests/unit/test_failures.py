"""The one rule for what a failure means (shared/failures.py): retry, dead-letter, or retry a few times and give up."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, NodeNotReadyError
from asyncpg import PostgresError
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import PermanentError, PoisonMessage, TransientError
from shared.failures import FailureKind, classify, dependency_of, give_up_reason, redact
from shared.kafka.batch_processor import GivenUp
from shared.kafka.deliveries import Delivery
from shared.messages import AudienceMembership
from shared.retry import is_transient
from shared.runs.give_up import runs_given_up, unrecorded_run
from shared.settings import REPO_ROOT


def postgres_error(sqlstate: str, message: str = "injected") -> Exception:
    """The exception asyncpg raises for an ErrorResponse with ``sqlstate`` (built as its protocol does)."""
    build: Any = PostgresError  # the stubs do not declare the constructor
    error: Exception = build.new({"C": sqlstate, "M": message, "S": "ERROR"})
    return error


@pytest.mark.parametrize(
    ("sqlstate", "kind"),
    [
        ("53100", FailureKind.DEPENDENCY),  # disk full
        ("53200", FailureKind.DEPENDENCY),  # out of memory
        ("53300", FailureKind.DEPENDENCY),  # too many connections
        ("57014", FailureKind.DEPENDENCY),  # query cancelled (by an operator, a trigger, a failover)
        ("57P01", FailureKind.DEPENDENCY),  # admin shutdown
        ("25006", FailureKind.DEPENDENCY),  # read-only transaction (a replica after failover)
        ("55P03", FailureKind.DEPENDENCY),  # lock not available
        ("08006", FailureKind.DEPENDENCY),  # connection failure
        ("40001", FailureKind.DEPENDENCY),  # serialization failure
        ("40P01", FailureKind.DEPENDENCY),  # deadlock
        ("58030", FailureKind.DEPENDENCY),  # I/O error
        ("22P02", FailureKind.UNEXPECTED),  # invalid text representation: the bridge should have validated
        ("23505", FailureKind.UNEXPECTED),  # unique violation: a bug of ours
        ("42P01", FailureKind.UNEXPECTED),  # undefined table: a bug (or a missing migration)
        ("42703", FailureKind.UNEXPECTED),  # undefined column
        ("XX000", FailureKind.UNEXPECTED),  # internal error
    ],
)
def test_postgres_errors_are_classified_by_sqlstate(sqlstate: str, kind: FailureKind) -> None:
    assert classify(postgres_error(sqlstate)) is kind


_SQLSTATE_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@given(
    cls=st.sampled_from(["08", "53", "57", "40", "58"]),
    rest=st.text(alphabet=_SQLSTATE_CHARS, min_size=3, max_size=3),
    message=st.text(max_size=40),
)
def test_every_sqlstate_of_a_dependency_class_is_retried(cls: str, rest: str, message: str) -> None:
    code = cls + rest
    if code == "57014" and "statement timeout" in message:
        return  # the one bounded case of class 57, tested below
    assert classify(postgres_error(code, message)) is FailureKind.DEPENDENCY


@given(
    cls=st.sampled_from(["22", "23", "42", "P0", "XX", "2B", "0A"]),
    rest=st.text(alphabet=_SQLSTATE_CHARS, min_size=3, max_size=3),
)
def test_statement_errors_are_unexpected_never_retried_for_ever(cls: str, rest: str) -> None:
    code = cls + rest
    if code in ("XX001", "XX002"):
        return  # corrupted data: an operator must act, the message is not at fault
    assert classify(postgres_error(code)) is FailureKind.UNEXPECTED


def test_a_server_statement_timeout_is_bounded_not_a_dependency() -> None:
    timeout = postgres_error("57014", "canceling statement due to statement timeout")
    assert classify(timeout) is FailureKind.STATEMENT_TIMEOUT
    assert classify(postgres_error("57014", "canceling statement due to user request")) is FailureKind.DEPENDENCY


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ConnectionResetError(), FailureKind.DEPENDENCY),
        (OSError("drop zone unreachable"), FailureKind.DEPENDENCY),
        (TimeoutError(), FailureKind.DEPENDENCY),  # not raised inside an asyncpg statement
        (KafkaConnectionError(), FailureKind.DEPENDENCY),
        (NodeNotReadyError(), FailureKind.DEPENDENCY),
        (TransientError("platform 503"), FailureKind.DEPENDENCY),
        (PermanentError("unknown audience"), FailureKind.CONTENT),
        (PoisonMessage("undecodable"), FailureKind.CONTENT),
        (KeyError("x"), FailureKind.UNEXPECTED),  # a code bug
        (AttributeError("'NoneType' object has no attribute 'x'"), FailureKind.UNEXPECTED),
        (ZeroDivisionError(), FailureKind.UNEXPECTED),
        (AssertionError(), FailureKind.UNEXPECTED),
    ],
)
def test_other_errors_are_classified_by_type(exc: BaseException, kind: FailureKind) -> None:
    assert classify(exc) is kind


def test_is_transient_follows_the_rule() -> None:
    assert is_transient(postgres_error("53100"))  # today's silent loss: disk full was dead-lettered
    assert is_transient(postgres_error("57014", "canceling statement due to statement timeout"))
    assert not is_transient(KeyError("bug"))
    assert not is_transient(PermanentError("bad"))


def test_dependency_label() -> None:
    assert dependency_of(postgres_error("53100")) == "postgres"
    assert dependency_of(KafkaConnectionError()) == "kafka"
    assert dependency_of(TransientError("x", dependency="dropzone")) == "dropzone"
    assert dependency_of(OSError()) == "other"


def test_give_up_reason_names_the_setting_to_raise() -> None:
    reason = give_up_reason(FailureKind.STATEMENT_TIMEOUT, TimeoutError(), 3)
    assert "DB_COMMAND_TIMEOUT_S" in reason
    assert "3 times" in reason
    assert "KeyError" in give_up_reason(FailureKind.UNEXPECTED, KeyError("list_id"), 4)


@given(
    user=st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
    password=st.from_regex(r"[A-Za-z0-9!%^*()_+=-]{4,30}", fullmatch=True),
    host=st.from_regex(r"[a-z0-9.]{1,20}", fullmatch=True),
)
def test_redact_removes_dsn_passwords(user: str, password: str, host: str) -> None:
    text = f'File "x.py", line 3\nconnect failed: postgresql://{user}:{password}@{host}:5432/db trace'
    out = redact(text)
    assert f":{password}@" not in out
    assert f"postgresql://{user}:***@{host}" in out


def test_redact_removes_key_value_secrets() -> None:
    assert "hunter2" not in redact("password=hunter2 token: abc.def api_key=XYZ")
    assert redact("nothing secret here") == "nothing secret here"


def _given_up(run_id: uuid.UUID, offset: int, reason: str) -> GivenUp:
    message = AudienceMembership.model_validate(
        {
            "run_id": run_id,
            "seq": 0,
            "audience_id": "a",
            "data_source": "web",
            "id_type": "ecid",
            "mode": "delta",
        }
    )
    delivery = Delivery(message=message, topic="t", partition=0, offset=offset, key=None, headers=())
    return GivenUp(delivery, FailureKind.UNEXPECTED, KeyError("x"), reason)


def test_each_run_given_up_is_failed_once_with_its_first_reason() -> None:
    a, b = sorted([uuid.uuid4(), uuid.uuid4()])
    runs = runs_given_up([_given_up(b, 1, "first b"), _given_up(a, 2, "first a"), _given_up(b, 3, "second b")])
    assert {run: item.reason for run, item in runs.items()} == {a: "first a", b: "first b"}
    assert list(runs) == [a, b]  # locked in one order


def test_a_membership_batch_given_up_before_its_run_opened_records_the_run_failed() -> None:
    run = uuid.uuid4()
    new = unrecorded_run(_given_up(run, 1, "bug"))
    assert new is not None
    assert (new.run_id, new.direction, new.state, new.audience_id, new.mode) == (run, "import", "failed", "a", "delta")


def test_every_pool_acquire_is_bounded() -> None:
    """Every connection is taken through shared.db.acquire (DB_ACQUIRE_TIMEOUT_S), never a bare pool.acquire()."""
    bare = re.compile(r"\.acquire\(\)")
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{n}"
        for root in ("services", "shared")
        for path in sorted(Path(REPO_ROOT, root).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if bare.search(line) and not line.lstrip().startswith("#")
    ]
    assert offenders == []
