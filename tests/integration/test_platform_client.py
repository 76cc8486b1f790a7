"""The platform client against ecsim running for real (``python -m services.ecsim``): tokens, paging,
retries, typed errors, secrets kept out of logs, and configuration by settings only."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from shared.errors import PermanentError, TransientError
from shared.logging import configure_logging
from shared.platform import (
    ON_BOARDED_TRAIT,
    AuthenticationFailed,
    BadRequest,
    Conflict,
    DataSourceSpec,
    DestinationSpec,
    Forbidden,
    NotFound,
    PlatformClient,
    PlatformSettings,
    PlatformUnavailable,
    PrometheusPlatformMetrics,
    SegmentSpec,
    TokenProvider,
    TraitSpec,
    Unauthorized,
    one_trait_rule,
)
from shared.platform._http import parse_retry_after, safe_body
from shared.retry import is_transient
from shared.settings import load_settings
from tests.fixtures.ecsim import EcsimEndpoint, EcsimFactory, ecsim, ecsim_factory, ecsim_server  # noqa: F401
from tests.helpers import eventually


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("publish", "DEBUG", stream=stream)
    yield stream
    logging.getLogger().handlers.clear()


async def _data_source(client: PlatformClient, code: str = "mid", **extra: Any) -> int:
    created = await client.create_data_source(DataSourceSpec(name=f"DS {code}", integration_code=code, **extra))
    return created.data_source_id


def _trait_spec(ds_id: int, code: str | None = None, **extra: Any) -> TraitSpec:
    return TraitSpec(
        name=f"audience {code}",
        trait_type=ON_BOARDED_TRAIT,
        data_source_id=ds_id,
        integration_code=code,
        **extra,
    )


async def test_one_token_serves_many_concurrent_calls(ecsim: EcsimEndpoint) -> None:  # noqa: F811
    async with PlatformClient(ecsim.platform_settings()) as client:
        # The very first calls arrive together: they share one token request (single flight).
        await asyncio.gather(*(client.list_data_sources() for _ in range(20)))
        ds_id = await _data_source(client)
        for _ in range(5):
            await client.get_data_source(ds_id)
    state = await ecsim.state()
    assert state["ims"]["token_requests"] == 1
    assert state["rest"]["by_status"] == {"200": 25, "201": 1}


async def test_token_is_renewed_after_the_platform_rejects_it(ecsim: EcsimEndpoint) -> None:  # noqa: F811
    async with PlatformClient(ecsim.platform_settings()) as client:
        await client.list_data_sources()
        assert await ecsim.expire_tokens() == 1
        # Concurrent calls all hit the 401, yet they share a single renewal.
        await asyncio.gather(*(client.list_data_sources() for _ in range(5)))
        await client.list_data_sources()
    state = await ecsim.state()
    assert state["ims"]["tokens_issued"] == 2
    assert state["rest"]["by_status"]["401"] == 5
    assert state["rest"]["by_status"]["200"] == 7


async def test_short_lived_tokens_are_renewed_before_they_expire(ecsim_factory: EcsimFactory) -> None:  # noqa: F811
    short = await ecsim_factory(token_lifetime_s=1)
    async with PlatformClient(short.platform_settings()) as client:
        await client.list_data_sources()

        async def tokens_issued() -> int:
            await client.list_data_sources()  # every call succeeds, across renewals
            state = await short.state()
            issued: int = state["ims"]["tokens_issued"]
            return issued

        await eventually(tokens_issued, until=lambda n: n >= 3, timeout=15, interval=0.05)
    # Renewal happens ahead of expiry: the platform (almost) never has to refuse a token.
    state = await short.state()
    assert state["rest"]["by_status"].get("401", 0) <= 1


async def test_listing_walks_every_page(ecsim: EcsimEndpoint) -> None:  # noqa: F811
    async with PlatformClient(ecsim.platform_settings(platform_page_size=10)) as client:
        ds_id = await _data_source(client)
        other = await _data_source(client, "other")
        await ecsim.seed(
            {
                "traits": [
                    {
                        "name": f"t{i}",
                        "traitType": ON_BOARDED_TRAIT,
                        "dataSourceId": ds_id if i % 5 else other,
                        "folderId": 0,
                        "integrationCode": f"code-{i}",
                    }
                    for i in range(57)
                ]
            }
        )
        before = (await ecsim.state())["rest"]["calls"]
        traits = await client.list_traits()
        assert [t.integration_code for t in traits] == [f"code-{i}" for i in range(57)]
        assert (await ecsim.state())["rest"]["calls"] - before == 6  # 10+10+10+10+10+7

        mine = [t async for t in client.iter_traits(data_source_ids=[ds_id])]
        assert len(mine) == 45
        assert {t.data_source_id for t in mine} == {ds_id}
        assert await client.list_traits(integration_code="code-3") == [traits[3]]
        assert await client.list_traits(integration_code="missing") == []


async def test_injected_429_and_500_are_retried_within_the_cap(ecsim: EcsimEndpoint) -> None:  # noqa: F811
    registry = CollectorRegistry()
    settings = ecsim.platform_settings(platform_max_attempts=10)
    async with PlatformClient(settings, metrics=PrometheusPlatformMetrics(registry)) as client:
        ds_id = await _data_source(client)
        await ecsim.set_faults(rate=0.3, statuses=[429, 500], retry_after_s=0, seed=42)
        for i in range(15):
            await client.create_trait(_trait_spec(ds_id, f"aud-{i}"))
            assert (await client.get_trait_by_integration_code(f"aud-{i}")).name == f"audience aud-{i}"
        assert len(await client.list_traits()) == 15
    state = await ecsim.state()
    injected = state["faults"]["injected"]
    assert injected > 0
    assert state["ims"]["token_requests"] == 1
    retries = sum(
        registry.get_sample_value("ab_platform_retries_total", {"method": m, "resource": "traits", "reason": r}) or 0
        for m in ("GET", "POST")
        for r in ("429", "500")
    )
    assert retries == injected


async def test_exhausted_retries_raise_a_transient_error(ecsim: EcsimEndpoint) -> None:  # noqa: F811
    async with PlatformClient(ecsim.platform_settings(platform_max_attempts=3)) as client:
        await client.list_data_sources()
        await ecsim.set_faults(rate=1.0, statuses=[503])
        before = (await ecsim.state())["rest"]["calls"]
        with pytest.raises(PlatformUnavailable) as err:
            await client.get_trait(1)
    assert isinstance(err.value, TransientError)
    assert is_transient(err.value)
    assert (err.value.status, err.value.method, err.value.path) == (503, "GET", "/traits/1")
    assert err.value.body["code"] == "server_error"
    assert (await ecsim.state())["rest"]["calls"] - before == 3


async def test_retry_after_is_honoured(ecsim: EcsimEndpoint) -> None:  # noqa: F811
    settings = ecsim.platform_settings(platform_max_attempts=2, platform_retry_after_max_s=5)
    async with PlatformClient(settings) as client:
        await client.list_data_sources()
        await ecsim.set_faults(rate=1.0, statuses=[429], retry_after_s=1, max_faults=1)
        started = time.monotonic()
        await client.list_data_sources()
        assert time.monotonic() - started >= 1.0


async def test_unreachable_platform_is_transient(ecsim: EcsimEndpoint) -> None:  # noqa: F811
    settings = ecsim.platform_settings(platform_ims_url="http://127.0.0.1:9/ims/token/v3", platform_max_attempts=2)
    async with PlatformClient(settings) as client:
        with pytest.raises(PlatformUnavailable) as err:
            await client.list_data_sources()
    assert is_transient(err.value)


async def test_4xx_answers_become_typed_errors(ecsim: EcsimEndpoint) -> None:  # noqa: F811
    settings = ecsim.platform_settings()
    async with PlatformClient(settings) as client:
        ds_id = await _data_source(client)
        with pytest.raises(NotFound) as not_found:
            await client.get_trait(999)
        assert (not_found.value.status, not_found.value.path) == (404, "/traits/999")
        assert await client.find_trait_by_integration_code("nope") is None

        await client.create_trait(_trait_spec(ds_id, "dup"))
        with pytest.raises(Conflict) as conflict:
            await client.create_trait(_trait_spec(ds_id, "dup"))
        assert conflict.value.status == 409
        assert conflict.value.method == "POST"
        assert "dup" in conflict.value.body["message"]

        with pytest.raises(BadRequest) as bad:
            await client.create_trait(_trait_spec(424242, "x"))
        assert bad.value.body["details"][0]["field"] == "dataSourceId"
        with pytest.raises(BadRequest):
            await client.create_segment(SegmentSpec(name="s", segment_rule="1T AND", data_source_id=ds_id))
        for error in (not_found.value, conflict.value, bad.value):
            assert isinstance(error, PermanentError)
            assert not is_transient(error)

    # A valid token presented with another client's API key.
    wrong_key = ecsim.platform_settings(platform_client_id="someone-else")
    provider = TokenProvider.from_settings(settings)
    try:
        async with PlatformClient(wrong_key, token_provider=provider) as client:
            with pytest.raises(Forbidden) as forbidden:
                await client.list_data_sources()
        assert forbidden.value.status == 403
    finally:
        await provider.close()

    async with PlatformClient(ecsim.platform_settings(platform_client_secret="wrong")) as client:
        with pytest.raises(AuthenticationFailed) as refused:
            await client.list_data_sources()
    assert isinstance(refused.value, Unauthorized)
    assert refused.value.status == 401
    assert refused.value.body["error"] == "invalid_client"


async def test_ensure_reuses_objects_found_by_integration_code(ecsim: EcsimEndpoint) -> None:  # noqa: F811
    async with PlatformClient(ecsim.platform_settings()) as client:
        ds_id = await _data_source(client)
        trait, created = await client.ensure_trait(_trait_spec(ds_id, "list-42"))
        assert created
        again, created = await client.ensure_trait(_trait_spec(ds_id, "list-42"))
        assert (again.sid, created) == (trait.sid, False)

        spec = SegmentSpec(
            name="list 42",
            segment_rule=one_trait_rule(trait.sid),
            data_source_id=ds_id,
            integration_code="list-42",
        )
        segment, created = await client.ensure_segment(spec)
        assert created
        assert segment.segment_rule == f"{trait.sid}T"
        assert (await client.ensure_segment(spec)) == (segment, False)
        assert [s.sid for s in await client.list_segments(contains_trait=trait.sid)] == [segment.sid]

        other_ds = await _data_source(client, "other")
        with pytest.raises(Conflict):
            await client.ensure_trait(_trait_spec(other_ds, "list-42"))

        # Concurrent publishers ensuring the same audience end with one trait.
        results = await asyncio.gather(*(client.ensure_trait(_trait_spec(ds_id, "race")) for _ in range(5)))
        assert len({t.sid for t, _ in results}) == 1
        assert sum(created for _, created in results) == 1


async def test_objects_round_trip(ecsim: EcsimEndpoint) -> None:  # noqa: F811
    async with PlatformClient(ecsim.platform_settings()) as client:
        ds = await client.create_data_source(
            DataSourceSpec(
                name="Adobe Campaign (DeclaredId)", integration_code="decl", data_export_restrictions=["PII"]
            )
        )
        assert ds.forbids_pii
        assert (await client.get_data_source(ds.data_source_id)).data_export_restrictions == ["PII"]
        assert ds.create_time is not None
        assert ds.create_time > 1_600_000_000_000  # epoch milliseconds

        renamed = await client.update_data_source(ds.data_source_id, ds.model_copy(update={"name": "renamed"}))
        assert renamed.name == "renamed"
        assert renamed.data_export_restrictions == ["PII"]
        assert renamed.create_time == ds.create_time

        trait = await client.create_trait(_trait_spec(ds.data_source_id, "t", comments="why"))
        updated = await client.update_trait(trait.sid, trait.model_copy(update={"trait_rule": 'ic=="t"'}))
        assert (updated.trait_rule, updated.comments, updated.ttl) == ('ic=="t"', "why", 120)

        await ecsim.admin(
            "POST",
            f"/datasources/{ds.data_source_id}/receipts",
            {"dataFileName": "ftp_dpm_1_1700000000.sync", "recordsReceived": 2, "storedRecords": 1},
        )
        [receipt] = await client.inbound_history(ds.data_source_id)
        assert (receipt.records_received, receipt.stored_records) == (2, 1)
        assert await client.inbound_history(ds.data_source_id, data_file_name="other") == []

        push = await client.create_destination(DestinationSpec(name="url", destination_type="PUSH"))
        assert (await client.get_destination(push.destination_id)).name == "url"
        await client.delete_destination(push.destination_id)
        await client.delete_trait(trait.sid)
        await client.delete_data_source(ds.data_source_id)
        with pytest.raises(NotFound):
            await client.get_data_source(ds.data_source_id)


async def test_server_to_server_destinations_are_read_only(ecsim: EcsimEndpoint) -> None:  # noqa: F811
    seeded = await ecsim.seed(
        {
            "datasources": [{"dataSourceId": 1001, "name": "Recipient - Visitor ID"}],
            "traits": [{"sid": 5, "name": "t", "traitType": ON_BOARDED_TRAIT, "dataSourceId": 1001, "folderId": 0}],
            "segments": [{"sid": 6, "name": "s", "segmentRule": "5T", "dataSourceId": 1001, "folderId": 0}],
            "destinations": [
                {"destinationId": 77, "name": "Campaign", "destinationType": "S2S", "mappings": [{"sid": 6}]}
            ],
        }
    )
    assert seeded["destinations"][0]["destinationId"] == 77
    async with PlatformClient(ecsim.platform_settings()) as client:
        dest = await client.get_destination(77)
        assert dest.segment_ids == [6]
        assert [d.destination_id for d in await client.list_destinations(contains_segment=6)] == [77]
        with pytest.raises(BadRequest):
            await client.update_destination(77, dest.model_copy(update={"name": "x"}))
        with pytest.raises(BadRequest):
            await client.create_destination(DestinationSpec(name="s2s", destination_type="S2S"))


async def test_secrets_never_reach_logs_or_errors(
    ecsim: EcsimEndpoint,  # noqa: F811
    captured_logs: io.StringIO,
) -> None:
    settings = ecsim.platform_settings(platform_max_attempts=2)
    secret = settings.platform_client_secret.get_secret_value()
    tokens: list[str] = []
    errors: list[BaseException] = []
    async with PlatformClient(settings) as client:
        tokens.append(await client.tokens.token())
        ds_id = await _data_source(client)
        # An expired token makes the platform echo it in WWW-Authenticate.
        await ecsim.expire_tokens()
        await client.list_data_sources()
        tokens.append(await client.tokens.token())
        await client.create_trait(_trait_spec(ds_id, "c"))
        with pytest.raises(Conflict) as conflict:
            await client.create_trait(_trait_spec(ds_id, "c"))
        errors.append(conflict.value)
        await ecsim.set_faults(rate=1.0, statuses=[500, 429], retry_after_s=0, seed=1)
        with pytest.raises(PlatformUnavailable) as unavailable:
            await client.list_traits()
        errors.append(unavailable.value)
        await ecsim.clear_faults()
    async with PlatformClient(ecsim.platform_settings(platform_client_secret="not-the-secret-xyz")) as client:
        with pytest.raises(AuthenticationFailed) as refused:
            await client.list_data_sources()
        errors.append(refused.value)
    assert tokens[0] != tokens[1]

    logged = captured_logs.getvalue()
    events = [orjson.loads(line)["event"] for line in logged.splitlines()]
    assert "platform_token_issued" in events
    assert "platform_token_rejected" in events
    assert "platform_call_retrying" in events
    assert "platform_token_refused" in events
    texts = [logged, *(str(e) for e in errors), *(repr(e.body) for e in errors if hasattr(e, "body"))]
    texts += [repr(settings), repr(client), repr(client.tokens)]
    assert ecsim.log_path is not None
    texts.append(ecsim.log_path.read_text())  # ecsim's own log (shared by the session's tests)
    for text in texts:
        for value in (secret, "not-the-secret-xyz", *tokens):
            assert value not in text


async def test_another_platform_needs_only_settings(
    ecsim: EcsimEndpoint,  # noqa: F811
    ecsim_factory: EcsimFactory,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    seed = tmp_path / "seed.json"
    seed.write_bytes(orjson.dumps({"datasources": [{"dataSourceId": 29769, "name": "provisioned"}]}))
    other = await ecsim_factory(
        ECSIM_CLIENT_ID="prod-like-client", ECSIM_CLIENT_SECRET="prod-like-secret", ECSIM_SEED_FILE=str(seed)
    )
    monkeypatch.setenv("PLATFORM_IMS_URL", other.ims_url)
    monkeypatch.setenv("PLATFORM_API_URL", other.api_url + "/")
    monkeypatch.setenv("PLATFORM_CLIENT_ID", "prod-like-client")
    monkeypatch.setenv("PLATFORM_CLIENT_SECRET", "prod-like-secret")
    settings = load_settings(PlatformSettings)
    assert settings.platform_api_url == other.api_url
    async with PlatformClient(settings) as client:
        assert (await client.get_data_source(29769)).name == "provisioned"
        await _data_source(client, "only-on-the-other")
        codes = [d.integration_code for d in await client.list_data_sources()]
        assert codes == [None, "only-on-the-other"]
    assert (await ecsim.state())["datasources"] == []
    assert len((await other.state())["datasources"]) == 2


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("3", 3.0),
        (" 0 ", 0.0),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
)
def test_retry_after_parsing(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_error_bodies_are_scrubbed() -> None:
    raw = orjson.dumps({"message": "bad token tok-123 for secret-9", "access_token": "zzz", "code": "x"})
    body = safe_body(raw, ["tok-123", "secret-9", None])
    assert body == {"message": "bad token *** for ***", "access_token": "***", "code": "x"}
    assert safe_body(b"Bearer abc.def oops " * 500)[:16] == "Bearer *** oops "
    assert len(safe_body(b"x" * 10_000)) == 2000
    cut_secret = b"x" * 1995 + b"tok-123"
    assert "tok-" not in safe_body(cut_secret, ["tok-123"])
