"""ecsim's profile store and inbound file processing, in process over a temporary file drop zone:
sync vs overwrite, removals, unknown traits, invalid IDs, rejections, and all-or-nothing application."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ecsim.inbound import InboundProcessor
from services.ecsim.profiles import ProfileStore, decode_id, encode_id
from services.ecsim.store import AamStore
from services.ecsim.zones import FaultyDropZone, ZoneFault
from shared.dropzone import DropZoneUnavailable, FileDropZone

MID, CRM, OTHER = 500, 600, 700  # ECID data source, declared one, a second trait owner
T1, T2, T3, RULE, CRM_T = 11, 12, 13, 14, 21  # onboarded traits of MID (RULE is rule-based)
O1 = 31  # onboarded trait of OTHER
DAY = "acme/date=2024-05-01"


def ecid(i: int) -> str:
    return f"{i:038d}"


class FlakyFault(ZoneFault):
    """Fails ``operation`` once it has been checked ``after`` times, until cleared."""

    def __init__(self, operation: str, after: int) -> None:
        super().__init__()
        self.operation = operation
        self.after = after
        self.seen = 0
        self.on = True

    def check(self, url: str, operation: str, name: str | None = None) -> None:
        if self.on and operation == self.operation:
            self.seen += 1
            if self.seen > self.after:
                raise DropZoneUnavailable("flaky", url=url, operation=operation)

    def clear(self) -> None:
        self.on = False


def _seed(store: AamStore) -> None:
    def trait(sid: int, ds: int, kind: str = "ON_BOARDED_TRAIT") -> dict[str, Any]:
        rule = {"traitRule": 'x=="1"'} if kind == "RULE_BASED_TRAIT" else {}
        return {"sid": sid, "name": f"t{sid}", "traitType": kind, "dataSourceId": ds, "folderId": 0, **rule}

    store.seed(
        {
            "datasources": [
                {"dataSourceId": MID, "name": "visitors", "idType": "COOKIE"},
                {"dataSourceId": CRM, "name": "crm", "idType": "CROSS_DEVICE"},
                {"dataSourceId": OTHER, "name": "other", "idType": "CROSS_DEVICE"},
                {"dataSourceId": 800, "name": "closed", "inboundS2S": False},
            ],
            "traits": [
                trait(T1, MID),
                trait(T2, MID),
                trait(T3, MID),
                trait(RULE, MID, "RULE_BASED_TRAIT"),
                trait(CRM_T, CRM),
                trait(O1, OTHER),
            ],
        }
    )


class Env:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = AamStore()
        _seed(self.store)
        self.profiles = ProfileStore()
        self.fault = ZoneFault()
        self.zone = FaultyDropZone(FileDropZone(root), self.fault)
        self.proc = InboundProcessor(self.store, self.profiles, self.zone)

    def put(self, name: str, content: bytes, *, folder: str = DAY) -> str:
        path = self.root / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return f"{folder}/{name}"

    def members(self, sid: int) -> list[str]:
        return sorted(self.profiles.members(sid))

    def history(self, dpid: int) -> list[dict[str, Any]]:
        return self.store.inbound_history(dpid).items


@pytest.fixture
async def env(tmp_path: Path) -> Any:
    e = Env(tmp_path / "export")
    yield e
    await e.zone.close()


def lines(*rows: str) -> bytes:
    return "".join(r + "\n" for r in rows).encode()


# --- the profile store -------------------------------------------------------------------------------------


@given(st.one_of(st.text(min_size=1, max_size=80), st.integers(0, 10**38 - 1).map(ecid)))
def test_compact_keys_give_back_the_exact_id(user_id: str) -> None:
    assert decode_id(encode_id(user_id)) == user_id


def test_compact_keys_are_small_and_distinct() -> None:
    assert isinstance(encode_id(ecid(5)), int)
    assert isinstance(encode_id("ab" * 32), bytes)
    assert isinstance(encode_id("AB" * 32), str)  # upper-case hex is another id: kept as given
    assert encode_id(ecid(5)) != encode_id("5")


def test_store_semantics_counts_and_rollback() -> None:
    store = ProfileStore()
    tx = store.transaction()
    tx.apply(1, "a", [1, 2])
    tx.apply(1, "b", [2, 1])
    tx.apply(1, "a", [3], [1])  # sync: adds and removes
    tx.apply(1, "b", [4], [4])  # removal wins over an add of the same trait
    tx.apply(2, "a", [9])
    tx.apply(1, "b", [5], replace={1, 2, 5})  # overwrite: replaces the owner's traits only
    tx.commit()
    assert store.profile("a") == {1: [2, 3], 2: [9]}
    assert store.profile("b") == {1: [5]}
    assert (store.member_count(1), store.member_count(2), store.member_count(5)) == (0, 1, 1)
    assert (tx.added, tx.removed) == (7, 3)

    tx2 = store.transaction()
    tx2.apply(1, "c", [2, 3])
    assert store.traits(1, "c") == store.traits(1, "a") == {2, 3}
    tx2.apply(1, "a", [], [2, 3])
    assert store.profile("a") == {2: [9]}
    assert (tx2.added, tx2.removed, tx2.users_changed) == (2, 2, 2)
    tx2.rollback()
    assert store.profile("a") == {1: [2, 3], 2: [9]}
    assert store.profile("c") == {}
    assert (store.member_count(2), store.member_count(3)) == (1, 1)
    assert sorted(store.members(2)) == ["a"]


# --- processing files --------------------------------------------------------------------------------------


async def test_sync_files_add_and_remove_only_onboarded_traits(env: Env) -> None:
    env.put(
        "ftp_dpm_500_1714521600.sync",
        lines(
            f"{ecid(1)}\td_sid={T1},d_sid={T2}",
            f"{ecid(2)}\td_sid={T1}, d_sid=999",  # 999 is no trait: T1 only
            f"{ecid(3)}\td_sid=999,d_sid={RULE},d_sid={CRM_T}",  # nothing onboarded of MID: no trait realised
            f"{'1' * 37}\td_sid={T1}",  # not an ECID
            "no tab here",
            f"{ecid(4)}\td_sid=x",
            "",
            f"{ecid(5)}\tproduct=tablet",  # a signal realises nothing
        ),
    )
    [receipt] = await env.proc.scan()
    assert env.members(T1) == [ecid(1), ecid(2)]
    assert env.members(T2) == [ecid(1)]
    counters = {k: receipt[k] for k in ("recordsReceived", "formatErrors", "invalidAamIds", "noTraitRealized")}
    assert counters == {"recordsReceived": 7, "formatErrors": 2, "invalidAamIds": 1, "noTraitRealized": 2}
    assert (receipt["recordsProcessed"], receipt["storedRecords"], receipt["noMatchingAamId"]) == (7, 2, 0)
    assert receipt["storedRecords"] == (
        receipt["recordsProcessed"] - receipt["formatErrors"] - receipt["invalidAamIds"] - receipt["noTraitRealized"]
    )
    assert (receipt["totalRealizedTraits"], receipt["totalTraitsFailedValidation"]) == (3, 4)
    assert receipt["receipt"]["Records received"] == 7
    assert receipt["receipt"]["Stored Records"] == 2
    assert {s["reason"] for s in receipt["errorSamples"]} == {"no TAB", "bad trait token", "invalid user id"}
    assert env.history(MID) == [receipt]
    assert (env.root / "processed" / DAY / "ftp_dpm_500_1714521600.sync").exists()

    env.put(
        "ftp_dpm_500_1714521601.sync",
        lines(f"{ecid(1)}\td_unsid={T1},{T2}:0", f"{ecid(2)}\t{T1}:-1,d_sid={T3}", f"{ecid(6)}\td_unsid={T1}"),
    )
    [second] = await env.proc.scan()
    assert (env.members(T1), env.members(T2), env.members(T3)) == ([], [], [ecid(2)])
    # ecid(6) never held T1: the line names an onboarded trait, so it is stored, but removes nothing.
    assert (second["storedRecords"], second["totalRemovedTraits"]) == (3, 3)


async def test_overwrite_replaces_the_data_source_traits_of_listed_users_only(env: Env) -> None:
    env.put("ftp_dpm_500_1714521600.sync", lines(*(f"{ecid(i)}\td_sid={T1},d_sid={T2}" for i in (1, 2, 3))))
    # IDs of MID qualifying for traits of OTHER (target DPID): kept through MID's overwrite.
    env.put("ftp_dpm_500_700_1714521601.sync", lines(f"{ecid(1)}\td_sid={O1},d_sid={T1}"))
    await env.proc.scan()
    assert env.profiles.profile(ecid(1)) == {MID: sorted([O1, T1, T2])}  # T1 of MID is no trait of OTHER
    env.put(
        "ftp_dpm_500_1714521602.overwrite.gz",
        gzip.compress(lines(f"{ecid(1)}\td_sid={T3}", f"{ecid(2)}\t", f"{ecid(3)}\td_sid=999,d_unsid={T1}")),
    )
    [receipt] = await env.proc.scan()
    assert env.profiles.profile(ecid(1)) == {MID: sorted([O1, T3])}
    assert env.profiles.profile(ecid(2)) == {}  # an empty list clears
    assert env.profiles.profile(ecid(3)) == {MID: [T1, T2]}  # nothing realised: untouched
    assert (receipt["storedRecords"], receipt["noTraitRealized"], receipt["removalsIgnored"]) == (2, 1, 1)
    assert receipt["totalRemovedTraits"] == 4  # T1, T2 of ecid(1) and of ecid(2)
    assert receipt["mode"] == "overwrite"


async def test_declared_data_sources_take_declared_ids(env: Env) -> None:
    hashed = "ab" * 32
    env.put(
        "ftp_dpm_600_1714521600.sync", lines(f"{hashed}\td_sid={CRM_T}", f"CRM-1\td_sid={CRM_T}", f"a:b\td_sid={CRM_T}")
    )
    [receipt] = await env.proc.scan()
    assert env.members(CRM_T) == ["CRM-1", hashed]
    assert (receipt["storedRecords"], receipt["invalidAamIds"]) == (2, 1)
    assert env.profiles.profile(hashed) == {CRM: [CRM_T]}


async def test_files_that_cannot_be_processed_are_rejected_with_a_receipt(env: Env) -> None:
    good = lines(f"{ecid(1)}\td_sid={T1}")
    keys = {
        "layout": env.put("ftp_dpm_500_1714521600.sync", good, folder="acme"),
        "grammar": env.put("ftp_dpm_500_171452160.sync", good),
        "unknown": env.put("ftp_dpm_999_1714521600.sync", good),
        "closed": env.put("ftp_dpm_800_1714521600.sync", good),
        "empty": env.put("ftp_dpm_500_1714521601.sync", b"\n\n"),
        "gzip": env.put("ftp_dpm_500_1714521602.sync.gz", gzip.compress(good * 50)[:-12]),
    }
    receipts = {r["objectKey"]: r for r in await env.proc.scan()}
    reasons = {what: receipts[key]["reason"] for what, key in keys.items()}
    assert reasons == {
        "layout": "not under <partner>/date=YYYY-MM-DD/",
        "grammar": "bad file name: timestamp is not 10 digits",
        "unknown": "unknown data source 999",
        "closed": "data source 800 does not accept inbound files",
        "empty": "empty file: no record",
        "gzip": "corrupt gzip: the file is not a complete gzip stream",
    }
    assert all(r["success"] is False and r["storedRecords"] == 0 for r in receipts.values())
    assert env.members(T1) == []  # the corrupt file's complete lines were rolled back
    assert receipts[keys["unknown"]]["dataSourceId"] is None
    assert [r["dataFileName"] for r in env.history(MID)] == [
        "ftp_dpm_500_171452160.sync",
        "ftp_dpm_500_1714521601.sync",
        "ftp_dpm_500_1714521602.sync.gz",
        "ftp_dpm_500_1714521600.sync",
    ]
    for key in keys.values():
        assert (env.root / "rejected" / key).exists()
        assert (env.root / "rejected" / (key + ".reason.txt")).read_text() == receipts[key]["reason"]
    assert await env.zone.list("") == []

    # The same name again is not processed twice.
    env.put("ftp_dpm_500_1714521603.sync", good)
    await env.proc.scan()
    env.put("ftp_dpm_500_1714521603.sync", lines(f"{ecid(2)}\td_sid={T1}"))
    [dup] = await env.proc.scan()
    assert dup["reason"] == "duplicate: a file of this name was already processed"
    assert env.members(T1) == [ecid(1)]


async def test_an_outage_in_the_middle_of_a_file_rolls_it_back_and_it_is_applied_once_later(env: Env) -> None:
    # Over 2 MiB: read in several chunks, so the outage starts half-way through.
    rows = [f"{ecid(i)}\td_sid={T1},d_sid={T2}" for i in range(60_000)]
    env.put("ftp_dpm_500_1714521600.sync", lines(*rows))
    flaky = FlakyFault("read", after=2)
    env.zone.fault = flaky
    with pytest.raises(DropZoneUnavailable):
        await env.proc.scan()
    assert env.profiles.member_count(T1) == 0
    assert env.history(MID) == []
    assert [o.name for o in await env.zone.list("")] == [f"{DAY}/ftp_dpm_500_1714521600.sync"]

    flaky.clear()
    [receipt] = await env.proc.scan()
    assert (receipt["storedRecords"], env.profiles.member_count(T1), env.profiles.member_count(T2)) == (60_000,) * 3


async def test_a_failed_move_is_retried_without_processing_again(env: Env) -> None:
    env.put("ftp_dpm_500_1714521600.sync", lines(f"{ecid(1)}\td_sid={T1}", f"{ecid(2)}\td_sid={T2}"))
    flaky = FlakyFault("move", after=0)
    env.zone.fault = flaky
    with pytest.raises(DropZoneUnavailable):
        await env.proc.scan()
    assert len(env.history(MID)) == 1
    assert env.proc.state()["pending_moves"] == [f"{DAY}/ftp_dpm_500_1714521600.sync"]
    flaky.clear()
    assert await env.proc.scan() == []
    assert len(env.history(MID)) == 1
    assert (env.root / "processed" / DAY / "ftp_dpm_500_1714521600.sync").exists()
    assert env.proc.state()["pending_moves"] == []
