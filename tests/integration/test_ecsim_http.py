"""ecsim's HTTP contract, in-process: IMS answers, REST auth checks, list wrapping, errors, faults, admin."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from services.ecsim.api import build_http_app
from services.ecsim.settings import EcsimSettings
from services.ecsim.simulator import Simulator
from tests.fixtures.ecsim import EcsimLocal, ecsim_inprocess  # noqa: F401

GOOD_FORM = {
    "grant_type": "client_credentials",
    "client_id": "audience-bridge-local",
    "client_secret": "ecsim-local-secret",
    "scope": "openid,AdobeID,audiencemanager_api",
}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _token(http: aiohttp.ClientSession, ecsim: EcsimLocal) -> str:
    async with http.post(ecsim.ims_url, data=GOOD_FORM) as resp:
        assert resp.status == 200
        token: str = (await resp.json())["access_token"]
        return token


async def _call(
    http: aiohttp.ClientSession,
    ecsim: EcsimLocal,
    method: str,
    path: str,
    *,
    token: str | None,
    api_key: str | None = "audience-bridge-local",
    **kwargs: Any,
) -> tuple[int, Any, Mapping[str, str]]:
    headers: dict[str, str] = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if api_key is not None:
        headers["x-api-key"] = api_key
    async with http.request(method, ecsim.api_url + path, headers=headers, **kwargs) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body, resp.headers


async def test_ims_issues_bearer_tokens_and_refuses_like_ims(
    http: aiohttp.ClientSession,
    ecsim_inprocess: EcsimLocal,  # noqa: F811
) -> None:
    ims = ecsim_inprocess.ims_url
    async with http.post(ims, data=GOOD_FORM) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 86399
    assert len(body["access_token"]) > 30

    # Parameters may also come in the query string.
    async with http.post(ims, params=GOOD_FORM) as resp:
        assert resp.status == 200

    cases = [
        ({"client_id": "nobody"}, 400, "invalid_client"),
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"grant_type": ""}, 400, "invalid_request"),
        ({"scope": "openid,AdobeID"}, 400, "invalid_scope"),
    ]
    for change, status, error in cases:
        async with http.post(ims, data={**GOOD_FORM, **change}) as resp:
            assert resp.status == status, change
            refused = await resp.json()
        assert refused["error"] == error
        assert "ecsim-local-secret" not in refused["error_description"]
    stats = ecsim_inprocess.sim.tokens.stats()
    assert stats["tokens_issued"] == 2
    assert stats["failures"] == len(cases)


async def test_rest_calls_need_a_valid_token_and_the_matching_api_key(
    http: aiohttp.ClientSession,
    ecsim_inprocess: EcsimLocal,  # noqa: F811
) -> None:
    ecsim = ecsim_inprocess
    status, body, headers = await _call(http, ecsim, "GET", "/datasources/", token=None)
    assert (status, body["code"]) == (401, "unauthorized")
    assert headers["WWW-Authenticate"] == 'Bearer realm="oauth"'

    status, _, headers = await _call(http, ecsim, "GET", "/datasources/", token="made-up")
    assert status == 401
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]

    token = await _token(http, ecsim)
    status, body, _ = await _call(http, ecsim, "GET", "/datasources/", token=token)
    assert (status, body) == (200, [])
    for api_key in ("someone-else", None):
        status, body, _ = await _call(http, ecsim, "GET", "/datasources/", token=token, api_key=api_key)
        assert (status, body["code"]) == (403, "forbidden")

    assert ecsim.sim.tokens.expire_all() == 1
    status, body, headers = await _call(http, ecsim, "GET", "/datasources/", token=token)
    assert (status, body["message"]) == (401, "access token expired")
    assert "Access token expired" in headers["WWW-Authenticate"]
    assert ecsim.sim.rest_calls == {401: 3, 200: 1, 403: 2}


async def test_lists_are_bare_arrays_unless_paged(
    http: aiohttp.ClientSession,
    ecsim_inprocess: EcsimLocal,  # noqa: F811
) -> None:
    ecsim = ecsim_inprocess
    ecsim.sim.store.seed({"datasources": [{"name": f"ds{i}"} for i in range(12)]})
    token = await _token(http, ecsim)
    status, body, _ = await _call(http, ecsim, "GET", "/datasources", token=token)
    assert status == 200
    assert isinstance(body, list)
    assert len(body) == 12
    status, body, _ = await _call(http, ecsim, "GET", "/datasources/", token=token, params={"page": "1"})
    assert (body["total"], body["page"], body["pageSize"], len(body["list"])) == (12, 1, 10, 2)
    status, body, _ = await _call(
        http, ecsim, "GET", "/datasources/", token=token, params={"pageSize": "5", "sortBy": "name"}
    )
    assert [d["name"] for d in body["list"]] == ["ds0", "ds1", "ds10", "ds11", "ds2"]
    for bad in ({"page": "x"}, {"page": "-1"}, {"pageSize": "0"}, {"descending": "maybe"}):
        status, body, _ = await _call(http, ecsim, "GET", "/datasources/", token=token, params=bad)
        assert (status, body["code"]) == (400, "bad_request"), bad


async def test_objects_round_trip_with_status_codes(
    http: aiohttp.ClientSession,
    ecsim_inprocess: EcsimLocal,  # noqa: F811
) -> None:
    ecsim = ecsim_inprocess
    token = await _token(http, ecsim)
    ds = {"name": "Declared", "integrationCode": "decl", "dataExportRestrictions": ["PII"]}
    status, created, _ = await _call(http, ecsim, "POST", "/datasources/", token=token, json=ds)
    assert status == 201
    assert created["dataExportRestrictions"] == ["PII"]
    assert created["crUID"] == ecsim.sim.tokens.uid
    ds_id = created["dataSourceId"]

    trait = {"name": "t", "traitType": "ON_BOARDED_TRAIT", "dataSourceId": ds_id, "folderId": 0}
    status, t, _ = await _call(http, ecsim, "POST", "/traits/", token=token, json={**trait, "integrationCode": "a/b c"})
    assert status == 201
    status, by_code, _ = await _call(http, ecsim, "GET", "/traits/ic:a%2Fb%20c", token=token)
    assert (status, by_code["sid"]) == (200, t["sid"])
    status, body, _ = await _call(
        http, ecsim, "POST", "/traits/", token=token, json={**trait, "integrationCode": "a/b c"}
    )
    assert (status, body["code"]) == (409, "conflict")
    status, body, headers = await _call(http, ecsim, "PUT", "/traits/ic:x", token=token, json=trait)
    assert (status, headers["Allow"]) == (405, "GET, DELETE")

    status, body, _ = await _call(http, ecsim, "POST", "/traits/", token=token, data=b"{not json")
    assert (status, body["code"]) == (400, "bad_request")
    status, body, _ = await _call(
        http, ecsim, "POST", "/traits/", token=token, data=b"{}", headers={"Content-Type": "text/plain"}
    )
    assert status == 400
    status, body, _ = await _call(http, ecsim, "POST", "/traits/", token=token, json={"name": "t"})
    assert status == 400
    assert {d["field"] for d in body["details"]} == {"traitType", "dataSourceId", "folderId"}

    seg = {"name": "s", "segmentRule": f"{t['sid']}T", "dataSourceId": ds_id, "folderId": 0}
    status, s, _ = await _call(http, ecsim, "POST", "/segments", token=token, json=seg)
    assert status == 201
    status, body, _ = await _call(http, ecsim, "PUT", f"/segments/{s['sid']}", token=token, json={**seg, "name": "n"})
    assert (status, body["name"]) == (200, "n")
    for path in (f"/segments/{s['sid']}", "/traits/ic:a%2Fb%20c", f"/datasources/{ds_id}"):
        status, _, _ = await _call(http, ecsim, "DELETE", path, token=token)
        assert status == 204, path
        status, body, _ = await _call(http, ecsim, "GET", path, token=token)
        assert (status, body["code"]) == (404, "not_found")
    status, body, _ = await _call(http, ecsim, "GET", "/nothing/here", token=token)
    assert (status, body["code"]) == (404, "not_found")
    status, body, _ = await _call(http, ecsim, "PATCH", "/destinations/1", token=token)
    assert status == 405


async def test_faults_are_reproducible_and_carry_retry_after(
    http: aiohttp.ClientSession,
    ecsim_inprocess: EcsimLocal,  # noqa: F811
) -> None:
    ecsim = ecsim_inprocess
    token = await _token(http, ecsim)

    async def run() -> list[int]:
        await ecsim.set_faults(rate=0.5, statuses=[429, 500, 503], retry_after_s=2, seed=1234)
        statuses = []
        for _ in range(30):
            status, _, headers = await _call(http, ecsim, "GET", "/traits/", token=token)
            statuses.append(status)
            if status == 429:
                assert headers["Retry-After"] == "2"
        return statuses

    first, second = await run(), await run()
    assert first == second
    assert {429, 500, 503, 200} == set(first)
    assert (await ecsim.state())["faults"]["injected"] == len(second) - second.count(200)

    await ecsim.set_faults(rate=1.0, statuses=[500], max_faults=2)
    statuses = [(await _call(http, ecsim, "GET", "/traits/", token=token))[0] for _ in range(4)]
    assert statuses == [500, 500, 200, 200]

    # IMS is only affected when asked.
    await ecsim.set_faults(rate=1.0, statuses=[503])
    async with http.post(ecsim.ims_url, data=GOOD_FORM) as resp:
        assert resp.status == 200
    await ecsim.set_faults(rate=1.0, statuses=[503], ims=True)
    async with http.post(ecsim.ims_url, data=GOOD_FORM) as resp:
        assert resp.status == 503
    await ecsim.clear_faults()

    await ecsim.set_faults(latency_s=0.2)
    started = time.monotonic()
    await _call(http, ecsim, "GET", "/traits/", token=token)
    assert time.monotonic() - started >= 0.2


async def test_admin_endpoints(
    http: aiohttp.ClientSession,
    ecsim_inprocess: EcsimLocal,  # noqa: F811
) -> None:
    ecsim = ecsim_inprocess
    created = await ecsim.seed({"datasources": [{"dataSourceId": 7, "name": "MID"}]})
    assert created["datasources"][0]["dataSourceId"] == 7
    receipt = await ecsim.admin("POST", "/datasources/7/receipts", {"dataFileName": "f", "success": True})
    assert receipt["dataSourceId"] == 7
    token = await _token(http, ecsim)
    status, history, _ = await _call(http, ecsim, "GET", "/datasources/7/history/inbound", token=token)
    assert (status, [r["dataFileName"] for r in history]) == (200, ["f"])

    state = await ecsim.state()
    assert state["ims"]["tokens_issued"] == 1
    assert state["rest"]["by_status"] == {"200": 1}
    assert [d["name"] for d in state["datasources"]] == ["MID"]
    assert state["receipts"] == {"7": [receipt]}

    assert await ecsim.expire_tokens() == 1
    async with http.put(ecsim.base_url + "/sim/faults", json={"rate": 2}) as resp:
        assert resp.status == 400
    async with http.post(ecsim.base_url + "/sim/seed", json={"traits": [{"name": "x"}]}) as resp:
        assert resp.status == 400

    await ecsim.reset()
    state = await ecsim.state()
    assert state["datasources"] == []
    assert state["ims"]["tokens_issued"] == 0
    assert state["rest"]["calls"] == 0


async def test_admin_endpoints_are_absent_unless_enabled(http: aiohttp.ClientSession) -> None:
    server = TestServer(build_http_app(Simulator(EcsimSettings())), host="127.0.0.1")
    await server.start_server()
    try:
        for method, path in (("GET", "/sim/state"), ("POST", "/sim/reset"), ("PUT", "/sim/faults")):
            async with http.request(method, server.make_url(path)) as resp:
                assert resp.status == 404, path
        async with http.post(server.make_url("/ims/token/v3"), data=GOOD_FORM) as resp:
            assert resp.status == 200
    finally:
        await server.close()
