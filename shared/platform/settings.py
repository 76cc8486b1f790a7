"""Settings of the platform client: where IMS and the REST API are, the credential, retries, timeouts.

The defaults point at a local ecsim (``make up``); in production only these variables change:

* ``PLATFORM_IMS_URL``: local ``http://127.0.0.1:8090/ims/token/v3``;
  production ``https://ims-na1.adobelogin.com/ims/token/v3``.
* ``PLATFORM_API_URL``: local ``http://127.0.0.1:8090/v1``; production ``https://aam.adobe.io/v1``.
* ``PLATFORM_CLIENT_ID``: local ``audience-bridge-local``; production the Developer Console
  credential's client id.
* ``PLATFORM_CLIENT_SECRET`` (or ``PLATFORM_CLIENT_SECRET_FILE``): local ``ecsim-local-secret``;
  **must be set in production** to the credential's secret.
* ``PLATFORM_SCOPE``: the credential's comma-separated scopes (the default names ``audiencemanager_api``).

The AAM API needs no organisation header (only ``Authorization`` and ``x-api-key``), so there is no
org id setting.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from shared.settings import BaseServiceSettings

LOCAL_CLIENT_ID = "audience-bridge-local"
# Matches ecsim's local default so `make up` works; production must set PLATFORM_CLIENT_SECRET(_FILE).
LOCAL_CLIENT_SECRET = "ecsim-local-secret"  # a documented local default, not a credential
DEFAULT_SCOPE = "openid,AdobeID,read_organizations,additional_info.projectedProductContext,audiencemanager_api"


class PlatformSettings(BaseServiceSettings):
    """Mixin for services that call the platform (IMS + AAM REST API)."""

    platform_ims_url: str = Field(
        "http://127.0.0.1:8090/ims/token/v3",
        description="IMS token endpoint (production: https://ims-na1.adobelogin.com/ims/token/v3).",
    )
    platform_api_url: str = Field(
        "http://127.0.0.1:8090/v1",
        description="Base URL of the REST API, up to and including /v1 (production: https://aam.adobe.io/v1).",
    )
    platform_client_id: str = Field(
        LOCAL_CLIENT_ID, min_length=1, description="OAuth server-to-server client id; also sent as x-api-key."
    )
    platform_client_secret: SecretStr = Field(
        SecretStr(LOCAL_CLIENT_SECRET),
        description="OAuth client secret. The default only suits the local ecsim: set it in production.",
    )
    platform_scope: str = Field(DEFAULT_SCOPE, description="Comma-separated IMS scopes of the credential.")
    platform_token_renew_margin_s: float = Field(
        300.0,
        ge=0,
        description="Renew the access token this long before it expires (at most a tenth of its lifetime).",
    )
    platform_max_attempts: int = Field(
        5, ge=1, le=20, description="Attempts per call on 429, 5xx and connection errors (1 = no retry)."
    )
    platform_backoff_initial_s: float = Field(0.2, gt=0, description="First retry delay ceiling (seconds).")
    platform_backoff_max_s: float = Field(10.0, gt=0, description="Largest retry delay (seconds).")
    platform_retry_after_max_s: float = Field(
        60.0, ge=0, description="Longest Retry-After honoured; a longer one is cut to this."
    )
    platform_connect_timeout_s: float = Field(5.0, gt=0, description="Bound on opening a connection.")
    platform_request_timeout_s: float = Field(30.0, gt=0, description="Bound on one whole request.")
    platform_page_size: int = Field(100, ge=1, le=10_000, description="pageSize when listing all pages.")

    @field_validator("platform_ims_url", "platform_api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")
