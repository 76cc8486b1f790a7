"""Who may read a service's pages and API: credentials, the bind rule, and the aiohttp middleware.

Every route but the probes (``/healthz``, ``/readyz``, ``/metrics``: kubelets and Prometheus ask without a
credential) needs ``Authorization: Bearer <token>`` or HTTP Basic of a user, as listed in the service's
``STATUS_PAGE_CREDENTIALS`` (one per line, usually a file given as ``STATUS_PAGE_CREDENTIALS_FILE``)::

    # comments and blank lines are ignored
    token:grafana:<a random token of 16 characters at least>
    user:alice:scrypt$16384$8$1$<salt>$<hash>      # python -m shared.passwords

A route added later is protected the same way without doing anything: the middleware wraps the whole app.
The authenticated name is ``principal_of(request)`` (``"anonymous"`` when the service is open), for audit.

The bind rule keeps a laptop's stack working and a server's safe: bound to loopback with no credential, the
service is open (only this machine can reach it); bound beyond loopback with none, it refuses to start
(:class:`ConfigError`, exit 2) unless ``STATUS_PAGE_PUBLIC=true`` says so on purpose. A service serving
nothing but the probes is never refused. Security headers go on every response, the probes' included.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import ipaddress
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from shared.errors import ConfigError
from shared.logging import get_logger
from shared.passwords import InvalidPasswordHash, hash_password, parse_hash, verify_password

log = get_logger(__name__)

OPEN_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})
# request[PRINCIPAL] (or principal_of(request)): who the request authenticated as, for audit trails.
PRINCIPAL: Final = web.RequestKey("principal", str)
ANONYMOUS: Final = "anonymous"
REALM: Final = "audience-bridge"
MIN_TOKEN_CHARS: Final = 16
SECURITY_HEADERS: Final = {
    # A default for every answer; the status page sends its own (stricter about styles and images) CSP.
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_NAME: Final = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
_VERIFIED_TTL_S: Final = 300.0
_VERIFIED_MAX: Final = 1024


@functools.cache
def dummy_hash() -> str:
    """Verified against when the user is unknown, so a wrong name costs the same time as a wrong password.
    Made when an authenticator with users is built, not at import: an scrypt hash costs ~70 ms, which every
    process importing this module (each service, each CLI call) paid at start."""
    return hash_password("not a password", salt=b"audience-bridge!")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Credentials:
    """Tokens by their SHA-256 (the token itself is not kept) and users' password hashes, by name."""

    tokens: Mapping[bytes, str] = field(default_factory=dict)
    users: Mapping[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.tokens or self.users)


def parse_credentials(text: str) -> Credentials:
    """Parse the credentials lines; a bad line is a :class:`ConfigError` naming its number, never its secret."""
    tokens: dict[bytes, str] = {}
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        kind, _, rest = line.partition(":")
        name, _, secret = rest.partition(":")
        if kind not in ("token", "user") or not _NAME.match(name) or not secret:
            raise ConfigError(
                "STATUS_PAGE_CREDENTIALS: expected token:<name>:<token> or user:<name>:<password hash>", line=number
            )
        if name in tokens.values() or name in users:
            raise ConfigError("STATUS_PAGE_CREDENTIALS: a name is listed twice", line=number, name=name)
        if kind == "token":
            if len(secret) < MIN_TOKEN_CHARS:
                raise ConfigError(f"STATUS_PAGE_CREDENTIALS: a token needs {MIN_TOKEN_CHARS} characters", line=number)
            tokens[hashlib.sha256(secret.encode()).digest()] = name
        else:
            try:
                parse_hash(secret)
            except InvalidPasswordHash as exc:
                raise ConfigError(f"STATUS_PAGE_CREDENTIALS: bad password hash: {exc}", line=number) from None
            users[name] = secret
    return Credentials(tokens, users)


def is_loopback(host: str) -> bool:
    """Only loopback addresses (and ``localhost``) count: a name or ``0.0.0.0`` may be reached from elsewhere."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serves_beyond_probes(app: web.Application) -> bool:
    """Whether the app has a route (or sub-application) other than the probes."""
    for resource in app.router.resources():
        path = resource.get_info().get("path") or resource.get_info().get("prefix") or resource.canonical
        if path not in OPEN_PATHS:
            return True
    return False


def check_binding(*, host: str, credentials: Credentials, public: bool, serves_pages: bool) -> None:
    """Refuse a service that would show its pages to the network without asking who is there."""
    if credentials or public or not serves_pages or is_loopback(host):
        return
    raise ConfigError(
        "refusing to serve the status page and API without a credential beyond loopback: set "
        "STATUS_PAGE_CREDENTIALS_FILE (or STATUS_PAGE_PUBLIC=true to serve them to anyone on purpose)",
        http_host=host,
    )


class Authenticator:
    """Answers who a request's ``Authorization`` header names, or None. Password checks run in a thread
    (scrypt costs ~50 ms of CPU) and are remembered for a few minutes, by a hash of the pair: a page viewer's
    browser sends Basic with every request."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials
        self._verified: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        if credentials.users:
            dummy_hash()  # made now, so that the first unknown name costs what a wrong password does

    async def principal(self, header: str | None) -> str | None:
        if not header:
            return None
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() == "bearer":
            return self._token(value.strip())
        if scheme.lower() == "basic":
            return await self._user(value.strip())
        return None

    def _token(self, token: str) -> str | None:
        digest = hashlib.sha256(token.encode()).digest()
        found: str | None = None
        # Every known token is compared, in constant time each: how long it takes says nothing about which.
        for known, name in self._credentials.tokens.items():
            if hmac.compare_digest(digest, known):
                found = name
        return found

    async def _user(self, value: str) -> str | None:
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        name, sep, password = decoded.partition(":")
        if not sep:
            return None
        key = hashlib.sha256(f"{name}\0{password}".encode()).digest()
        remembered = self._verified.get(key)
        if remembered is not None and remembered[1] > time.monotonic():
            return remembered[0]
        encoded = self._credentials.users.get(name)
        ok = await asyncio.to_thread(verify_password, password, encoded or dummy_hash())
        if not ok or encoded is None:
            return None
        self._verified[key] = (name, time.monotonic() + _VERIFIED_TTL_S)
        while len(self._verified) > _VERIFIED_MAX:
            self._verified.popitem(last=False)
        return name


def principal_of(request: web.Request) -> str:
    """Who the request authenticated as (``anonymous`` when the service is open or the route is a probe)."""
    principal: str = request.get(PRINCIPAL, ANONYMOUS)
    return principal


def _challenge() -> web.HTTPUnauthorized:
    error = web.HTTPUnauthorized(text="authentication required: a bearer token or a user (see the README)\n")
    # Two challenges, one per header: browsers then offer their Basic dialog, scripts see Bearer.
    error.headers.add("WWW-Authenticate", f'Bearer realm="{REALM}"')
    error.headers.add("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
    return error


def auth_middleware(authenticator: Authenticator | None) -> Middleware:
    """``None``: the service is open (loopback, or public on purpose); everyone is ``anonymous``."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS or authenticator is None:
            request[PRINCIPAL] = ANONYMOUS
            return await handler(request)
        principal = await authenticator.principal(request.headers.get("Authorization"))
        if principal is None:
            log.warning("http_unauthenticated", method=request.method, path=request.path, remote=request.remote)
            raise _challenge()
        request[PRINCIPAL] = principal
        return await handler(request)

    return authenticate


async def _security_headers(_: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def add_security_headers(app: web.Application) -> None:
    app.on_response_prepare.append(_security_headers)


def secure(app: web.Application, *, host: str, credentials_text: str | None, public: bool) -> None:
    """Install the credential check and headers on a service's app, or raise ConfigError (the bind rule)."""
    credentials = parse_credentials(credentials_text or "")
    check_binding(host=host, credentials=credentials, public=public, serves_pages=serves_beyond_probes(app))
    app.middlewares.append(auth_middleware(Authenticator(credentials) if credentials else None))
    add_security_headers(app)
    log.info(
        "http_access",
        protected=bool(credentials),
        principals=len(credentials.tokens) + len(credentials.users),
        public=public,
        host=host,
    )


__all__ = [
    "ANONYMOUS",
    "OPEN_PATHS",
    "PRINCIPAL",
    "SECURITY_HEADERS",
    "Authenticator",
    "Credentials",
    "add_security_headers",
    "auth_middleware",
    "check_binding",
    "is_loopback",
    "parse_credentials",
    "principal_of",
    "secure",
    "serves_beyond_probes",
]
