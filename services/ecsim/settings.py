"""Settings of ecsim (environment variables prefixed ECSIM_ where they are ecsim's own).

| variable | default | meaning |
|---|---|---|
| ``HTTP_PORT`` | 8090 | port of IMS, REST, admin and health endpoints |
| ``ECSIM_CLIENT_ID`` | ``audience-bridge-local`` | the one IMS client (and ``x-api-key``) ecsim knows |
| ``ECSIM_CLIENT_SECRET`` / ``_FILE`` | ``ecsim-local-secret`` | its secret (local default only) |
| ``ECSIM_REQUIRED_SCOPE`` | ``audiencemanager_api`` | a scope a token request must name ("" = any) |
| ``ECSIM_TOKEN_LIFETIME_S`` | 86399 | ``expires_in`` of issued tokens, seconds |
| ``ECSIM_PARTNER_ID`` | 1352 | ``pid`` stamped on every object |
| ``ECSIM_ADMIN_ENABLED`` | false | serve ``/sim/*`` (fault injection, seeding, state) |
| ``ECSIM_FAULT_SEED`` | unset | seed of the fault injector's random choices |
| ``ECSIM_SEED_FILE`` | unset | JSON objects to create at start (same shape as ``POST /sim/seed``) |
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from shared.settings import BaseServiceSettings

DEFAULT_CLIENT_ID = "audience-bridge-local"
DEFAULT_CLIENT_SECRET = "ecsim-local-secret"  # a documented local default, not a credential


class EcsimSettings(BaseServiceSettings):
    http_port: int = Field(8090, ge=0, le=65535, description="Port of IMS, REST, admin and health endpoints.")
    ecsim_client_id: str = Field(
        DEFAULT_CLIENT_ID,
        min_length=1,
        description="Client id of the one IMS credential ecsim accepts; also the expected x-api-key.",
    )
    ecsim_client_secret: SecretStr = Field(
        SecretStr(DEFAULT_CLIENT_SECRET),
        description="Client secret of that credential (local default; the bridge's default matches it).",
    )
    ecsim_required_scope: str = Field(
        "audiencemanager_api",
        description="A token request's comma-separated scope must contain this one (empty: any scope).",
    )
    ecsim_token_lifetime_s: int = Field(
        86399, ge=1, description="expires_in of issued access tokens, in seconds (tests make it short)."
    )
    ecsim_partner_id: int = Field(1352, ge=1, description="Partner id (pid) stamped on every object.")
    ecsim_admin_enabled: bool = Field(
        False, description="Serve the /sim/ admin endpoints (fault injection, seeding, state); 404 when off."
    )
    ecsim_fault_seed: int | None = Field(
        None, description="Seed of the fault injector's random choices, for reproducible runs."
    )
    ecsim_seed_file: Path | None = Field(
        None, description="JSON file of objects to create at start, shaped like the body of POST /sim/seed."
    )
