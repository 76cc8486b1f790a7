"""ecsim's outbound deliveries, in process over a temporary file drop zone: which lines full and iter
batches carry, validation, and an import zone that is briefly unavailable."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.ecsim.deliveries import DeliveryRequest, DeliveryService, DeliveryUnavailable, plan_rows
from services.ecsim.profiles import Key, encode_id
from services.ecsim.segments import SegmentMembers
from services.ecsim.settings import EcsimSettings
from services.ecsim.store import AamStore, InvalidInput
from services.ecsim.zones import FaultyDropZone, ZoneFault
from shared.dropzone import FileDropZone
from shared.formats.lines import LineError
from shared.formats.outbound import DEFAULT_NAMES, OutboundNames, OutboundParser, OutboundRecord, parse_info
from tests.helpers import eventually

DEST, DS = 40, 500
S1, S2, S3 = 301, 302, 303


def ecid(i: int) -> str:
    return f"{i:038d}"


def keys(*ids: int) -> set[Key]:
    return {encode_id(ecid(i)) for i in ids}


def rows_of(*args: Any, **kwargs: Any) -> dict[str, tuple[list[int], list[int]]]:
    out = {}
    for user, segs, removed in plan_rows(*args, **kwargs):
        assert user not in out, "one line per user"
        out[user] = (list(segs), list(removed))
    return out


def test_full_batches_list_every_member_once_with_all_their_segments() -> None:
    current = {S1: keys(1, 2), S2: keys(2, 3), S3: set()}
    previous = {S1: keys(1, 4), S2: keys(4, 5), S3: keys(6)}
    assert rows_of("full", [S1, S2, S3], current, previous) == {
        ecid(1): ([S1], []),
        ecid(2): ([S1, S2], []),
        ecid(3): ([S2], []),
    }
    with_removals = rows_of("full", [S1, S2, S3], current, previous, include_removals=True)
    assert with_removals == {
        ecid(1): ([S1], []),
        ecid(2): ([S1, S2], []),
        ecid(3): ([S2], []),
        ecid(4): ([], [S1, S2]),
        ecid(5): ([], [S2]),
        ecid(6): ([], [S3]),
    }


def test_iter_batches_carry_only_changes() -> None:
    current = {S1: keys(1, 2, 3), S2: keys(2)}
    previous = {S1: keys(1, 4), S2: keys(3)}
    assert rows_of("iter", [S1, S2], current, previous) == {
        ecid(2): ([S1, S2], []),
        ecid(3): ([S1], [S2]),
        ecid(4): ([], [S1]),
    }
    assert rows_of("iter", [S1, S2], current, current) == {}


class Env:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = AamStore()
        self.store.seed(
            {
                "datasources": [{"dataSourceId": DS, "name": "visitors", "idType": "COOKIE"}],
                "traits": [{"sid": 1, "name": "t", "traitType": "ON_BOARDED_TRAIT", "dataSourceId": DS, "folderId": 0}],
                "segments": [
                    {"sid": sid, "name": f"s{sid}", "segmentRule": "1T", "dataSourceId": DS, "folderId": 0}
                    for sid in (S1, S2, S3)
                ],
                "destinations": [
                    {
                        "destinationId": DEST,
                        "name": "campaign",
                        "destinationType": "S2S",
                        "dataSourceId": DS,
                        "mappings": [{"sid": S1}, {"sid": S2}],
                    }
                ],
            }
        )
        self.members = SegmentMembers()
        self.fault = ZoneFault()
        self.zone = FaultyDropZone(FileDropZone(root), self.fault)
        self.service = DeliveryService(self.store, self.members, self.zone, retry_max_s=5.0)

    async def deliver(self, **body: Any) -> dict[str, Any]:
        return await self.service.deliver(DeliveryRequest.model_validate({"destination_id": DEST, **body}))

    def read(
        self, result: dict[str, Any], names: OutboundNames = DEFAULT_NAMES
    ) -> dict[str, tuple[list[int], list[int]]]:
        info = parse_info((self.root / result["infoName"]).read_bytes())
        assert info.inconsistencies() == []
        out: dict[str, tuple[list[int], list[int]]] = {}
        for entry in info.files:
            parser = OutboundParser(names.parse(entry.file_name))
            for item in parser.parse([(self.root / entry.file_name).read_bytes()]):
                assert not isinstance(item, LineError), item
                assert isinstance(item, OutboundRecord)
                out[item.user_id] = (list(item.segments), list(item.removed))
        return out


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = Env(tmp_path / "import")
    yield e
    await e.zone.close()


async def test_full_then_iter_deliveries_round_trip(env: Env) -> None:
    env.members.change(S1, "ecid", add=[ecid(1), ecid(2)])
    env.members.change(S2, "ecid", add=[ecid(2), "1" * 37])  # a malformed ID is delivered as it is
    full = await env.deliver(mode="full")
    assert full["batchRoot"] == f"ftp_{DEST}_{DS}_full_{full['timestampMs']}"
    assert env.read(full) == {ecid(1): ([S1], []), ecid(2): ([S1, S2], []), "1" * 37: ([S2], [])}

    env.members.change(S1, "ecid", remove=[ecid(1)], add=[ecid(3)])
    it = await env.deliver(mode="iter", segments=[S1], gzip=True)
    assert it["files"][0]["name"].endswith(".sync.gz")
    assert env.read(it) == {ecid(1): ([], [S1]), ecid(3): ([S1], [])}
    again = await env.deliver(mode="iter", segments=[S1])
    assert (again["files"], again["lines"]) == ([], 0)  # nothing changed: an .info listing no part
    assert await env.deliver(mode="iter", skip_if_empty=True) != {}
    assert it["timestampMs"] < again["timestampMs"]


async def test_requests_are_checked_against_the_destination(env: Env) -> None:
    with pytest.raises(InvalidInput, match="mapped"):
        await env.deliver(segments=[S3])
    with pytest.raises(InvalidInput, match="does not carry"):
        await env.deliver(segments=[S1], membership={S2: [ecid(1)]})
    segment = env.store.get_segment(S2)
    env.store.update_segment(S2, {**segment, "status": "INACTIVE"})
    result = await env.deliver(membership={S1: [ecid(9)]})
    assert (result["segments"], result["skippedSegments"]) == ([S1], [S2])
    assert env.read(result) == {ecid(9): ([S1], [])}


async def test_a_briefly_unavailable_zone_delays_the_delivery(env: Env) -> None:
    env.members.change(S1, "ecid", add=[ecid(i) for i in range(100)])
    env.fault.set(0.3)
    result = await env.deliver(mode="iter", max_part_bytes=2000, info_first=True)
    assert len(result["files"]) == 3  # 100 lines of 44 bytes, 2000 bytes a part
    assert result["writeOrder"][0] == result["infoName"]
    assert len(env.read(result)) == 100
    assert env.fault.injected > 0


async def test_a_zone_that_stays_unavailable_fails_the_delivery_and_loses_nothing(env: Env) -> None:
    env.service.retry_max_s = 0.2
    env.members.change(S1, "ecid", add=[ecid(1)])
    env.fault.set(5)
    with pytest.raises(DeliveryUnavailable):
        await env.deliver(mode="iter")
    env.fault.clear()
    assert not env.root.exists() or list(env.root.iterdir()) == []
    result = await env.deliver(mode="iter")
    assert env.read(result) == {ecid(1): ([S1], [])}  # the failed batch's changes come again


async def test_the_schedule_delivers_iter_batches_of_changes_only(env: Env) -> None:
    env.members.change(S1, "ecid", add=[ecid(1)])
    task = asyncio.create_task(env.service.run(0.05))
    try:
        first = await eventually(lambda: _latest(env), until=lambda h: len(h) == 1, timeout=10)
        assert (first[0]["mode"], env.read(first[0])) == ("iter", {ecid(1): ([S1], [])})
        env.members.change(S2, "ecid", add=[ecid(2)])
        second = await eventually(lambda: _latest(env), until=lambda h: len(h) == 2, timeout=10)
        assert env.read(second[1]) == {ecid(2): ([S2], [])}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(env.service.history) == 2  # no change, no batch


async def _latest(env: Env) -> list[dict[str, Any]]:
    return list(env.service.history)


# Each variant of the platform's files its documentation shows (issue 14, part 2), as /sim/deliveries options.
TEMPLATE = "<SYNC_TYPE>_<ORDER_ID>_<DPID>_<SYNC_MODE>_<TIMESTAMP>SPLITNUM.sync"  # "Outbound Template Macros"
VARIANTS: dict[str, dict[str, Any]] = {
    "two spaces": {"separator": "spaces"},  # "Outbound Data File Contents": the example line
    "crlf": {"line_ends": "crlf"},
    "mixed line ends and a byte order mark": {"line_ends": "mixed", "bom": True},
    "header rows and blank lines": {"header_rows": 3, "blank_every": 2},  # "Transfer-Control Files": counted
    "javascript .info": {"info_style": "javascript"},  # "Transfer-Control Files": keys without quotes
    "dash splits": {"split_style": "dash", "max_part_bytes": 64},
    "a name template in seconds": {"name_template": TEMPLATE},  # "Outbound Macro Examples"
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
async def test_each_variant_delivers_what_the_strict_form_delivers(env: Env, variant: str) -> None:
    body = VARIANTS[variant]
    names = OutboundNames({str(DEST): TEMPLATE} if "name_template" in body else {})
    env.members.change(S1, "ecid", add=[ecid(i) for i in range(1, 11)])
    env.members.change(S2, "ecid", add=[ecid(i) for i in range(5, 16)])
    strict = await env.deliver(mode="full")
    full = await env.deliver(mode="full", **body)
    assert env.read(full, names) == env.read(strict)
    assert full["batchRoot"] != strict["batchRoot"]
    env.members.change(S1, "ecid", remove=[ecid(1), ecid(2)], add=[ecid(20)])
    it = await env.deliver(mode="iter", **body)
    assert env.read(it, names) == {ecid(1): ([], [S1]), ecid(2): ([], [S1]), ecid(20): ([S1], [])}
    data = b"".join((env.root / f["name"]).read_bytes() for f in it["files"])
    info = (env.root / it["infoName"]).read_bytes()
    shown = {
        "two spaces": f"{ecid(20)}  {S1}  \n".encode() in data,
        "crlf": data.count(b"\r\n") == data.count(b"\n") == it["lines"],
        "mixed line ends and a byte order mark": data.startswith(b"\xef\xbb\xbf")
        and 0 < data.count(b"\r\n") < it["lines"],
        "header rows and blank lines": data.startswith(f"{DEST}\tfull.sync\n".replace("full", "iter").encode())
        and b"\n\n" in data,
        "javascript .info": info.startswith(b"{\n  Files: ["),
        "dash splits": all("-" in f["name"] for f in it["files"]) and len(it["files"]) > 1,
        "a name template in seconds": it["batchRoot"] == f"ftp_{DEST}_{DS}_iter_{it['timestampMs'] // 1000}",
    }
    assert shown[variant]


async def test_names_in_seconds_stay_apart_and_bad_templates_are_refused(env: Env) -> None:
    env.members.change(S1, "ecid", add=[ecid(1)])
    first = await env.deliver(mode="full", name_template=TEMPLATE)
    second = await env.deliver(mode="full", name_template=TEMPLATE)
    assert second["timestampMs"] - first["timestampMs"] >= 1000
    assert first["timestampMs"] % 1000 == second["timestampMs"] % 1000 == 0
    with pytest.raises(InvalidInput, match="not a documented macro"):
        await env.deliver(name_template="<SYNC_MODE>_<TIMESTAMP>_<FOO>")
    # "Outbound Macro Examples": <DPID> (the destination's data provider) beside <MASTER_DPID>.
    both = await env.deliver(name_template="<SYNC_TYPE>_<ORDER_ID>_<DPID>_<MASTER_DPID>_<SYNC_MODE>_<TIMESTAMP>.sync")
    assert both["batchRoot"] == f"ftp_{DEST}_{DS}_{DS}_full_{both['timestampMs'] // 1000}"


def test_zone_urls_are_checked_when_settings_load() -> None:
    with pytest.raises(ValidationError, match="bucket"):
        EcsimSettings(ecsim_import_dropzone_url="s3://x/prefix")
    with pytest.raises(ValidationError, match="file:///abs/path"):
        EcsimSettings(ecsim_export_dropzone_url="/var/export")
    settings = EcsimSettings(ecsim_export_dropzone_url="s3://bucket/in")
    assert settings.export_dropzone_url == "s3://bucket/in"
    assert settings.import_dropzone_url.endswith("/var/dropzones/import")
