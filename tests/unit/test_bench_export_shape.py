"""The export benchmarks' data: N IDs by e-mail (one recipient each) or by ECID (several per recipient)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from tests.bench.__main__ import SCENARIOS
from tests.bench.campaign import ecid, hashed_email
from tests.bench.export_bench import (
    ECIDS_PER_RECIPIENT,
    expected_ids,
    extra_ecid_owners,
    recipients_for,
)


@given(st.integers(min_value=1, max_value=5000))
def test_by_ecid_every_recipient_holds_several_ecids_and_every_ecid_one_owner(n: int) -> None:
    recipients = recipients_for("ecid", n)
    # load_recipients links ECID i to recipient i (1..recipients); the rest are dealt round-robin.
    owners = {ecid(i): i for i in range(1, recipients + 1)} | dict(extra_ecid_owners(recipients, n))
    assert sorted(owners) == sorted(expected_ids("ecid", n))
    held = Counter(owners.values())
    assert set(held) == set(range(1, recipients + 1))
    assert max(held.values()) <= ECIDS_PER_RECIPIENT
    if n >= 2 * ECIDS_PER_RECIPIENT:
        assert min(held.values()) >= ECIDS_PER_RECIPIENT - 1  # several each, not a few recipients with many


def test_a_million_ids_by_ecid_are_a_third_as_many_recipients_with_three_each() -> None:
    assert recipients_for("ecid", 1_000_000) == 333_334
    assert Counter(Counter(o for _, o in extra_ecid_owners(333_334, 1_000_000)).values()) == {2: 333_332, 1: 2}


def test_by_email_one_recipient_per_id() -> None:
    assert recipients_for("email", 1000) == 1000
    assert expected_ids("email", 3) == [hashed_email(1), hashed_email(2), hashed_email(3)]


def test_both_export_scenarios_are_bench_scenarios() -> None:
    assert {"export_1m", "export_1m_ecid"} <= set(SCENARIOS)
