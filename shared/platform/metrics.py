"""Optional measurements of platform calls: pass a :class:`PlatformMetrics` to the client.

:class:`PrometheusPlatformMetrics` registers counters in a service's registry (``RuntimeMetrics.registry``)
so they show on ``/metrics``. Labels stay low-cardinality: the resource (``traits``, ``segments``…),
never an id or an integration code.
"""

from __future__ import annotations

from typing import Any, Protocol

from prometheus_client import Counter


class PlatformMetrics(Protocol):
    def call(self, method: str, resource: str, status: str) -> None:
        """One HTTP exchange ended; ``status`` is the HTTP status or ``error`` (no answer)."""

    def retry(self, method: str, resource: str, reason: str) -> None:
        """A call is retried; ``reason`` is the status, ``error`` or ``unauthorized`` (token renewal)."""

    def token(self, outcome: str) -> None:
        """A token request ended: ``ok``, ``refused`` or ``error``."""


class NoMetrics:
    def call(self, method: str, resource: str, status: str) -> None:
        pass

    def retry(self, method: str, resource: str, reason: str) -> None:
        pass

    def token(self, outcome: str) -> None:
        pass


class PrometheusPlatformMetrics:
    def __init__(self, registry: Any) -> None:
        self._calls = Counter(
            "ab_platform_calls_total",
            "HTTP exchanges with the platform's REST API, by method, resource and status.",
            ["method", "resource", "status"],
            registry=registry,
        )
        self._retries = Counter(
            "ab_platform_retries_total",
            "Platform calls retried, by method, resource and reason.",
            ["method", "resource", "reason"],
            registry=registry,
        )
        self._tokens = Counter(
            "ab_platform_token_requests_total",
            "IMS token requests, by outcome.",
            ["outcome"],
            registry=registry,
        )

    def call(self, method: str, resource: str, status: str) -> None:
        self._calls.labels(method, resource, status).inc()

    def retry(self, method: str, resource: str, reason: str) -> None:
        self._retries.labels(method, resource, reason).inc()

    def token(self, outcome: str) -> None:
        self._tokens.labels(outcome).inc()
