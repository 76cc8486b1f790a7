"""The shared audience on the platform: an onboarded trait and a one-trait segment, made once, reused after.

Both carry the audience's stable id as integration code, so they are found again by it: a publisher that
crashed after creating them, a second replica, or an audience re-created in a fresh database all reuse
the same objects (``ensure_trait``/``ensure_segment`` turn a 409 into "fetch the existing one").
"""

from __future__ import annotations

from dataclasses import replace

import asyncpg

from services.publish.export_run import ExportRun
from shared.logging import get_logger
from shared.platform import ON_BOARDED_TRAIT, PlatformClient, SegmentSpec, TraitSpec, one_trait_rule

log = get_logger(__name__)


def trait_spec(run: ExportRun) -> TraitSpec:
    return TraitSpec(
        name=run.audience_name,
        trait_type=ON_BOARDED_TRAIT,
        data_source_id=run.dpid,
        folder_id=0,
        integration_code=run.audience_id,
        description="Shared audience exported by Audience Bridge.",
    )


def segment_spec(run: ExportRun, trait_sid: int) -> SegmentSpec:
    return SegmentSpec(
        name=run.audience_name,
        segment_rule=one_trait_rule(trait_sid),
        data_source_id=run.dpid,
        folder_id=0,
        integration_code=run.audience_id,
        description="Shared audience exported by Audience Bridge.",
    )


async def ensure_audience(pool: asyncpg.Pool, platform: PlatformClient, run: ExportRun) -> ExportRun:
    """Make sure the run's audience exists on the platform and its ids are in ``shared_audience``.

    Raises the platform client's errors (:class:`~shared.platform.PlatformUnavailable` once its retries
    are spent, :class:`~shared.platform.PlatformRejected` for a 4xx such as an integration code taken in
    another data source).
    """
    if run.trait_id is not None and run.segment_id is not None:
        return run
    trait, trait_created = await platform.ensure_trait(trait_spec(run))
    segment, segment_created = await platform.ensure_segment(segment_spec(run, trait.sid))
    if segment.segment_rule.replace(" ", "") != one_trait_rule(trait.sid):
        # Someone edited the segment on the platform: keep theirs, but say so (it no longer mirrors the list).
        log.warning(
            "shared_audience_segment_rule_differs",
            audience_id=run.audience_id,
            segment_id=segment.sid,
            rule=segment.segment_rule,
        )
    await pool.execute(
        """UPDATE shared_audience
              SET platform_trait_id = $2, platform_segment_id = $3, integration_code = $1, updated_at = now()
            WHERE audience_id = $1""",
        run.audience_id,
        trait.sid,
        segment.sid,
    )
    log.info(
        "shared_audience_ensured",
        audience_id=run.audience_id,
        trait_id=trait.sid,
        segment_id=segment.sid,
        trait_created=trait_created,
        segment_created=segment_created,
    )
    return replace(run, trait_id=trait.sid, segment_id=segment.sid)
