"""What an operator reads before releasing a held-back import, and the counts a snapshot's end records."""

from __future__ import annotations

import uuid

from services.cli.run_commands import release_plan_lines
from services.reconcile.import_snapshot import MemberChanges, SnapshotEnd
from services.reconcile.release import ReleasePlan

RUN = uuid.UUID("00000000-0000-0000-0000-00000000002a")
HELD = "no ID of this snapshot matched a recipient: held back (release it with `audience-bridge release`)"


def _plan(**changes: int) -> ReleasePlan:
    return ReleasePlan(
        run_id=RUN,
        audience_id="emails-5002",
        list_name="Engaged readers",
        held_because=HELD,
        matched=0,
        unmatched=7124,
        size_before=2270,
        changes=MemberChanges(**changes),
    )


def test_the_plan_says_what_the_list_becomes() -> None:
    # The case: a snapshot that matched nobody would empty a correct list; the plan says so first.
    assert release_plan_lines(_plan(removed=2270)) == [
        f"import run {RUN}: audience emails-5002, list 'Engaged readers'",
        f"held back: {HELD}",
        "matched again now: 0 of 7124 IDs match a recipient",
        "releasing it adds 0 and removes 2270 members: the list goes from 2270 to 0 members",
    ]


def test_the_size_after_counts_adds_and_removals() -> None:
    assert _plan(added=30, removed=5, kept_by_other_ids=2).size_after == 2295


def test_a_held_snapshot_records_its_matching_only() -> None:
    assert SnapshotEnd(3, 4, held="why").counts() == {"matched": 3, "unmatched": 4}
    applied = SnapshotEnd(3, 4, changes=MemberChanges(added=2, removed=1, kept_by_other_ids=1))
    assert applied.counts() == {"matched": 3, "unmatched": 4, "added": 2, "removed": 1, "kept_by_other_ids": 1}
