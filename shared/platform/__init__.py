"""The platform's client side: IMS tokens and the AAM-style REST API, typed.

Typical use in a service whose settings include :class:`PlatformSettings`::

    async with PlatformClient(settings, metrics=PrometheusPlatformMetrics(app.metrics.registry)) as platform:
        trait, created = await platform.ensure_trait(
            TraitSpec(name=..., trait_type=ON_BOARDED_TRAIT, data_source_id=dpid, integration_code=code)
        )

Pointing it at the real platform instead of ecsim changes settings only (see ``settings.py``).
"""

from shared.platform.client import PlatformClient
from shared.platform.errors import (
    AuthenticationFailed,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PlatformError,
    PlatformProtocolError,
    PlatformRejected,
    PlatformUnavailable,
    Unauthorized,
)
from shared.platform.ims import TokenProvider
from shared.platform.metrics import NoMetrics, PlatformMetrics, PrometheusPlatformMetrics
from shared.platform.models import (
    ALGO_TRAIT,
    ON_BOARDED_TRAIT,
    PII,
    RULE_BASED_TRAIT,
    DataSource,
    DataSourceSpec,
    Destination,
    DestinationSpec,
    InboundReceipt,
    Page,
    Segment,
    SegmentSpec,
    Trait,
    TraitSpec,
    one_trait_rule,
)
from shared.platform.settings import PlatformSettings

__all__ = [
    "ALGO_TRAIT",
    "ON_BOARDED_TRAIT",
    "PII",
    "RULE_BASED_TRAIT",
    "AuthenticationFailed",
    "BadRequest",
    "Conflict",
    "DataSource",
    "DataSourceSpec",
    "Destination",
    "DestinationSpec",
    "Forbidden",
    "InboundReceipt",
    "NoMetrics",
    "NotFound",
    "Page",
    "PlatformClient",
    "PlatformError",
    "PlatformMetrics",
    "PlatformProtocolError",
    "PlatformRejected",
    "PlatformSettings",
    "PlatformUnavailable",
    "PrometheusPlatformMetrics",
    "Segment",
    "SegmentSpec",
    "TokenProvider",
    "Trait",
    "TraitSpec",
    "Unauthorized",
    "one_trait_rule",
]
