"""A synthetic population: campaign recipients and the platform's profiles of (some of) them.

Pure and deterministic: everything follows from a :class:`PopulationSpec` (``seed`` included), so ecsim
(which fills its segments from it) and the bridge's demo loader (which loads the matching recipients
into Postgres) agree on every ID without exchanging any data. Nothing is materialised: any recipient,
profile or segment member is computed on demand in O(1), and the iterators stream.

**Recipients** ``1..recipients``: e-mail ``person<i>@<email_domain>``, CRM id ``CRM<i, 9 digits>``, and
0..``max_ecids`` ECIDs (38 digits); a share ``no_ecid_share`` has none (never tracked).

**Platform profiles**, numbered ``0..profile_count-1``:

* ``known``: a ``known_share`` of the recipients (chosen by a seeded permutation, so the count is exact):
  their ECIDs and their declared ID (SHA-256 of the normalised e-mail, ``shared.ids.declared_key``);
* ``unknown``: ``unknown_profiles`` people the campaign does not know: one ECID each, and every other
  one a declared ID (hash of ``stranger<j>@<email_domain>``);
* ``malformed``: ``malformed_profiles`` profiles whose only ID is a 37- or 39-digit "ECID", for testing
  how the bridge counts invalid IDs.

**Segments** are windows over a seeded permutation of the profiles: segment ``s`` holds the profiles at
positions ``start .. start+size-1``, so sizes are exact and two segments overlap by exactly the
intersection of their windows (:meth:`Population.overlap`; :func:`chained` lays windows out from
wanted overlaps). Sizes count profiles: a profile contributes all its ECIDs to an ECID delivery and its
declared ID (if any) to a declared one.

Example::

    spec = PopulationSpec(seed=7, recipients=1000, segments=[PopulationSegment(name="a", size=100, sid=300001)])
    pop = Population(spec)
    pop.recipient(1).email                          # 'person1@example.com'
    sum(1 for _ in pop.segment_members("a"))        # 100
    pop.segments_of_recipient(42)                   # ['a'] or []
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.ids import ECID_LENGTH, IdType, declared_key

ProfileKind = Literal["known", "unknown", "malformed"]

MAX_RECIPIENTS: Final = 50_000_000
_ECID_SPACE: Final = 10**ECID_LENGTH


class PopulationSegment(BaseModel):
    """A segment of the population: a window of ``size`` profiles starting at ``start``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    size: int = Field(ge=0)
    start: int = Field(0, ge=0, description="Position of the window in the shuffled profile order.")
    sid: int | None = Field(None, ge=0, description="The platform segment this one fills (ecsim).")


class PopulationSpec(BaseModel):
    """Every parameter of a population (the body of ecsim's ``POST /sim/population``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(1, description="Everything random follows from it.")
    recipients: int = Field(1000, ge=0, le=MAX_RECIPIENTS, description="Campaign recipients 1..N.")
    max_ecids: int = Field(3, ge=0, le=20, description="A tracked recipient has 1..max_ecids ECIDs.")
    no_ecid_share: float = Field(0.2, ge=0, le=1, description="Share of recipients without any ECID.")
    known_share: float = Field(0.8, ge=0, le=1, description="Share of recipients the platform has a profile of.")
    unknown_profiles: int = Field(100, ge=0, le=MAX_RECIPIENTS, description="Profiles of people not in the campaign.")
    malformed_profiles: int = Field(5, ge=0, le=1_000_000, description="Profiles with a 37/39-digit ECID.")
    email_domain: str = Field("example.com", min_length=1, pattern=r"^[A-Za-z0-9.-]+$")
    segments: tuple[PopulationSegment, ...] = ()

    @property
    def known_count(self) -> int:
        return round(self.recipients * self.known_share)

    @property
    def profile_count(self) -> int:
        return self.known_count + self.unknown_profiles + self.malformed_profiles

    @model_validator(mode="after")
    def _segments_fit(self) -> PopulationSpec:
        names = [s.name for s in self.segments]
        if len(set(names)) != len(names):
            raise ValueError("segment names must be unique")
        sids = [s.sid for s in self.segments if s.sid is not None]
        if len(set(sids)) != len(sids):
            raise ValueError("segment sids must be unique")
        total = self.profile_count
        for s in self.segments:
            if s.start + s.size > total:
                raise ValueError(f"segment {s.name!r} ends at {s.start + s.size}, beyond the {total} profiles")
        return self


def chained(
    sizes: Sequence[int], overlaps: Sequence[int], *, names: Sequence[str] | None = None
) -> list[PopulationSegment]:
    """Windows laid out one after the other, segment ``k+1`` sharing ``overlaps[k]`` profiles with ``k``.

    ``chained([100, 50], [20])`` gives ``a`` = positions 0..99 and ``b`` = 80..129.
    """
    if len(overlaps) != max(len(sizes) - 1, 0):
        raise ValueError("give one overlap per consecutive pair of segments")
    labels = list(names) if names is not None else [chr(ord("a") + k) for k in range(len(sizes))]
    specs: list[PopulationSegment] = []
    start = 0
    for k, size in enumerate(sizes):
        if k:
            overlap = overlaps[k - 1]
            if not 0 <= overlap <= min(size, sizes[k - 1]):
                raise ValueError("an overlap cannot exceed either segment")
            start = specs[-1].start + specs[-1].size - overlap
        specs.append(PopulationSegment(name=labels[k], size=size, start=start))
    return specs


@dataclass(frozen=True, slots=True)
class Recipient:
    index: int  # 1-based
    email: str
    crm_id: str
    ecids: tuple[str, ...]

    @property
    def declared_id(self) -> str:
        return declared_key(self.email, "sha256")


@dataclass(frozen=True, slots=True)
class Profile:
    index: int  # 0-based
    kind: ProfileKind
    recipient: int | None  # the recipient it belongs to, for known profiles
    ecids: tuple[str, ...]
    declared_id: str | None

    def ids(self, id_type: IdType) -> tuple[str, ...]:
        """The IDs this profile shows in a file of ``id_type``."""
        if id_type == "ecid":
            return self.ecids
        return () if self.declared_id is None else (self.declared_id,)


class _Permutation:
    """A bijection of ``range(n)`` from a seed: ``x -> (a*x + b) mod n``, inverted in O(1).

    Not cryptographic, and not meant to be: it spreads windows over the whole range reproducibly without
    storing anything.
    """

    def __init__(self, n: int, seed: int, label: str) -> None:
        self.n = n
        if n <= 1:
            self.a, self.b, self.a_inv = 1, 0, 1
            return
        h = _hash_int(seed, label, n)
        # A multiplier near n times the golden ratio scatters consecutive positions well.
        a = (int(n * 0.6180339887) + h % max(n // 7, 1)) % n or 1
        while math.gcd(a, n) != 1:
            a = a % (n - 1) + 1
        self.a = a
        self.b = (h >> 64) % n
        self.a_inv = pow(a, -1, n)

    def __call__(self, x: int) -> int:
        return (self.a * x + self.b) % self.n

    def inverse(self, y: int) -> int:
        return (self.a_inv * (y - self.b)) % self.n


def _hash_int(seed: int, *parts: object) -> int:
    text = ":".join([str(seed), *(str(p) for p in parts)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest(), "big")


def _unit(seed: int, *parts: object) -> float:
    """A uniform draw in [0, 1) from the arguments."""
    return (_hash_int(seed, *parts) >> 75) / float(1 << 53)


class Population:
    """Recipients, profiles and segments of one :class:`PopulationSpec`, computed on demand."""

    def __init__(self, spec: PopulationSpec) -> None:
        self.spec = spec
        self.seed = spec.seed
        self.recipient_count = spec.recipients
        self.known_count = spec.known_count
        self.profile_count = spec.profile_count
        self._known = _Permutation(spec.recipients, spec.seed, "known")
        self._order = _Permutation(self.profile_count, spec.seed, "order")
        self._segments = {s.name: s for s in spec.segments}

    # --- recipients ---------------------------------------------------------------------------------

    def recipient(self, index: int) -> Recipient:
        if not 1 <= index <= self.recipient_count:
            raise IndexError(f"recipient {index} is not in 1..{self.recipient_count}")
        spec = self.spec
        count = 0
        if spec.max_ecids and _unit(self.seed, "no-ecid", index) >= spec.no_ecid_share:
            count = 1 + _hash_int(self.seed, "ecid-count", index) % spec.max_ecids
        ecids = tuple(self._ecid("r", index, j) for j in range(count))
        return Recipient(index, f"person{index}@{spec.email_domain}", f"CRM{index:09d}", ecids)

    def recipients(self, start: int = 1, stop: int | None = None) -> Iterator[Recipient]:
        """Recipients ``start..stop-1`` (default: all), streamed."""
        end = self.recipient_count + 1 if stop is None else min(stop, self.recipient_count + 1)
        for i in range(max(start, 1), end):
            yield self.recipient(i)

    def is_known(self, index: int) -> bool:
        """Whether the platform has a profile of recipient ``index``."""
        return self._known.inverse(index - 1) < self.known_count

    def profile_of_recipient(self, index: int) -> Profile | None:
        rank = self._known.inverse(index - 1)
        return self.profile(rank) if rank < self.known_count else None

    # --- profiles ------------------------------------------------------------------------------------

    def profile(self, index: int) -> Profile:
        if not 0 <= index < self.profile_count:
            raise IndexError(f"profile {index} is not in 0..{self.profile_count - 1}")
        if index < self.known_count:
            r = self.recipient(self._known(index) + 1)
            return Profile(index, "known", r.index, r.ecids, r.declared_id)
        j = index - self.known_count
        if j < self.spec.unknown_profiles:
            declared = declared_key(f"stranger{j}@{self.spec.email_domain}", "sha256") if j % 2 == 0 else None
            return Profile(index, "unknown", None, (self._ecid("u", j, 0),), declared)
        j -= self.spec.unknown_profiles
        digits = ECID_LENGTH - 1 if j % 2 == 0 else ECID_LENGTH + 1
        bad = str(_hash_int(self.seed, "m", j) % 10**digits).zfill(digits)
        return Profile(index, "malformed", None, (bad,), None)

    def profiles(self) -> Iterator[Profile]:
        for p in range(self.profile_count):
            yield self.profile(p)

    # --- segments ------------------------------------------------------------------------------------

    @property
    def segment_specs(self) -> tuple[PopulationSegment, ...]:
        return self.spec.segments

    def segment(self, name: str) -> PopulationSegment:
        try:
            return self._segments[name]
        except KeyError:
            raise KeyError(f"no segment {name!r}") from None

    def segment_members(self, name: str) -> Iterator[Profile]:
        """The segment's profiles, streamed (in window order, which is shuffled profile order)."""
        s = self.segment(name)
        for pos in range(s.start, s.start + s.size):
            yield self.profile(self._order(pos))

    def segment_ids(self, name: str, id_type: IdType) -> Iterator[str]:
        """Every ID of ``id_type`` the segment's profiles carry (what a delivery of that type lists)."""
        for profile in self.segment_members(name):
            yield from profile.ids(id_type)

    def in_segment(self, profile_index: int, name: str) -> bool:
        s = self.segment(name)
        return s.start <= self._order.inverse(profile_index) < s.start + s.size

    def segments_of_profile(self, profile_index: int) -> list[str]:
        pos = self._order.inverse(profile_index)
        return [s.name for s in self.spec.segments if s.start <= pos < s.start + s.size]

    def segments_of_recipient(self, index: int) -> list[str]:
        """The segments recipient ``index`` is in (none when the platform does not know them)."""
        rank = self._known.inverse(index - 1)
        return self.segments_of_profile(rank) if rank < self.known_count else []

    def overlap(self, a: str, b: str) -> int:
        """How many profiles segments ``a`` and ``b`` share."""
        sa, sb = self.segment(a), self.segment(b)
        return max(0, min(sa.start + sa.size, sb.start + sb.size) - max(sa.start, sb.start))

    # --- helpers -------------------------------------------------------------------------------------

    def _ecid(self, kind: str, i: int, j: int) -> str:
        return f"{_hash_int(self.seed, 'ecid', kind, i, j) % _ECID_SPACE:0{ECID_LENGTH}d}"


__all__ = [
    "Population",
    "PopulationSegment",
    "PopulationSpec",
    "Profile",
    "ProfileKind",
    "Recipient",
    "chained",
]
