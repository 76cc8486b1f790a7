"""ecsim's inbound file processing, for real (``python -m services.ecsim``): files written by the bridge's
own inbound writer (plain, gzip, split) land in ecsim's export zone and become exactly the expected trait
members and receipts, readable over REST as the bridge reads them."""

from __future__ import annotations

import gzip
from collections.abc import Collection, Iterable
from datetime import date
from typing import Any

import aiohttp
import pytest

from shared.dropzone import FileDropZone
from shared.formats.inbound import InboundFileName, InboundWriter, inbound_object_key
from shared.formats.parts import collect_parts
from shared.platform import PlatformClient
from tests.fixtures.ecsim import EcsimEndpoint, ecsim, ecsim_server  # noqa: F401
from tests.helpers import eventually

MID, CRM = 500, 600
T1, T2, T3, CRM_T = 11, 12, 13, 21
PARTNER = "acme"
TS = 1_714_521_600  # 2024-05-01
DAY = date(2024, 5, 1)


def ecid(i: int) -> str:
    return f"{i:038d}"


async def _seed(ecsim: EcsimEndpoint) -> None:  # noqa: F811
    def trait(sid: int, ds: int) -> dict[str, Any]:
        return {"sid": sid, "name": f"t{sid}", "traitType": "ON_BOARDED_TRAIT", "dataSourceId": ds, "folderId": 0}

    await ecsim.seed(
        {
            "datasources": [
                {"dataSourceId": MID, "name": "visitors", "idType": "COOKIE"},
                {"dataSourceId": CRM, "name": "crm", "idType": "CROSS_DEVICE"},
            ],
            "traits": [trait(T1, MID), trait(T2, MID), trait(T3, MID), trait(CRM_T, CRM)],
        }
    )


@pytest.fixture
async def zone(ecsim: EcsimEndpoint) -> Any:  # noqa: F811
    """The bridge's view of ecsim's export zone, with the test's objects seeded."""
    await _seed(ecsim)
    assert ecsim.export_dir is not None
    async with FileDropZone(ecsim.export_dir) as z:
        yield z


async def _write(
    zone: FileDropZone,
    rows: Iterable[tuple[str, Collection[int], Collection[int]]],
    name: InboundFileName,
    **kwargs: Any,
) -> list[str]:
    """Write a run with the bridge's writer: one object per part, as the publish service does."""
    keys = []
    for part in collect_parts(InboundWriter(name, **kwargs).write(rows)):
        key = f"{PARTNER}/date={DAY.isoformat()}/{part.summary.name}"
        await zone.write(key, part.data)
        keys.append(key)
    return keys


async def _members(ecsim: EcsimEndpoint, sid: int) -> list[str]:  # noqa: F811
    body = await ecsim.admin("GET", f"/traits/{sid}/members?ids=true&pageSize=100000")
    assert body["count"] == len(body["ids"])
    return list(body["ids"])


async def _history(ecsim: EcsimEndpoint, dpid: int) -> dict[str, dict[str, Any]]:  # noqa: F811
    async with PlatformClient(ecsim.platform_settings()) as client:
        receipts = await client.inbound_history(dpid)
    return {r.data_file_name or "": r.model_dump(by_alias=True) for r in receipts}


async def test_plain_gzip_and_split_files_give_exact_members_and_receipts(
    ecsim: EcsimEndpoint,  # noqa: F811
    zone: FileDropZone,
) -> None:
    plain = InboundFileName(MID, TS)
    rows: list[tuple[str, list[int], list[int]]] = [(ecid(i), [T1], []) for i in range(50)]
    rows += [("7" * 37, [T1], []), ("8" * 39, [T1], []), ("CRM-1", [T1], [])]  # not ECIDs
    rows += [(ecid(900), [999], []), (ecid(901), [CRM_T], [])]  # no trait of MID
    await _write(zone, rows, plain)
    gz = InboundFileName(MID, TS + 1, gzip=True)
    await _write(zone, [(ecid(100 + i), [T2], []) for i in range(40)], gz)
    split = InboundFileName(MID, TS + 2)
    split_keys = await _write(zone, [(ecid(1000 + i), [T3], []) for i in range(300)], split, max_part_bytes=4000)
    assert len(split_keys) == 4
    # Lines the bridge's writer would refuse, as another sender might write them.
    raw = f"{ecid(2000)}\td_sid={T1}\nno tab\n{ecid(2001)}\td_sid=abc\n\n{ecid(2002)}\td_sid={T1},{T2}:0\n"
    await zone.write(inbound_object_key(PARTNER, InboundFileName(MID, TS + 3)), raw.encode())
    await zone.write(
        inbound_object_key(PARTNER, InboundFileName(CRM, TS, gzip=True)),
        gzip.compress(f"{'ab' * 32}\td_sid={CRM_T}\nCRM-7\td_sid={CRM_T}\n".encode()),
    )

    await ecsim.scan_inbound()
    assert await _members(ecsim, T1) == sorted([ecid(i) for i in range(50)] + [ecid(2000), ecid(2002)])
    assert await _members(ecsim, T2) == [ecid(100 + i) for i in range(40)]
    assert await _members(ecsim, T3) == [ecid(1000 + i) for i in range(300)]
    assert await _members(ecsim, CRM_T) == ["CRM-7", "ab" * 32]

    history = await _history(ecsim, MID)
    counters = ("recordsReceived", "formatErrors", "invalidAamIds", "noTraitRealized", "recordsProcessed")
    part_lines = {1: 83, 2: 83, 3: 83, 4: 51}  # 48-byte lines, 4000 bytes a part
    expected = {
        plain.name: (55, 0, 3, 2, 55, 50),
        gz.name: (40, 0, 0, 0, 40, 40),
        InboundFileName(MID, TS + 3).name: (4, 2, 0, 0, 4, 2),
        **{split.part_name(n): (k, 0, 0, 0, k, k) for n, k in part_lines.items()},
    }
    got = {name: (*(r[k] for k in counters), r["storedRecords"]) for name, r in history.items()}
    assert got == expected
    assert all(r["success"] and r["status"] == "processed" for r in history.values())
    assert history[plain.name]["receipt"]["Invalid AAM ID"] == 3
    assert history[split.part_name(2)]["part"] == 2
    assert (await _history(ecsim, CRM))[InboundFileName(CRM, TS, gzip=True).name]["storedRecords"] == 2
    assert await zone.list("") == []
    assert len(await zone.list("processed/")) == 8


async def test_overwrite_replaces_and_sync_removes(ecsim: EcsimEndpoint, zone: FileDropZone) -> None:  # noqa: F811
    await _write(zone, [(ecid(i), [T1, T2], []) for i in range(5)], InboundFileName(MID, TS))
    await ecsim.scan_inbound()
    await _write(zone, [(ecid(0), [T3], []), (ecid(1), [], [])], InboundFileName(MID, TS + 1, "overwrite"))
    await ecsim.scan_inbound()
    assert await _members(ecsim, T1) == [ecid(i) for i in (2, 3, 4)]
    assert await _members(ecsim, T3) == [ecid(0)]
    await _write(zone, [(ecid(0), [], [T3]), (ecid(2), [T3], [T1])], InboundFileName(MID, TS + 2))
    await ecsim.scan_inbound()
    assert (await _members(ecsim, T1), await _members(ecsim, T3)) == ([ecid(3), ecid(4)], [ecid(2)])
    profile = await ecsim.admin("GET", f"/profiles/{ecid(2)}")
    assert profile == {"userId": ecid(2), "dataSources": {str(MID): [T2, T3]}}
    history = await _history(ecsim, MID)
    overwrite = history[InboundFileName(MID, TS + 1, "overwrite").name]
    assert (overwrite["mode"], overwrite["storedRecords"], overwrite["totalRemovedTraits"]) == ("overwrite", 2, 4)
    assert history[InboundFileName(MID, TS + 2).name]["totalRemovedTraits"] == 2


async def test_bad_files_are_rejected_with_a_reason_and_a_receipt(
    ecsim: EcsimEndpoint,  # noqa: F811
    zone: FileDropZone,
) -> None:
    good = f"{ecid(1)}\td_sid={T1}\n".encode()
    folder = f"{PARTNER}/date={DAY.isoformat()}"
    keys = {
        f"{folder}/ftp_dpm_{MID}_{TS}.sync.zip": "bad file name: part number is not a number",
        f"{folder}/ftp_dpm_4242_{TS}.sync": "unknown data source 4242",
        f"{folder}/ftp_dpm_{MID}_{TS}.sync": "empty file: no record",
        f"{folder}/ftp_dpm_{MID}_{TS + 1}.sync.gz": "corrupt gzip: the file is not a complete gzip stream",
    }
    contents = [good, good, b"", b"not gzip at all"]
    for key, data in zip(keys, contents, strict=True):
        await zone.write(key, data)
    await ecsim.scan_inbound()
    state = await ecsim.admin("GET", "/inbound")
    receipts = {r["objectKey"]: r for r in state["receipts"]}
    assert {k: receipts[k]["reason"] for k in keys} == keys
    assert receipts[f"{folder}/ftp_dpm_4242_{TS}.sync"]["dataSourceId"] is None
    assert sorted(await _history(ecsim, MID)) == sorted(k.rsplit("/", 1)[1] for k in keys if "4242" not in k)
    for key, reason in keys.items():
        assert await zone.read_bytes(f"rejected/{key}.reason.txt") == reason.encode()
    assert await _members(ecsim, T1) == []


async def test_files_are_picked_up_unasked_and_survive_an_unavailable_zone(
    ecsim: EcsimEndpoint,  # noqa: F811
    zone: FileDropZone,
) -> None:
    await ecsim.admin("PUT", "/dropzones/faults", {"zone": "export", "seconds": 1.0})
    name = InboundFileName(MID, TS)
    await _write(zone, [(ecid(i), [T1], []) for i in range(20)], name)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{ecsim.base_url}/sim/inbound/scan") as resp,
    ):
        assert (resp.status, (await resp.json())["code"]) == (503, "dropzone_unavailable")

    # No scan asked for: the poller retries and processes the file once the zone is back.
    await eventually(lambda: _members(ecsim, T1), until=lambda ids: len(ids) == 20, timeout=20)
    history = await _history(ecsim, MID)
    assert list(history) == [name.name]
    zones = await ecsim.admin("GET", "/dropzones")
    assert zones["export"]["injected"] > 0
    assert not zones["export"]["unavailable"]
    state = await ecsim.state()
    assert state["inbound"]["scan_failures"] > 0
