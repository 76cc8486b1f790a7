"""The synthetic population: deterministic, exact sizes and overlaps, the promised shares of valid and
invalid IDs, and O(1) random access so nothing is materialised."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.ids import declared_key, id_problem, is_ecid
from shared.population import Population, PopulationSegment, PopulationSpec, _Permutation, chained


def _spec(**overrides: object) -> PopulationSpec:
    values: dict[str, object] = {
        "seed": 11,
        "recipients": 4000,
        "unknown_profiles": 300,
        "malformed_profiles": 6,
        "segments": chained([1200, 800, 500], [300, 100], names=["a", "b", "c"]),
    }
    values.update(overrides)
    return PopulationSpec.model_validate(values)


@pytest.fixture(scope="module")
def pop() -> Population:
    return Population(_spec())


def test_everything_follows_from_the_seed(pop: Population) -> None:
    again = Population(_spec())
    assert list(again.recipients()) == list(pop.recipients())
    assert list(again.profiles()) == list(pop.profiles())
    assert list(again.segment_ids("b", "ecid")) == list(pop.segment_ids("b", "ecid"))
    other = Population(_spec(seed=12))
    assert [r.ecids for r in other.recipients(1, 50)] != [r.ecids for r in pop.recipients(1, 50)]
    assert {p.recipient for p in other.segment_members("a")} != {p.recipient for p in pop.segment_members("a")}


def test_recipients_have_addresses_crm_ids_and_some_ecids(pop: Population) -> None:
    recipients = list(pop.recipients())
    assert [r.index for r in recipients] == list(range(1, 4001))
    r7 = pop.recipient(7)
    assert (r7.email, r7.crm_id) == ("person7@example.com", "CRM000000007")
    assert r7.declared_id == declared_key("person7@example.com", "sha256")
    counts = [len(r.ecids) for r in recipients]
    assert set(counts) <= {0, 1, 2, 3}
    assert 0.17 < counts.count(0) / len(counts) < 0.23  # no_ecid_share 0.2
    all_ecids = [e for r in recipients for e in r.ecids]
    assert all(is_ecid(e) for e in all_ecids)
    assert len(set(all_ecids)) == len(all_ecids)
    with pytest.raises(IndexError):
        pop.recipient(4001)


def test_profiles_known_unknown_and_malformed(pop: Population) -> None:
    profiles = list(pop.profiles())
    assert len(profiles) == pop.profile_count == 3200 + 300 + 6  # known_share 0.8 of 4000, exactly
    known = [p for p in profiles if p.kind == "known"]
    assert len(known) == pop.known_count == 3200
    by_recipient = {p.recipient: p for p in known}
    assert len(by_recipient) == 3200
    for r in pop.recipients():
        profile = pop.profile_of_recipient(r.index)
        assert pop.is_known(r.index) == (profile is not None) == (r.index in by_recipient)
        if profile is not None:
            assert (profile.ecids, profile.declared_id) == (r.ecids, r.declared_id)

    recipient_ids = {e for r in pop.recipients() for e in r.ecids} | {r.declared_id for r in pop.recipients()}
    unknown = [p for p in profiles if p.kind == "unknown"]
    assert len(unknown) == 300
    assert all(len(p.ecids) == 1 and is_ecid(p.ecids[0]) for p in unknown)
    assert sum(p.declared_id is not None for p in unknown) == 150
    assert not recipient_ids & {i for p in unknown for i in (*p.ecids, p.declared_id) if i}

    malformed = [p for p in profiles if p.kind == "malformed"]
    assert sorted(len(p.ecids[0]) for p in malformed) == [37, 37, 37, 39, 39, 39]
    assert all(id_problem("ecid", p.ecids[0]) == "not 38 digits" and p.declared_id is None for p in malformed)
    assert all(p.ids("declared") == () for p in malformed)


def test_segments_have_exact_sizes_and_overlaps(pop: Population) -> None:
    members = {s.name: {p.index for p in pop.segment_members(s.name)} for s in pop.segment_specs}
    assert {k: len(v) for k, v in members.items()} == {"a": 1200, "b": 800, "c": 500}
    assert len(members["a"] & members["b"]) == pop.overlap("a", "b") == 300
    assert len(members["b"] & members["c"]) == pop.overlap("b", "c") == 100
    assert len(members["a"] & members["c"]) == pop.overlap("a", "c") == 0
    for p in range(pop.profile_count):
        expected = [name for name, m in members.items() if p in m]
        assert pop.segments_of_profile(p) == expected
        assert [pop.in_segment(p, name) for name in members] == [p in m for m in members.values()]
    for r in pop.recipients(1, 200):
        profile = pop.profile_of_recipient(r.index)
        assert pop.segments_of_recipient(r.index) == ([] if profile is None else pop.segments_of_profile(profile.index))
    # A delivery of a type lists the IDs of that type the segment's profiles carry.
    ecids = list(pop.segment_ids("a", "ecid"))
    assert ecids == [e for p in pop.segment_members("a") for e in p.ecids]
    declared = list(pop.segment_ids("a", "declared"))
    assert len(declared) == sum(p.declared_id is not None for p in pop.segment_members("a"))


@given(n=st.integers(min_value=0, max_value=3000), seed=st.integers())
def test_the_shuffle_is_a_bijection(n: int, seed: int) -> None:
    perm = _Permutation(n, seed, "order")
    image = [perm(x) for x in range(n)]
    assert sorted(image) == list(range(n))
    assert all(perm.inverse(y) == x for x, y in enumerate(image))


def test_generators_stream_a_huge_population_without_building_it() -> None:
    huge = Population(_spec(recipients=10_000_000, segments=[PopulationSegment(name="big", size=5_000_000, start=100)]))
    started = time.monotonic()
    stream = huge.segment_members("big")
    assert isinstance(stream, Iterator)
    first = list(itertools.islice(stream, 1000))
    assert len({p.index for p in first}) == 1000
    assert huge.recipient(9_999_999).email == "person9999999@example.com"
    assert time.monotonic() - started < 2.0


def test_spec_validation() -> None:
    with pytest.raises(ValidationError, match="beyond"):
        _spec(recipients=10, unknown_profiles=0, malformed_profiles=0, segments=[PopulationSegment(name="x", size=9)])
    with pytest.raises(ValidationError, match="unique"):
        _spec(segments=[PopulationSegment(name="x", size=1), PopulationSegment(name="x", size=2)])
    with pytest.raises(ValueError, match="overlap"):
        chained([10, 5], [6])
    with pytest.raises(ValueError, match="one overlap per"):
        chained([10, 5], [])
    assert [(s.name, s.start, s.size) for s in chained([10, 5, 5], [2, 5])] == [
        ("a", 0, 10),
        ("b", 8, 5),
        ("c", 8, 5),
    ]
    empty = Population(PopulationSpec(recipients=0, unknown_profiles=0, malformed_profiles=0))
    assert (list(empty.recipients()), list(empty.profiles())) == ([], [])
