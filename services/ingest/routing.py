"""Which runs a delivered batch's lines feed: its origin and segments to import audiences, governance, runs.

A file's name says where it comes from (:class:`Origin`): the platform destination that delivered it and
its *master DPID*, the data source whose IDs its lines hold. A file feeds only the import audiences of that
data source (and, for an audience that names a platform destination, only files of that destination):
:func:`feeds`. One segment commonly feeds one list per data source (an ECID list and a hashed e-mail list),
and the platform delivers each data source's IDs in files of its own: fed to every audience of the segment,
an ECID file would be a full snapshot of nobody for the e-mail list. A batch no audience takes is not
imported at all, and :func:`unrouted` says why.

Within the audiences a file may feed, a line names the segments its user is in (and, in ``iter`` files,
those they left). Each segment feeds the import audiences configured for it; each audience gets one run per
delivered batch, opened (and announced ``started``) the first time a line reaches it. An audience that
governance refuses gets no run: it is remembered as blocked and reported so at the end. Lines mostly repeat
a few segment lists, so the runs a (segments, removed) pair reaches are planned once and remembered.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal

from services.ingest.audiences import AudienceDirectory, ImportAudience
from services.ingest.governance import GovernanceCheck
from shared.formats.outbound import OutboundFileName
from shared.id_batches import RunBatches
from shared.messages import MembershipMode
from shared.runs.outcome import RunOutcome
from shared.runs.reporter import RunReporter

PLAN_CACHE_SIZE: Final = 4096  # distinct (segments, removed) of a batch's lines remembered

SegmentKey = tuple[tuple[int, ...], tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a delivered file comes from, as its name says (None: the destination's name template leaves
    the field out)."""

    master_dpid: int | None
    destination_id: int | None


def origin_of(name: OutboundFileName) -> Origin:
    """The origin a part's (or a batch's) parsed name carries."""
    return Origin(master_dpid=name.master_dpid, destination_id=name.destination_id)


def feeds(audience: ImportAudience, origin: Origin) -> bool:
    """Whether a file of this origin may feed this import audience."""
    named = audience.platform_destination_id
    if origin.master_dpid is None:
        # Nothing says whose IDs the file holds: only an audience that names the destination can tell.
        return named is not None and named == origin.destination_id
    if audience.dpid != origin.master_dpid:
        return False
    return named is None or named == origin.destination_id


UnroutedOutcome = Literal["unknown_data_source", "unrouted"]


@dataclass(frozen=True, slots=True)
class Unrouted:
    """Why a delivered batch feeds no import audience; ``outcome`` labels its files on the drop-zone metric."""

    outcome: UnroutedOutcome
    reason: str


def unrouted(audiences: Iterable[ImportAudience], origin: Origin) -> Unrouted | None:
    """None when some import audience may take a file of this origin; else why none does."""
    audiences = list(audiences)
    if any(feeds(a, origin) for a in audiences):
        return None
    dpid, destination = origin.master_dpid, origin.destination_id
    if dpid is None:
        return Unrouted(
            "unrouted",
            f"delivered without a master DPID by destination {destination}, which no import audience names",
        )
    if not any(a.dpid == dpid for a in audiences):
        return Unrouted("unknown_data_source", f"delivered for an unknown data source (DPID {dpid})")
    return Unrouted(
        "unrouted",
        f"delivered for data source DPID {dpid} by destination {destination}, "
        "which no import audience of that data source takes",
    )


@dataclass(slots=True)
class AudienceRun:
    audience: ImportAudience
    run_id: uuid.UUID
    batches: RunBatches


# The runs a line's user joins and the runs they leave, in the order of a line-by-line walk (a run appears
# once per segment of the line that maps to it).
Plan = tuple[list[AudienceRun], list[AudienceRun]]


class RunPlanner:
    def __init__(
        self,
        *,
        mode: MembershipMode,
        origin: Origin,
        directory: AudienceDirectory,
        governance: GovernanceCheck,
        reporter: RunReporter,
        run_id: Callable[[str], uuid.UUID],
        batches: Callable[[ImportAudience, uuid.UUID], RunBatches],
    ) -> None:
        self._mode = mode
        self._origin = origin
        self._directory = directory
        self._governance = governance
        self._reporter = reporter
        self._run_id = run_id
        self._new_batches = batches
        self.runs: dict[str, AudienceRun] = {}
        self.blocked: dict[str, str] = {}  # audience id -> why governance refused it
        self.unmapped_segments: set[int] = set()
        self._segment_audiences: dict[int, list[ImportAudience]] = {}
        self._plans: dict[SegmentKey, Plan] = {}

    def run_id_of(self, audience_id: str) -> uuid.UUID:
        return self._run_id(audience_id)

    async def plan(self, key: SegmentKey) -> Plan:
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        segments, removed = key
        joins: list[AudienceRun] = []
        leaves: list[AudienceRun] = []
        for ids, into, is_add in ((segments, joins, True), (removed, leaves, False)):
            for segment in ids:
                audiences = await self._audiences_for(segment)
                if not audiences:
                    self.unmapped_segments.add(segment)
                    continue
                if self._mode == "full" and not is_add:
                    continue  # in a full snapshot, absence is what removes
                for audience in audiences:
                    if audience.audience_id not in self.blocked:
                        into.append(await self._run_of(audience))
        if len(self._plans) >= PLAN_CACHE_SIZE:
            self._plans.clear()
        self._plans[key] = (joins, leaves)
        return joins, leaves

    async def _audiences_for(self, segment: int) -> list[ImportAudience]:
        audiences = self._segment_audiences.get(segment)
        if audiences is None:
            audiences = [a for a in await self._directory.lookup(str(segment)) if feeds(a, self._origin)]
            for audience in audiences:
                if audience.audience_id not in self.blocked:
                    reason = await self._governance(audience)
                    if reason is not None:
                        self.blocked[audience.audience_id] = reason
                        self._plans.clear()  # plans made before may send users to its run: no more
            self._segment_audiences[segment] = audiences
        return audiences

    async def _run_of(self, audience: ImportAudience) -> AudienceRun:
        run = self.runs.get(audience.audience_id)
        if run is None:
            run_id = self._run_id(audience.audience_id)
            run = AudienceRun(audience, run_id, self._new_batches(audience, run_id))
            self.runs[audience.audience_id] = run
            await self._reporter.report(RunOutcome(run_id, "import", "started", audience.audience_id))
        return run
