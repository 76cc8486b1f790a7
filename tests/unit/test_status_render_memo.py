"""RenderMemo: one rendering per snapshot, however many viewers; a new snapshot is rendered again."""

from __future__ import annotations

from datetime import UTC, datetime

from services.reconcile.status_page import render_page
from services.reconcile.status_queries import StatusSnapshot
from services.reconcile.status_reads import RenderMemo


def test_the_same_snapshot_is_rendered_once_and_a_new_one_again() -> None:
    memo = RenderMemo()
    first = StatusSnapshot(generated_at=datetime(2026, 1, 1, tzinfo=UTC))
    pages = [memo.get((first, None), lambda: render_page(first).encode()) for _ in range(50)]
    assert memo.renders == 1
    assert all(p is pages[0] for p in pages)
    assert b"<html" in pages[0].lower()
    # An equal but distinct snapshot is a new read: rendered again (identity, not equality, is what counts).
    second = StatusSnapshot(generated_at=datetime(2026, 1, 1, tzinfo=UTC))
    memo.get((second, None), lambda: render_page(second).encode())
    memo.get((second, "dead letters changed"), lambda: b"other")
    assert memo.renders == 3
