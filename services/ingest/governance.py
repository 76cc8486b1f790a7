"""Data export controls: a segment built on data that must not be tied to PII never becomes a list.

A campaign list is PII by nature (recipients with e-mails). If the audience's own data source, the
segment's data source, or the data source of any trait in the segment's rule carries the ``PII``
export restriction, the import is refused: the run is reported ``blocked`` and nothing is written.
Metadata comes from the platform's REST API and is cached for ``refresh_s``; when the platform cannot
be asked, the import waits (a transient error) rather than proceeding unchecked. Each platform verdict is
recorded in ``segment_governance`` (given a pool), where reconcile checks it again for every membership
batch (:mod:`services.reconcile.import_governance`): a producer writing to the topic directly cannot
bypass it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from services.ingest.audiences import ImportAudience
from shared.logging import get_logger
from shared.platform import PlatformClient
from shared.platform.errors import NotFound
from shared.platform.models import PII

log = get_logger(__name__)

# Why an audience may not be imported (None: it may): what the file and event flows ask before emitting.
GovernanceCheck = Callable[[ImportAudience], Awaitable[str | None]]
_TRAIT_IN_RULE = re.compile(r"(\d+)T\b")


def traits_in_rule(rule: str) -> list[int]:
    """Trait ids named by a segment rule such as ``123T OR (456T AND NOT 789T)``."""
    return sorted({int(m) for m in _TRAIT_IN_RULE.findall(rule)})


class Governance:
    def __init__(self, client: PlatformClient, *, refresh_s: float = 300.0, pool: Any = None) -> None:
        self._client = client
        self._refresh_s = refresh_s
        self._pool = pool  # asyncpg.Pool: where the platform's verdicts are recorded for reconcile
        self._verdicts: dict[int, tuple[str | None, float]] = {}

    async def check(self, audience: ImportAudience) -> str | None:
        """Why ``audience`` may not be imported, or None when it may."""
        if PII in audience.export_controls:
            return f"data source {audience.data_source!r} carries the PII export restriction"
        sid = audience.platform_segment_id
        if sid is None:
            return None
        cached = self._verdicts.get(sid)
        if cached is not None and time.monotonic() - cached[1] < self._refresh_s:
            return cached[0]
        verdict = await self._platform_verdict(sid)
        if self._pool is not None:
            await self._pool.execute(
                """INSERT INTO segment_governance (platform_segment_id, refusal) VALUES ($1, $2)
                   ON CONFLICT (platform_segment_id) DO UPDATE SET refusal = EXCLUDED.refusal, checked_at = now()""",
                sid,
                verdict,
            )
        self._verdicts[sid] = (verdict, time.monotonic())
        if verdict is not None:
            log.warning("import_blocked_by_governance", audience_id=audience.audience_id, segment=sid, reason=verdict)
        return verdict

    async def _platform_verdict(self, sid: int) -> str | None:
        try:
            segment = await self._client.get_segment(sid)
        except NotFound:
            return f"segment {sid} is unknown to the platform: its data export controls cannot be verified"
        source_ids = {segment.data_source_id}
        for trait_id in traits_in_rule(segment.segment_rule):
            try:
                trait = await self._client.get_trait(trait_id)
            except NotFound:
                return f"trait {trait_id} of segment {sid} is unknown to the platform"
            source_ids.add(trait.data_source_id)
        for source_id in sorted(source_ids):
            try:
                source = await self._client.get_data_source(source_id)
            except NotFound:
                return f"data source {source_id} of segment {sid} is unknown to the platform"
            if source.forbids_pii:
                return (
                    f"segment {sid} uses data source {source_id} ({source.name!r}) whose export controls "
                    "forbid tying it to personally identifiable information"
                )
        return None
