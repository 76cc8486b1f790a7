"""Where ingest's run ids come from: derived from what was delivered, never random.

A restarted ingest reads the same files (or the same offsets) again and must name the same runs, so that
reconcile's ledger recognises their batches and nothing applies twice.
"""

from __future__ import annotations

import uuid
from typing import Final

_FILES: Final = uuid.UUID("0b6f3f2e-52a8-4f0e-8d0c-6a1f4b2d9e71")
_EVENTS: Final = uuid.UUID("6f1c8a64-3d3b-4b7e-9a55-0d2f0c6b7a10")


def file_run_id(batch_root: str, audience_id: str) -> uuid.UUID:
    """The run a delivered batch of outbound files makes for one import audience."""
    return uuid.uuid5(_FILES, f"{batch_root}\n{audience_id}")


def batch_run_id(batch_root: str) -> uuid.UUID:
    """The run that reports what became of a delivered batch as a whole when it fed no audience: rejected
    (it lies, is damaged, its name breaks the grammar), or filed unread because no import audience takes its
    data source. Such a report is a status event only, ``failed`` with the reason and no audience: it is no
    run of any audience, and nothing is written to the ``run`` table."""
    return uuid.uuid5(_FILES, batch_root)


rejected_batch_run_id = batch_run_id  # its earlier name


def event_run_id(topic: str, partition: int, offset: int, audience_id: str) -> uuid.UUID:
    """The run a poll of segment events makes for one audience, named by where its first event sits."""
    return uuid.uuid5(_EVENTS, f"{topic}:{partition}:{offset}:{audience_id}")
