"""A membership run's batches as messages on ``audience-membership``: what files and events both emit."""

from __future__ import annotations

import uuid

from services.ingest.audiences import ImportAudience
from shared.id_batches import BuildMessage, Cut
from shared.kafka import OutgoingMessage
from shared.messages import AudienceMembership, MembershipMode


def membership_batches(topic: str, audience: ImportAudience, run_id: uuid.UUID, mode: MembershipMode) -> BuildMessage:
    """How a cut of the run's IDs becomes its message."""

    def build(cut: Cut) -> OutgoingMessage:
        message = AudienceMembership(
            run_id=run_id,
            seq=cut.seq,
            last=cut.last,
            audience_id=audience.audience_id,
            data_source=audience.data_source,
            id_type=audience.id_type,
            mode=mode,
            adds=cut.adds,
            removes=cut.removes,
            totals=cut.totals,
        )
        return OutgoingMessage.of(topic, message)

    return build
