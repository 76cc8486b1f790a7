"""shared.http_auth and shared.passwords: the credentials file, the bind rule, the middleware and headers."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import ConfigError
from shared.http_auth import (
    ANONYMOUS,
    PRINCIPAL,
    Authenticator,
    check_binding,
    is_loopback,
    parse_credentials,
    secure,
    serves_beyond_probes,
)
from shared.passwords import hash_password, parse_hash, verify_password

TOKEN = "a-token-of-enough-characters"
PASSWORD = "correct horse battery staple"
ALICE_HASH = hash_password(PASSWORD, salt=b"fixed-salt-for-tests")
CREDENTIALS = f"# viewers\n\ntoken:grafana:{TOKEN}\nuser:alice:{ALICE_HASH}\n"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- passwords -------------------------------------------------------------------------------------------


def test_a_password_verifies_against_its_hash_only() -> None:
    encoded = hash_password(PASSWORD)
    assert encoded.startswith("scrypt$16384$8$1$")
    assert verify_password(PASSWORD, encoded)
    assert not verify_password(PASSWORD + "!", encoded)
    assert hash_password(PASSWORD) != encoded  # a fresh salt each time


@pytest.mark.parametrize(
    "encoded",
    ["", "plain", "bcrypt$1$2$3$4$5", "scrypt$16384$8$1$c2FsdA", "scrypt$3$8$1$c2FsdHNhbHQ$" + "A" * 43],
)
def test_a_malformed_hash_never_verifies(encoded: str) -> None:
    assert not verify_password(PASSWORD, encoded)


# --- the credentials file --------------------------------------------------------------------------------


def test_credentials_are_parsed_and_tokens_kept_only_as_digests() -> None:
    credentials = parse_credentials(CREDENTIALS)
    assert set(credentials.tokens.values()) == {"grafana"}
    assert TOKEN.encode() not in credentials.tokens
    assert credentials.users == {"alice": ALICE_HASH}
    assert not parse_credentials("# nothing\n\n")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("grafana:" + TOKEN, "expected token:<name>:<token>"),
        ("token::" + TOKEN, "expected token:<name>:<token>"),
        ("token:bad name:" + TOKEN, "expected token:<name>:<token>"),
        ("token:short:abc", "16 characters"),
        ("user:bob:not-a-hash", "bad password hash"),
        (f"token:x:{TOKEN}\nuser:x:{ALICE_HASH}", "listed twice"),
    ],
)
def test_a_bad_line_is_refused_with_its_number_and_never_its_secret(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_credentials("# first\n" + text)
    assert says in str(caught.value)
    assert "line=2" in str(caught.value) or "line=3" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert "not-a-hash" not in str(caught.value)


@settings(max_examples=300)
@given(st.text())
def test_any_text_parses_or_is_refused_as_a_config_error(text: str) -> None:
    # Whatever the text: credentials, or a ConfigError naming the line (never another exception).
    refused: ConfigError | None = None
    try:
        parse_credentials(text)
    except ConfigError as exc:
        refused = exc
    assert refused is None or refused.context["line"] >= 1


# --- the bind rule ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("reconcile.example.internal", False),
        ("", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_page_beyond_loopback_needs_a_credential_or_public() -> None:
    none = parse_credentials("")
    with pytest.raises(ConfigError, match="STATUS_PAGE_CREDENTIALS_FILE") as caught:
        check_binding(host="0.0.0.0", credentials=none, public=False, serves_pages=True)
    assert caught.value.context == {"http_host": "0.0.0.0"}
    check_binding(host="0.0.0.0", credentials=none, public=True, serves_pages=True)
    check_binding(host="0.0.0.0", credentials=parse_credentials(CREDENTIALS), public=False, serves_pages=True)
    check_binding(host="127.0.0.1", credentials=none, public=False, serves_pages=True)
    # Only the probes (ingest and publish today): nothing to protect.
    check_binding(host="0.0.0.0", credentials=none, public=False, serves_pages=False)


def _probes_app() -> web.Application:
    app = web.Application()

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"principal": request[PRINCIPAL]})

    for path in ("/healthz", "/readyz", "/metrics"):
        app.router.add_get(path, ok)
    return app


def test_serves_beyond_probes_sees_routes_and_sub_applications() -> None:
    app = _probes_app()
    assert not serves_beyond_probes(app)
    sub = web.Application()
    app.add_subapp("/api", sub)
    assert serves_beyond_probes(app)
    page = _probes_app()

    async def view(_: web.Request) -> web.Response:
        return web.Response()

    page.router.add_get("/status/{id}", view)
    assert serves_beyond_probes(page)


# --- the middleware, through aiohttp -----------------------------------------------------------------------

Client = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


def _service_app() -> web.Application:
    app = _probes_app()

    async def page(request: web.Request) -> web.Response:
        return web.json_response({"principal": request[PRINCIPAL]})

    app.router.add_get("/", page)
    app.router.add_get("/api/anything-added-later", page)
    sub = web.Application()
    sub.router.add_get("/x", page)
    app.add_subapp("/later", sub)
    return app


@pytest_asyncio.fixture
async def client_for() -> AsyncIterator[Client]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(credentials: str | None, *, host: str = "127.0.0.1", public: bool = False) -> TestClient:  # type: ignore[type-arg]
        app = _service_app()
        secure(app, host=host, credentials_text=credentials, public=public)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.mark.parametrize("path", ["/", "/api/anything-added-later", "/later/x"])
async def test_every_route_but_the_probes_needs_a_credential(client_for: Client, path: str) -> None:
    client = await client_for(CREDENTIALS, host="0.0.0.0")
    resp = await client.get(path)
    assert resp.status == 401
    assert resp.headers.getall("WWW-Authenticate") == [
        'Bearer realm="audience-bridge"',
        'Basic realm="audience-bridge", charset="UTF-8"',
    ]
    for header in (f"Bearer {TOKEN}x", "Bearer ", basic("alice", "wrong"), basic("mallory", PASSWORD), "Basic !!"):
        assert (await client.get(path, headers={"Authorization": header})).status == 401, header
    resp = await client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 200
    assert (await resp.json())["principal"] == "grafana"
    resp = await client.get(path, headers={"Authorization": basic("alice", PASSWORD)})
    assert (await resp.json())["principal"] == "alice"


async def test_probes_stay_open_and_every_answer_has_the_security_headers(client_for: Client) -> None:
    client = await client_for(CREDENTIALS, host="0.0.0.0")
    for path in ("/healthz", "/readyz", "/metrics", "/", "/nowhere"):
        resp = await client.get(path)
        assert resp.status in (200, 401, 404)
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        if path in ("/healthz", "/readyz", "/metrics"):
            assert resp.status == 200


async def test_open_on_loopback_or_public_everyone_is_anonymous(client_for: Client) -> None:
    for client in (await client_for(None), await client_for(None, host="0.0.0.0", public=True)):
        resp = await client.get("/api/anything-added-later")
        assert resp.status == 200
        assert (await resp.json())["principal"] == ANONYMOUS


def test_secure_refuses_a_page_beyond_loopback_without_credentials() -> None:
    with pytest.raises(ConfigError, match="refusing to serve"):
        secure(_service_app(), host="0.0.0.0", credentials_text=None, public=False)
    secure(_probes_app(), host="0.0.0.0", credentials_text=None, public=False)


async def test_a_verified_user_is_remembered_and_a_changed_password_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def counting(password: str, encoded: str) -> bool:
        calls.append(password)
        return verify_password(password, encoded)

    monkeypatch.setattr("shared.http_auth.verify_password", counting)
    auth = Authenticator(parse_credentials(CREDENTIALS))
    header = basic("alice", PASSWORD)
    assert [await auth.principal(header) for _ in range(5)] == ["alice"] * 5
    assert len(calls) == 1  # scrypt once, not per request
    assert await auth.principal(basic("alice", "other")) is None
    assert len(calls) == 2
    # An unknown user costs a verification too (against a dummy hash): no shortcut to tell names apart.
    assert await auth.principal(basic("nobody", PASSWORD)) is None
    assert len(calls) == 3


def test_the_dummy_hash_is_well_formed() -> None:
    from shared.http_auth import dummy_hash

    assert parse_hash(dummy_hash())[0] == 2**14
