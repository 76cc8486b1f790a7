"""The demo's world: the campaign's catalog, the platform's objects, and the population that overlaps them.

The synthetic population (``shared.population``) is part of the test rig: the dev image and a source
checkout carry it, the runtime image does not. It is imported when the demo runs, never at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.reconcile.catalog import CatalogDataSource, CatalogExportAudience, CatalogFile, CatalogImportAudience
from shared.errors import BridgeError

if TYPE_CHECKING:  # the dev image's (see the module's docstring): imported by population_spec() at run time
    from shared.population import Population, PopulationSpec

NEEDS_DEV_IMAGE = "the demo needs the dev image (--target dev) or a source checkout"

VISITOR_DPID, DECLARED_DPID = 1001, 1002
VISITOR_SEGMENT, DECLARED_SEGMENT = 5001, 5002
VISITOR_TRAIT, DECLARED_TRAIT = 9001, 9002
VISITOR_DESTINATION, DECLARED_DESTINATION = 7001, 7002

TARGETED_LIST = "Demo: engaged newsletter readers"
EXPORT_AUDIENCE = "Engaged newsletter readers"

CATALOG = CatalogFile(
    data_sources=[
        CatalogDataSource(name="visitors", dpid=VISITOR_DPID, id_type="ecid"),
        CatalogDataSource(
            name="hashed-emails",
            dpid=DECLARED_DPID,
            id_type="declared",
            reconciliation_key="email",
            key_transform="sha256",
        ),
    ],
    import_audiences=[
        CatalogImportAudience(
            audience_id="demo-engaged-visitors",
            name="Engaged visitors",
            platform_segment_id=VISITOR_SEGMENT,
            data_source="visitors",
            list="Demo: engaged visitors",
        ),
        CatalogImportAudience(
            audience_id="demo-newsletter-readers",
            name="Newsletter readers",
            platform_segment_id=DECLARED_SEGMENT,
            data_source="hashed-emails",
            list="Demo: newsletter readers",
        ),
    ],
    # The demo's one export, asked for by the demo itself (on Kafka) or by anyone at the CLI or the API.
    export_audiences=[
        CatalogExportAudience(
            list=TARGETED_LIST,
            data_source="hashed-emails",
            audience_name=EXPORT_AUDIENCE,
            modes=("append", "mirror", "full"),
            requesters=("kafka:demo", "cli:*", "api:*"),
        )
    ],
)

PLATFORM_SEED: dict[str, Any] = {
    "datasources": [
        {
            "dataSourceId": VISITOR_DPID,
            "name": "Adobe Campaign (MID)",
            "integrationCode": "campaign-mid",
            "idType": "COOKIE",
        },
        {
            "dataSourceId": DECLARED_DPID,
            "name": "Adobe Campaign (DeclaredId)",
            "integrationCode": "campaign-declared",
            "idType": "CROSS_DEVICE",
        },
    ],
    "traits": [
        {
            "sid": VISITOR_TRAIT,
            "name": "Engaged on site",
            "traitType": "ON_BOARDED_TRAIT",
            "dataSourceId": VISITOR_DPID,
            "folderId": 0,
        },
        {
            "sid": DECLARED_TRAIT,
            "name": "Reads the newsletter",
            "traitType": "ON_BOARDED_TRAIT",
            "dataSourceId": DECLARED_DPID,
            "folderId": 0,
        },
    ],
    "segments": [
        {
            "sid": VISITOR_SEGMENT,
            "name": "Engaged visitors",
            "segmentRule": f"{VISITOR_TRAIT}T",
            "dataSourceId": VISITOR_DPID,
            "folderId": 0,
        },
        {
            "sid": DECLARED_SEGMENT,
            "name": "Newsletter readers",
            "segmentRule": f"{DECLARED_TRAIT}T",
            "dataSourceId": DECLARED_DPID,
            "folderId": 0,
        },
    ],
    "destinations": [
        {
            "destinationId": VISITOR_DESTINATION,
            "name": "Adobe Campaign (MID)",
            "destinationType": "S2S",
            "dataSourceId": VISITOR_DPID,
            "mappings": [{"sid": VISITOR_SEGMENT}],
        },
        {
            "destinationId": DECLARED_DESTINATION,
            "name": "Adobe Campaign (DeclaredId)",
            "destinationType": "S2S",
            "dataSourceId": DECLARED_DPID,
            "mappings": [{"sid": DECLARED_SEGMENT}],
        },
    ],
}


class DemoUnavailable(BridgeError):
    """The demo's test rig (``shared.population``) is not installed: the runtime image leaves it out."""


def population_spec(recipients: int, seed: int) -> PopulationSpec:
    try:
        from shared.population import PopulationSegment, PopulationSpec
    except ImportError:
        raise DemoUnavailable(NEEDS_DEV_IMAGE) from None
    engaged = recipients * 3 // 10
    readers = recipients // 4
    return PopulationSpec(
        seed=seed,
        recipients=recipients,
        unknown_profiles=max(recipients // 50, 10),
        malformed_profiles=max(recipients // 10_000, 5),
        segments=(
            PopulationSegment(name="engaged", size=engaged, start=0, sid=VISITOR_SEGMENT),
            PopulationSegment(name="readers", size=readers, start=engaged - readers // 2, sid=DECLARED_SEGMENT),
        ),
    )


def expected_members(population: Population, segment: str, id_type: str) -> set[int]:
    """Recipients a segment must bring into its list: known profiles that carry an ID of that type."""
    return {
        p.recipient
        for p in population.segment_members(segment)
        if p.recipient is not None and p.ids(id_type)  # type: ignore[arg-type]
    }
