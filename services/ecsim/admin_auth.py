"""Who may use ecsim's ``/sim`` admin endpoints (seeding, faults, resets, membership: the whole platform).

With ``ECSIM_SIM_TOKEN`` (or ``_FILE``) set, every ``/sim`` request needs ``Authorization: Bearer <token>``
(compared in constant time), else a 401 in the platform's error shape. The bind rule is the bridge's pages'
(shared.http_auth): with the admin endpoints on and no token, ecsim serves them only on loopback, and refuses
to start beyond it unless ``ECSIM_SIM_PUBLIC=true`` says so on purpose. The IMS and REST endpoints keep
their own credentials (the IMS client and its access tokens).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from services.ecsim.http_util import error_response
from services.ecsim.settings import EcsimSettings
from shared.errors import ConfigError
from shared.http_auth import MIN_TOKEN_CHARS, is_loopback
from shared.logging import get_logger

log = get_logger(__name__)

CHALLENGE: Final = 'Bearer realm="ecsim-sim"'


def check_sim_binding(settings: EcsimSettings) -> None:
    """Refuse the admin endpoints on the network with no token (unless ECSIM_SIM_PUBLIC); a short token too."""
    token = settings.ecsim_sim_token
    if token is not None and len(token.get_secret_value()) < MIN_TOKEN_CHARS:
        raise ConfigError(f"ECSIM_SIM_TOKEN needs {MIN_TOKEN_CHARS} characters at least")
    if not settings.ecsim_admin_enabled or token is not None or settings.ecsim_sim_public:
        return
    if not is_loopback(settings.http_host):
        raise ConfigError(
            "refusing to serve /sim beyond loopback without a token: set ECSIM_SIM_TOKEN_FILE "
            "(or ECSIM_SIM_PUBLIC=true on purpose)",
            http_host=settings.http_host,
        )


def sim_token_middleware(settings: EcsimSettings) -> list[Middleware]:
    """The middleware for the ``/sim`` sub-application: none without a token (loopback or public)."""
    if settings.ecsim_sim_token is None:
        return []
    expected = hashlib.sha256(settings.ecsim_sim_token.get_secret_value().encode()).digest()

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        digest = hashlib.sha256(presented.strip().encode()).digest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(digest, expected):
            log.warning("ecsim_sim_unauthenticated", method=request.method, path=request.path)
            return error_response(401, "the /sim endpoints need the sim token", {"WWW-Authenticate": CHALLENGE})
        return await handler(request)

    return [require_token]
