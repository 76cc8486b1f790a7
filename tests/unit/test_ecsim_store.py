"""ecsim's in-memory store: CRUD, paging, integration codes, export controls, rules, destinations."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ecsim import rules
from services.ecsim.store import (
    AamStore,
    InUse,
    InvalidInput,
    LimitExceeded,
    Limits,
    ListParams,
    ReadOnly,
    StoreConflict,
    StoreNotFound,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> AamStore:
    return AamStore(partner_id=77, clock=clock)


def _ds(store: AamStore, code: str | None = "ds", **extra: Any) -> int:
    body = {"name": f"data source {code}", "integrationCode": code, **extra}
    ds_id: int = store.create_datasource(body)["dataSourceId"]
    return ds_id


def _trait(store: AamStore, ds: int, code: str | None = None, **extra: Any) -> int:
    body = {"name": f"trait {code}", "traitType": "ON_BOARDED_TRAIT", "dataSourceId": ds, "folderId": 0}
    sid: int = store.create_trait({**body, "integrationCode": code, **extra})["sid"]
    return sid


def _segment(store: AamStore, ds: int, rule: str, code: str | None = None) -> int:
    body = {"name": "s", "segmentRule": rule, "dataSourceId": ds, "folderId": 0, "integrationCode": code}
    sid: int = store.create_segment(body)["sid"]
    return sid


# --- data sources ----------------------------------------------------------------------------------------


def test_data_source_crud_keeps_creation_audit_and_times(store: AamStore, clock: Clock) -> None:
    created = store.create_datasource({"name": "Adobe Campaign (MID)", "integrationCode": "mid"}, uid=5)
    ds_id = created["dataSourceId"]
    assert created["pid"] == 77
    assert created["createTime"] == created["updateTime"] == clock.now
    assert (created["crUID"], created["upUID"]) == (5, 5)
    assert store.get_datasource(ds_id) == created

    clock.now += 1000
    updated = store.update_datasource(ds_id, {"name": "renamed", "integrationCode": "mid2"}, uid=6)
    assert updated["name"] == "renamed"
    assert updated["createTime"] == created["createTime"]
    assert updated["updateTime"] == clock.now
    assert (updated["crUID"], updated["upUID"]) == (5, 6)
    assert store.list_datasources(integration_code="mid").items == []
    assert [d["dataSourceId"] for d in store.list_datasources(integration_code="mid2").items] == [ds_id]

    store.delete_datasource(ds_id)
    with pytest.raises(StoreNotFound):
        store.get_datasource(ds_id)
    with pytest.raises(StoreNotFound):
        store.delete_datasource(ds_id)


def test_data_export_restrictions_round_trip(store: AamStore) -> None:
    ds_id = _ds(store, "declared", dataExportRestrictions=["PII", "PII", "OFFSITE_ADVERTISING"])
    assert store.get_datasource(ds_id)["dataExportRestrictions"] == ["PII", "OFFSITE_ADVERTISING"]
    assert store.get_datasource(_ds(store, "open"))["dataExportRestrictions"] == []
    with pytest.raises(InvalidInput):
        _ds(store, "bad", dataExportRestrictions=["not a label"])


def test_reads_are_copies(store: AamStore) -> None:
    ds_id = _ds(store, dataExportRestrictions=["PII"])
    store.get_datasource(ds_id)["dataExportRestrictions"].append("X")
    store.list_datasources().items[0]["name"] = "changed"
    assert store.get_datasource(ds_id)["dataExportRestrictions"] == ["PII"]
    assert store.get_datasource(ds_id)["name"] == "data source ds"


def test_duplicate_integration_codes_conflict_per_kind(store: AamStore) -> None:
    ds_id = _ds(store, "shared-code")
    with pytest.raises(StoreConflict):
        _ds(store, "shared-code")
    # A trait may reuse a data source's code: uniqueness is per kind of object.
    sid = _trait(store, ds_id, "shared-code")
    with pytest.raises(StoreConflict) as err:
        _trait(store, ds_id, "shared-code")
    assert err.value.status == 409
    assert err.value.body()["code"] == "conflict"
    other = _trait(store, ds_id, "other")
    body = {"name": "x", "traitType": "ON_BOARDED_TRAIT", "dataSourceId": ds_id, "folderId": 0}
    with pytest.raises(StoreConflict):
        store.update_trait(other, {**body, "integrationCode": "shared-code"})
    # Keeping one's own code is no conflict; blank codes are no code at all.
    store.update_trait(sid, {**body, "integrationCode": "shared-code"})
    assert _trait(store, ds_id, "") != _trait(store, ds_id, "  ")


def test_data_source_in_use_cannot_be_deleted(store: AamStore) -> None:
    ds_id = _ds(store)
    sid = _trait(store, ds_id)
    with pytest.raises(InUse):
        store.delete_datasource(ds_id)
    store.delete_trait(sid)
    store.delete_datasource(ds_id)


# --- traits ----------------------------------------------------------------------------------------------


def test_trait_validation(store: AamStore) -> None:
    ds_id = _ds(store)
    with pytest.raises(InvalidInput) as err:
        store.create_trait({"name": "t", "traitType": "ON_BOARDED_TRAIT", "dataSourceId": ds_id})
    assert err.value.details[0]["field"] == "folderId"
    with pytest.raises(InvalidInput, match="data source 9 does not exist"):
        _trait(store, 9)
    with pytest.raises(InvalidInput, match="traitRule"):
        _trait(store, ds_id, traitType="RULE_BASED_TRAIT")
    with pytest.raises(InvalidInput):
        _trait(store, ds_id, traitType="FOLDER_TRAIT")
    with pytest.raises(InvalidInput):
        store.create_trait(["not", "an", "object"])
    rule_based = store.get_trait(_trait(store, ds_id, traitType="RULE_BASED_TRAIT", traitRule='ic=="x"'))
    assert rule_based["ttl"] == 120
    assert rule_based["traitRuleVersion"] == 1


def test_trait_by_integration_code_follows_updates(store: AamStore) -> None:
    ds_id = _ds(store)
    sid = _trait(store, ds_id, "aud-1")
    assert store.get_trait_by_code("aud-1")["sid"] == sid
    body = {"name": "t", "traitType": "ON_BOARDED_TRAIT", "dataSourceId": ds_id, "folderId": 0}
    updated = store.update_trait(sid, {**body, "integrationCode": "aud-2", "traitRule": 'ic=="2"'})
    assert updated["traitRuleVersion"] == 2
    with pytest.raises(StoreNotFound):
        store.get_trait_by_code("aud-1")
    assert store.get_trait_by_code("aud-2")["sid"] == sid
    store.delete_trait(sid)
    with pytest.raises(StoreNotFound):
        store.get_trait_by_code("aud-2")


def test_trait_list_hides_details_unless_asked(store: AamStore) -> None:
    ds_id = _ds(store)
    _trait(store, ds_id, "code", comments="c")
    [brief] = store.list_traits().items
    [full] = store.list_traits(include_details=True).items
    assert "integrationCode" not in brief
    assert "traitRule" not in brief
    assert full["integrationCode"] == "code"
    assert full["comments"] == "c"


def test_trait_filters(store: AamStore) -> None:
    a, b = _ds(store, "a"), _ds(store, "b")
    in_a = [_trait(store, a, f"a{i}") for i in range(3)]
    in_b = [_trait(store, b, f"b{i}", folderId=7) for i in range(2)]
    assert [t["sid"] for t in store.list_traits(data_source_ids=[a]).items] == in_a
    assert [t["sid"] for t in store.list_traits(data_source_ids=[a, b]).items] == in_a + in_b
    assert [t["sid"] for t in store.list_traits(folder_id=7).items] == in_b
    assert [t["sid"] for t in store.list_traits(integration_code="b1").items] == [in_b[1]]
    assert store.list_traits(integration_code="b1", data_source_ids=[a]).items == []


# --- paging ----------------------------------------------------------------------------------------------


def test_paging_math_and_wrapping(store: AamStore) -> None:
    ds_id = _ds(store)
    sids = [_trait(store, ds_id, f"t{i}") for i in range(25)]

    bare = store.list_traits().body()
    assert isinstance(bare, list)
    assert [t["sid"] for t in bare] == sids

    pages = [store.list_traits(ListParams(page=p, page_size=10)).body() for p in range(4)]
    for page in pages:
        assert isinstance(page, dict)
        assert page["total"] == 25
        assert page["pageSize"] == 10
    assert [len(p["list"]) for p in pages if isinstance(p, dict)] == [10, 10, 5, 0]
    assert [t["sid"] for p in pages if isinstance(p, dict) for t in p["list"]] == sids

    # Either paging parameter alone wraps; the other takes its default (page 0, pageSize 10).
    only_page = store.list_traits(ListParams(page=1)).body()
    assert isinstance(only_page, dict)
    assert (only_page["page"], only_page["pageSize"]) == (1, 10)
    assert [t["sid"] for t in only_page["list"]] == sids[10:20]
    only_size = store.list_traits(ListParams(page_size=3)).body()
    assert isinstance(only_size, dict)
    assert [t["sid"] for t in only_size["list"]] == sids[:3]

    with pytest.raises(InvalidInput):
        ListParams(page=-1)
    with pytest.raises(InvalidInput):
        ListParams(page_size=0)


def test_sort_search_and_filtered_paging(store: AamStore) -> None:
    ds_id = _ds(store)
    for name in ("banana", "apple", "cherry", "apricot"):
        store.create_trait({"name": name, "traitType": "ON_BOARDED_TRAIT", "dataSourceId": ds_id, "folderId": 0})
    by_name = store.list_traits(ListParams(sort_by="name")).items
    assert [t["name"] for t in by_name] == ["apple", "apricot", "banana", "cherry"]
    desc = store.list_traits(ListParams(sort_by="name", descending=True)).items
    assert [t["name"] for t in desc] == ["cherry", "banana", "apricot", "apple"]
    found = store.list_traits(ListParams(search="AP", page=0, page_size=1))
    assert (found.total, [t["name"] for t in found.items]) == (2, ["apple"])
    newest_first = store.list_traits(ListParams(descending=True)).items
    assert [t["name"] for t in newest_first] == ["apricot", "cherry", "apple", "banana"]


@given(count=st.integers(0, 40), page_size=st.integers(1, 15))
def test_pages_concatenate_to_the_whole_list(count: int, page_size: int) -> None:
    store = AamStore()
    ds_id = _ds(store)
    for i in range(count):
        _trait(store, ds_id, f"t{i}")
    everything = store.list_traits().items
    pages, page = [], 0
    while True:
        listing = store.list_traits(ListParams(page=page, page_size=page_size))
        assert listing.total == count
        pages.extend(listing.items)
        if (page + 1) * page_size >= listing.total:
            break
        page += 1
    assert pages == everything
    assert page + 1 == max(1, -(-count // page_size))


# --- segments and rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "traits"),
    [
        ("123T", [123]),
        ("123T OR 456T", [123, 456]),
        ("(1T AND NOT 2T) or 3t", [1, 2, 3]),
        ("NOT NOT 5T", [5]),
        ("FREQUENCY([1T,2T] <= 7D) >= 3", [1, 2]),
        ("RECENCY([9T]) <= 30D AND 4T", [9, 4]),
        ("  7T  ", [7]),
    ],
)
def test_valid_segment_rules(rule: str, traits: list[int]) -> None:
    assert rules.trait_ids(rule) == traits


@pytest.mark.parametrize(
    "rule",
    [
        "",
        "   ",
        "123",
        "T123",
        "123T AND",
        "123T 456T",
        "(123T",
        "123T)",
        "AND 1T",
        "1T; DROP",
        "FREQUENCY(1T)",
    ],
)
def test_invalid_segment_rules(rule: str) -> None:
    with pytest.raises(rules.RuleError):
        rules.trait_ids(rule)


def test_segment_rule_validation_in_the_store(store: AamStore) -> None:
    ds_id = _ds(store)
    sid = _trait(store, ds_id)
    segment = store.get_segment(_segment(store, ds_id, f"{sid}T", "seg"))
    assert segment["segmentRule"] == f"{sid}T"
    with pytest.raises(InvalidInput) as err:
        _segment(store, ds_id, f"{sid}T AND")
    assert err.value.details[0]["field"] == "segmentRule"
    with pytest.raises(InvalidInput, match="traits that do not exist"):
        _segment(store, ds_id, f"{sid}T OR 999999T")
    with pytest.raises(InvalidInput):
        _segment(store, 424242, f"{sid}T")
    with pytest.raises(StoreConflict):
        _segment(store, ds_id, f"{sid}T", "seg")


def test_segments_track_the_traits_they_use(store: AamStore) -> None:
    ds_id = _ds(store)
    t1, t2 = _trait(store, ds_id, "t1"), _trait(store, ds_id, "t2")
    seg = _segment(store, ds_id, f"{t1}T", "seg")
    assert [s["sid"] for s in store.list_segments(contains_trait=t1).items] == [seg]
    with pytest.raises(InUse):
        store.delete_trait(t1)

    body = {"name": "s", "segmentRule": f"{t2}T", "dataSourceId": ds_id, "folderId": 0}
    store.update_segment(seg, {**body, "integrationCode": "seg"})
    assert store.list_segments(contains_trait=t1).items == []
    store.delete_trait(t1)
    assert store.get_segment_by_code("seg")["sid"] == seg
    store.delete_segment(seg)
    store.delete_trait(t2)
    assert store.list_segments(status="active").items == []


# --- destinations ----------------------------------------------------------------------------------------


def test_server_to_server_destinations_are_read_only_through_the_api(store: AamStore) -> None:
    ds_id = _ds(store)
    seg = _segment(store, ds_id, f"{_trait(store, ds_id)}T")
    s2s = {"name": "Campaign", "destinationType": "S2S", "mappings": [{"sid": seg}], "masterDpid": 20}
    with pytest.raises(ReadOnly):
        store.create_destination(s2s)
    created = store.create_destination(s2s, via_api=False, destination_id=5)
    assert created["destinationId"] == 5
    assert created["masterDpid"] == 20  # provisioning details survive
    with pytest.raises(ReadOnly):
        store.update_destination(5, {**s2s, "destinationType": "PUSH"})
    with pytest.raises(ReadOnly):
        store.delete_destination(5)
    with pytest.raises(InUse):
        store.delete_segment(seg)
    assert [d["destinationId"] for d in store.list_destinations(contains_segment=seg).items] == [5]

    push = store.create_destination({"name": "url", "destinationType": "PUSH", "destinationId": 1, "pid": 9})
    assert push["destinationId"] != 1  # ids and partner come from the platform, not the body
    assert push["pid"] == 77
    with pytest.raises(ReadOnly):
        store.update_destination(push["destinationId"], {"name": "x", "destinationType": "S2S"})
    with pytest.raises(InvalidInput, match="segments that do not exist"):
        store.create_destination({"name": "u", "destinationType": "ADS", "mappings": [{"sid": 1}]})
    store.delete_destination(push["destinationId"])


def test_limits_block_creation(clock: Clock) -> None:
    store = AamStore(clock=clock, limits=Limits(traits=2))
    ds_id = _ds(store)
    _trait(store, ds_id)
    last = _trait(store, ds_id)
    with pytest.raises(LimitExceeded):
        _trait(store, ds_id)
    store.delete_trait(last)
    _trait(store, ds_id)


# --- receipts and seeding --------------------------------------------------------------------------------


def test_receipts_are_appended_and_filtered(store: AamStore, clock: Clock) -> None:
    ds_id = _ds(store)
    with pytest.raises(StoreNotFound):
        store.add_receipt(1, {"dataFileName": "x"})
    store.add_receipt(ds_id, {"dataFileName": "ftp_dpm_1_1700000000.sync", "recordsReceived": 3})
    store.add_receipt(ds_id, {"dataFileName": "ftp_dpm_1_1700000001.sync", "recordsReceived": 4})
    history = store.inbound_history(ds_id).items
    assert [r["recordsReceived"] for r in history] == [3, 4]
    assert history[0]["receivedTime"] == clock.now
    only = store.inbound_history(ds_id, data_file_name="ftp_dpm_1_1700000001.sync").items
    assert [r["recordsReceived"] for r in only] == [4]
    page = store.inbound_history(ds_id, ListParams(page=1, page_size=1)).body()
    assert isinstance(page, dict)
    assert page["total"] == 2
    assert page["list"][0]["recordsReceived"] == 4


def test_seed_keeps_given_ids_and_ordering(store: AamStore) -> None:
    created = store.seed(
        {
            "datasources": [
                {"dataSourceId": 500, "name": "MID", "integrationCode": "mid"},
                {"dataSourceId": 20, "name": "Declared", "dataExportRestrictions": ["PII"]},
            ],
            "traits": [{"sid": 9, "name": "t", "traitType": "ON_BOARDED_TRAIT", "dataSourceId": 500, "folderId": 0}],
            "segments": [{"sid": 8, "name": "s", "segmentRule": "9T", "dataSourceId": 500, "folderId": 0}],
            "destinations": [{"destinationId": 3, "name": "Campaign", "destinationType": "S2S"}],
            "receipts": {"500": [{"dataFileName": "f"}]},
        }
    )
    assert [d["dataSourceId"] for d in created["datasources"]] == [500, 20]
    assert [d["dataSourceId"] for d in store.list_datasources().items] == [20, 500]
    assert store.create_datasource({"name": "next"})["dataSourceId"] > 500
    assert store.get_segment(8)["segmentRule"] == "9T"
    assert store.get_destination(3)["destinationType"] == "S2S"
    assert len(store.inbound_history(500).items) == 1
    with pytest.raises(StoreConflict):
        store.seed({"datasources": [{"dataSourceId": 20, "name": "again"}]})
    with pytest.raises(InvalidInput):
        store.seed({"users": []})

    snapshot = store.snapshot()
    assert len(snapshot["traits"]) == 1
    store.reset()
    assert store.snapshot()["datasources"] == []
