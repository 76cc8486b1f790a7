"""The platform's REST API client: every resource (``resources.py``) over the request machinery (``rest.py``,
whose docstring says how answers, retries and token renewal are handled)."""

from __future__ import annotations

from shared.platform.resources import DataSourcesApi, DestinationsApi, SegmentsApi, TraitsApi


class PlatformClient(DataSourcesApi, TraitsApi, SegmentsApi, DestinationsApi):
    """One client per service; safe for concurrent use. Use as ``async with PlatformClient(settings)``."""

    def __repr__(self) -> str:
        return f"PlatformClient(api_url={self.api_url!r}, client_id={self.settings.platform_client_id!r})"
