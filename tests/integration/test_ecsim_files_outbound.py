"""ecsim's outbound deliveries, for real (``python -m services.ecsim``): batches written to the import zone
parse back with the bridge's own outbound reader to exactly the membership ecsim was given (a synthetic
population or explicit IDs), full and iter, split, gzip, .info first, through a briefly unavailable zone."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared.formats.lines import LineError
from shared.formats.outbound import (
    DEFAULT_NAMES,
    InfoFile,
    OutboundNames,
    OutboundParser,
    OutboundRecord,
    parse_info,
    parse_outbound_name,
)
from shared.ids import IdType
from shared.population import Population, PopulationSegment, PopulationSpec, chained
from tests.fixtures.ecsim import EcsimEndpoint, ecsim, ecsim_server  # noqa: F401

MID, CRM = 500, 600
S1, S2, S3 = 301, 302, 303
TO_MID, TO_CRM = 41, 42  # destinations whose master data source holds ECIDs, resp. declared IDs

Membership = dict[str, tuple[set[int], set[int]]]


@pytest.fixture
async def seeded(ecsim: EcsimEndpoint) -> EcsimEndpoint:  # noqa: F811
    mappings = [{"sid": s} for s in (S1, S2, S3)]
    await ecsim.seed(
        {
            "datasources": [
                {"dataSourceId": MID, "name": "visitors", "idType": "COOKIE"},
                {"dataSourceId": CRM, "name": "crm", "idType": "CROSS_DEVICE"},
            ],
            "traits": [{"sid": 1, "name": "t", "traitType": "ON_BOARDED_TRAIT", "dataSourceId": MID, "folderId": 0}],
            "segments": [
                {"sid": s, "name": f"s{s}", "segmentRule": "1T", "dataSourceId": MID, "folderId": 0}
                for s in (S1, S2, S3)
            ],
            "destinations": [
                {
                    "destinationId": d,
                    "name": f"d{d}",
                    "destinationType": "S2S",
                    "dataSourceId": ds,
                    "mappings": mappings,
                }
                for d, ds in ((TO_MID, MID), (TO_CRM, CRM))
            ],
        }
    )
    return ecsim


def _read(folder: Path, result: dict[str, Any], names: OutboundNames = DEFAULT_NAMES) -> tuple[InfoFile, Membership]:
    """Parse the batch back: check every part against the .info, and collect each user's line."""
    info = parse_info((folder / result["infoName"]).read_bytes())
    assert info.inconsistencies() == []
    assert [e.file_name for e in info.files] == [f["name"] for f in result["files"]]
    out: Membership = {}
    for entry in info.files:
        data = (folder / entry.file_name).read_bytes()
        assert (len(data), hashlib.md5(data).hexdigest()) == (entry.byte_size, entry.md5)
        parser = OutboundParser(names.parse(entry.file_name))
        for item in parser.parse([data]):
            assert not isinstance(item, LineError), item
            assert isinstance(item, OutboundRecord)
            assert item.user_id not in out, "one line per user"
            out[item.user_id] = (set(item.segments), set(item.removed))
        assert parser.counters.lines == entry.line_count
    return info, out


def _expected(pop: Population, segments: dict[int, str], id_type: IdType) -> Membership:
    out: Membership = {}
    for sid, name in segments.items():
        for user in pop.segment_ids(name, id_type):
            out.setdefault(user, (set(), set()))[0].add(sid)
    return out


async def test_population_segments_are_delivered_full_for_each_id_type(seeded: EcsimEndpoint) -> None:
    segs = chained([400, 300], [120], names=["buyers", "browsers"])
    everyone = PopulationSegment(name="everyone", size=1600 + 50 + 5, sid=S3)  # known + unknown + malformed
    spec = PopulationSpec(
        seed=5,
        recipients=2000,
        unknown_profiles=50,
        segments=(*(s.model_copy(update={"sid": sid}) for s, sid in zip(segs, (S1, S2), strict=True)), everyone),
    )
    loaded = await seeded.admin("POST", "/population", spec.model_dump(mode="json"))
    assert [(s["sid"], s["profiles"]) for s in loaded["segments"]] == [(S1, 400), (S2, 300), (S3, 1655)]
    pop = Population(spec)
    assert seeded.import_dir is not None

    result = await seeded.admin("POST", "/deliveries", {"destination_id": TO_MID, "mode": "full", "segments": [S1, S2]})
    assert (result["masterDataSourceId"], result["idType"]) == (MID, "ecid")
    assert parse_outbound_name(result["files"][0]["name"]).master_dpid == MID
    _, got = _read(seeded.import_dir, result)
    expected = _expected(pop, {S1: "buyers", S2: "browsers"}, "ecid")
    assert got == expected
    both = {user for user, (segments, _) in got.items() if segments == {S1, S2}}
    assert both == {e for p in pop.segment_members("buyers") if pop.in_segment(p.index, "browsers") for e in p.ecids}

    declared = await seeded.admin("POST", "/deliveries", {"destinationId": TO_CRM, "segments": [S1, S2]})
    assert declared["idType"] == "declared"
    _, got_declared = _read(seeded.import_dir, declared)
    assert got_declared == _expected(pop, {S1: "buyers", S2: "browsers"}, "declared")
    members = await seeded.admin("GET", f"/segments/{S1}/members?idType=declared")
    assert members["count"] == sum(p.declared_id is not None for p in pop.segment_members("buyers"))

    # The population's malformed IDs are delivered as they are: the bridge must count them.
    all_of_them = await seeded.admin("POST", "/deliveries", {"destination_id": TO_MID, "segments": [S3]})
    _, got_all = _read(seeded.import_dir, all_of_them)
    assert sorted(len(u) for u in got_all if len(u) != 38) == [37, 37, 37, 39, 39]
    assert set(got_all) == {e for p in pop.profiles() for e in p.ecids}


async def test_iter_deliveries_carry_exactly_the_changes(seeded: EcsimEndpoint) -> None:
    assert seeded.import_dir is not None
    ids = [f"{i:038d}" for i in range(10)]
    await seeded.admin("POST", f"/segments/{S1}/members", {"add": ids[:6]})
    first = await seeded.admin(
        "POST", "/deliveries", {"destination_id": TO_MID, "mode": "iter", "membership": {str(S2): ids[4:8]}}
    )
    assert first["segments"] == [S1, S2, S3]
    _, got = _read(seeded.import_dir, first)
    assert got == {
        **{i: ({S1}, set()) for i in ids[:4]},
        **{i: ({S1, S2}, set()) for i in ids[4:6]},
        **{i: ({S2}, set()) for i in ids[6:8]},
    }

    change = await seeded.admin("POST", f"/segments/{S1}/members", {"add": [ids[9]], "remove": [ids[0], ids[5]]})
    assert (change["joined"], change["left"], change["count"]) == (1, 2, 5)
    await seeded.admin("POST", f"/segments/{S3}/members", {"add": [ids[0]], "idType": "ecid"})
    second = await seeded.admin("POST", "/deliveries", {"destination_id": TO_MID, "mode": "iter"})
    _, got = _read(seeded.import_dir, second)
    assert got == {ids[0]: ({S3}, {S1}), ids[5]: (set(), {S1}), ids[9]: ({S1}, set())}
    assert second["segmentCounts"][str(S1)] == {"members": 5, "joined": 1, "left": 2}

    full = await seeded.admin("POST", "/deliveries", {"destination_id": TO_MID, "mode": "full", "segments": [S1]})
    _, got = _read(seeded.import_dir, full)
    assert set(got) == {ids[1], ids[2], ids[3], ids[4], ids[9]}


async def test_split_gzip_info_first_batches_through_an_unavailable_zone(seeded: EcsimEndpoint) -> None:
    assert seeded.import_dir is not None
    ids = [f"{i:038d}" for i in range(500)]
    await seeded.admin("POST", f"/segments/{S1}/members", {"add": ids})
    await seeded.admin("POST", f"/segments/{S2}/members", {"add": ids[::2]})
    await seeded.admin("PUT", "/dropzones/faults", {"zone": "import", "seconds": 0.5})
    body = {
        "destination_id": TO_MID,
        "mode": "full",
        "segments": [S1, S2],
        "max_part_bytes": 5000,
        "gzip": True,
        "info_first": True,
        "split_style": "dash",
        "sync_type": "S3",
        "pid_alias": "Campaign",
    }
    result = await seeded.admin("POST", "/deliveries", body)
    info, got = _read(seeded.import_dir, result)
    # 250 lines of 46 bytes and 250 of 50: 5000-byte parts.
    assert [f["lines"] for f in result["files"]] == [f.line_count for f in info.files]
    assert len(info.files) == info.totals.total_number_files == 5
    assert info.totals.total_number_lines == 500
    assert info.totals.file_name == f"S3_{TO_MID}_{MID}_Campaign_full_{result['timestampMs']}.sync"
    names = [parse_outbound_name(f.file_name) for f in info.files]
    assert [(n.part, n.split_style, n.gzip, n.pid_alias) for n in names] == [
        (k, "dash", True, "Campaign") for k in range(1, 6)
    ]
    assert result["writeOrder"] == [result["infoName"], *(f.file_name for f in info.files)]
    assert got == {u: ({S1, S2} if k % 2 == 0 else {S1}, set()) for k, u in enumerate(ids)}
    zones = await seeded.admin("GET", "/dropzones")
    assert zones["import"]["injected"] > 0


async def test_every_documented_variant_over_http(seeded: EcsimEndpoint) -> None:
    """``POST /sim/deliveries`` with the variant options (camelCase too): each batch reads back as the strict
    one, its .info counting every line (issue 14, part 2)."""
    assert seeded.import_dir is not None
    ids = [f"{i:038d}" for i in range(40)]
    await seeded.admin("POST", f"/segments/{S1}/members", {"add": ids})
    await seeded.admin("POST", f"/segments/{S2}/members", {"add": ids[::3]})
    base = {"destination_id": TO_MID, "mode": "full", "segments": [S1, S2], "gzip": True, "max_part_bytes": 600}
    _, strict = _read(seeded.import_dir, await seeded.admin("POST", "/deliveries", base))
    template = "<SYNC_TYPE>_<ORDER_ID>_<DPID>_<SYNC_MODE>_<TIMESTAMP>SPLITNUM.sync"
    variant = {
        "separator": "spaces",
        "lineEnds": "mixed",
        "bom": True,
        "headerRows": 2,
        "blankEvery": 5,
        "infoStyle": "javascript",
        "nameTemplate": template,
        "splitStyle": "dash",
    }
    result = await seeded.admin("POST", "/deliveries", {**base, **variant})
    info, got = _read(seeded.import_dir, result, OutboundNames({str(TO_MID): template}))
    assert got == strict
    assert len(info.files) > 1
    assert info.totals.total_number_lines == 40 + 2 + 40 // 5  # records, header rows, blank lines
    assert (seeded.import_dir / result["infoName"]).read_bytes().startswith(b"{\n  Files: [")
    body = {**base, "nameTemplate": "<SYNC_MODE>_<FOO>"}
    async with aiohttp.ClientSession() as session, session.post(f"{seeded.base_url}/sim/deliveries", json=body) as resp:
        assert resp.status == 400
        assert "not a documented macro" in await resp.text()
