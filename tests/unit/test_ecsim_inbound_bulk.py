"""ecsim's bulk path for inbound files gives exactly what the line-by-line path gives: the same receipt
(every counter, error samples, devices) and the same profile changes, for any file, whether it takes the
bridge's form (applied in bulk) or not (handed back, rolled back, processed line by line)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ecsim.inbound import InboundProcessor
from services.ecsim.profiles import ProfileStore, encode_id
from tests.unit.test_ecsim_files_inbound import CRM, CRM_T, MID, O1, RULE, T1, T2, T3, Env, ecid

USERS = [ecid(i) for i in range(1, 7)] + [hashlib.sha256(b"%d" % i).hexdigest() for i in range(3)]
TRAITS = [
    f"d_sid={T1}",
    f"d_sid={T1},d_sid={T2}",
    f"d_sid={T2}, d_sid={T3}",
    f"d_unsid={T1}",
    f"d_sid={T3},d_unsid={T2}",
    f"d_sid={CRM_T}",
    f"d_unsid={CRM_T}",
    f"d_sid={O1},d_sid=999",
    f"d_sid={RULE}",
    f"{T2}:0",
    f"d_sid={T1},d_sid=999",  # one realised, one failing validation
    f"d_sid={CRM_T},d_sid={T1}",
    "",
    "product=tablet",
    "x",  # a bad token
    f"d_sid={T1}\td_sid={T2}",  # two TABs
]
EXTRA_LINES = ["", "no tab here", f"\ufeff{ecid(9)}\td_sid={T1}", f"{ecid(8)}\td_sid={T1}\r", f"{'1' * 37}\td_sid={T1}"]
TIMES = {"startTime", "endTime", "receivedTime"}


def _comparable(receipt: dict[str, Any]) -> dict[str, Any]:
    platform = {k: v for k, v in receipt["receipt"].items() if not k.startswith("Job ")}
    return {**{k: v for k, v in receipt.items() if k not in TIMES}, "receipt": platform}


def _state(env: Env) -> dict[str, Any]:
    users = [*USERS, ecid(8), ecid(9)]
    return {
        "profiles": {u: env.profiles.profile(u) for u in users},
        "counts": {t: env.profiles.member_count(t) for t in (T1, T2, T3, CRM_T, O1, RULE)},
        "stats": env.profiles.stats(),
    }


async def _run(root: Path, files: list[tuple[str, bytes]], *, bulk: bool) -> tuple[list[Any], dict[str, Any], int]:
    env = Env(root)
    env.proc = InboundProcessor(env.store, env.profiles, env.zone, bulk=bulk)
    receipts = []
    try:
        for name, content in files:
            env.put(name, content)
            receipts += [_comparable(r) for r in await env.proc.scan()]
        return receipts, _state(env), env.proc.counts["bulk"]
    finally:
        await env.zone.close()


def _both(files: list[tuple[str, bytes]]) -> tuple[Any, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        return (
            asyncio.run(_run(Path(tmp) / "lines", files, bulk=False)),
            asyncio.run(_run(Path(tmp) / "bulk", files, bulk=True)),
        )


GOOD_TRAITS = TRAITS[:14]  # what the bulk path takes (a signal realises nothing, but is no error)


@st.composite
def inbound_file(draw: st.DrawFn, index: int) -> tuple[str, bytes]:
    """A file of one data source, often in the bridge's form (each user once, valid lines), sometimes not."""
    dpid, mode, gz = (
        draw(st.sampled_from([MID, CRM])),
        draw(st.sampled_from(["sync", "overwrite"])),
        draw(st.booleans()),
    )
    pool = USERS[:6] if dpid == MID else draw(st.sampled_from([USERS[6:], USERS[:6]]))  # declared: digests, ECIDs
    if draw(st.booleans()):
        users = draw(st.lists(st.sampled_from(pool), unique=True, min_size=1))
        rows = [f"{u}\t{draw(st.sampled_from(GOOD_TRAITS))}" for u in users]
    else:
        any_line = st.tuples(st.sampled_from(USERS), st.sampled_from(TRAITS)).map(lambda p: f"{p[0]}\t{p[1]}")
        rows = draw(st.lists(st.one_of(any_line, st.sampled_from(EXTRA_LINES)), max_size=12))
    body = ("".join(f"{x}\n" for x in rows) if draw(st.booleans()) else "\n".join(rows)).encode()
    name = f"ftp_dpm_{dpid}_{1714521600 + index}.{mode}" + (".gz" if gz else "")
    return name, gzip.compress(body) if gz else body


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_bulk_and_line_by_line_give_the_same_receipts_and_profiles(data: st.DataObject) -> None:
    files = [data.draw(inbound_file(i)) for i in range(data.draw(st.integers(1, 3)))]
    by_line, in_bulk = _both(files)
    assert in_bulk[:2] == by_line[:2]
    assert by_line[2] == 0


def _ecid_lines(users: range, traits: str) -> bytes:
    return "".join(f"{ecid(i)}\t{traits}\n" for i in users).encode()


def test_the_bridge_files_take_the_bulk_path_and_match_line_by_line() -> None:
    # Several 1 MiB blocks, two trait lists (a mirror's adds and removes), gzip and plain, both ID types.
    adds = _ecid_lines(range(1, 40_001), f"d_sid={T1},d_sid={T2}")
    removes = _ecid_lines(range(40_001, 50_001), f"d_unsid={T1}")
    hashed = "".join(f"{hashlib.sha256(b'%d' % i).hexdigest()}\td_sid={CRM_T}\n" for i in range(20_000)).encode()
    files = [
        ("ftp_dpm_500_1714521600.sync.gz", gzip.compress(adds)),
        ("ftp_dpm_500_1714521601.sync", removes + _ecid_lines(range(1, 5), f"d_unsid={T2}")[:-1]),  # no final \n
        ("ftp_dpm_600_1714521602.overwrite.gz", gzip.compress(hashed)),
        ("ftp_dpm_600_1714521603.sync", _ecid_lines(range(1, 30_001), f"d_sid={CRM_T}")),  # ECIDs as declared IDs
    ]
    by_line, in_bulk = _both(files)
    assert in_bulk[:2] == by_line[:2]
    assert in_bulk[2] == 4
    assert by_line[1]["counts"][T1] == 40_000
    assert by_line[1]["counts"][CRM_T] == 50_000


def test_a_file_leaving_the_bridge_form_late_is_rolled_back_and_processed_line_by_line() -> None:
    body = _ecid_lines(range(1, 60_001), f"d_sid={T1}")  # ~2.6 MB: blocks applied in bulk first
    for tail in (_ecid_lines(range(5, 6), f"d_sid={T2}"), b"\n", b"bad line\n", b"\xef\xbb\xbf\n"):
        files = [("ftp_dpm_500_1714521600.sync.gz", gzip.compress(body + tail))]
        by_line, in_bulk = _both(files)
        assert in_bulk[:2] == by_line[:2]
        assert in_bulk[2] == 0


def test_a_corrupt_gzip_is_rejected_the_same_way() -> None:
    good = gzip.compress(_ecid_lines(range(1, 30_001), f"d_sid={T1}"))
    files = [("ftp_dpm_500_1714521600.sync.gz", good[: len(good) // 2])]
    by_line, in_bulk = _both(files)
    assert in_bulk[:2] == by_line[:2]
    assert by_line[0][0]["status"] == "rejected"
    assert by_line[1]["counts"][T1] == 0


# --- the trait-major store's transactions ------------------------------------------------------------------

ops = st.lists(
    st.tuples(
        st.sampled_from([1, 2]),
        st.sets(st.sampled_from(USERS[:5]), min_size=1),
        st.lists(st.sampled_from([1, 2, 3]), max_size=3),
        st.lists(st.sampled_from([1, 2, 3]), max_size=2),
        st.one_of(st.none(), st.just(frozenset({1, 2}))),
    ),
    max_size=8,
)


def _model_apply(model: dict[tuple[int, str], set[int]], op: Any) -> tuple[int, int]:
    """The former user-major semantics, line by line: (added, removed)."""
    namespace, users, adds, removes, replace = op
    added = removed = 0
    for user in users:
        old = model.get((namespace, user), set())
        kept = old if replace is None else {t for t in old if t not in replace}
        new = (kept | set(adds)) - set(removes)
        added, removed = added + len(new - old), removed + len(old - new)
        model[(namespace, user)] = new
    return added, removed


def _snapshot(store: ProfileStore) -> dict[tuple[int, str], set[int]]:
    return {(ns, u): set(traits) for u in USERS[:5] for ns, traits in store.profile(u).items()}


@given(ops, ops)
def test_transactions_apply_like_the_line_model_and_roll_back_exactly(first: Any, second: Any) -> None:
    store = ProfileStore()
    model: dict[tuple[int, str], set[int]] = {}
    tx = store.transaction()
    for op in first:
        namespace, users, adds, removes, replace = op
        before = (tx.added, tx.removed)
        tx.apply_many(namespace, {encode_id(u) for u in users}, adds, removes, replace=replace)
        want = _model_apply(model, op)
        assert (tx.added - before[0], tx.removed - before[1]) == want
    tx.commit()
    committed = _snapshot(store)
    assert committed == {k: v for k, v in model.items() if v}
    tx2 = store.transaction()
    for namespace, users, adds, removes, replace in second:
        for user in users:
            tx2.apply(namespace, user, adds, removes, replace=replace)
    tx2.rollback()
    assert _snapshot(store) == committed
    assert store.stats()["memberships"] == sum(len(v) for v in committed.values())
