"""Who is in each platform segment, as ecsim delivers it to destinations.

Membership is kept per segment and per ID type (``ecid`` or ``declared``): a delivery to a destination
lists the members of the destination's ID type. It is set by the test or the operator, never derived
from trait rules (ecsim does not evaluate segment rules):

* ``POST /sim/population`` fills segments from a synthetic :class:`~shared.population.Population` (each
  member profile gives its ECIDs and its declared ID);
* ``POST /sim/segments/{sid}/members`` adds, removes or replaces IDs directly.

IDs are kept as compact keys (:func:`~services.ecsim.profiles.encode_id`): about 75-100 bytes a member.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from services.ecsim.profiles import Key, decode_id, encode_id
from services.ecsim.store import InvalidInput
from shared.ids import ID_TYPES, IdType
from shared.population import Population

MAX_ID_LENGTH: Final = 1024


def check_member_id(user_id: object) -> str:
    """An ID a delivery file can carry (one space-free field); malformed ECIDs are allowed on purpose."""
    if (
        not isinstance(user_id, str)
        or not user_id
        or len(user_id) > MAX_ID_LENGTH
        or any(ch.isspace() for ch in user_id)
        or not user_id.isprintable()
    ):
        raise InvalidInput(
            "member ids must be non-empty strings without whitespace",
            details=[{"field": "ids", "message": f"bad id: {str(user_id)[:60]!r}"}],
        )
    return user_id


def check_id_type(value: object) -> IdType:
    if value == "ecid":
        return "ecid"
    if value == "declared":
        return "declared"
    raise InvalidInput(f"idType must be one of {list(ID_TYPES)}", details=[{"field": "idType", "message": "bad"}])


class SegmentMembers:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._members: dict[tuple[int, IdType], set[Key]] = {}

    def live(self, sid: int, id_type: IdType) -> set[Key]:
        """The members themselves (not a copy): copy before handing them to another thread."""
        return self._members.setdefault((sid, id_type), set())

    def count(self, sid: int, id_type: IdType) -> int:
        return len(self._members.get((sid, id_type), ()))

    def ids(self, sid: int, id_type: IdType) -> list[str]:
        return sorted(decode_id(k) for k in self._members.get((sid, id_type), ()))

    def change(
        self,
        sid: int,
        id_type: IdType,
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        replace: bool = False,
    ) -> tuple[int, int]:
        """Apply removals then additions (``replace``: the additions become the whole membership).

        Returns (added, removed): how many IDs actually joined and left.
        """
        new_keys = {encode_id(check_member_id(i)) for i in add}
        gone = {encode_id(check_member_id(i)) for i in remove}
        members = self.live(sid, id_type)
        if replace:
            left = len(members - new_keys)
            joined = len(new_keys - members)
            members.clear()
            members.update(new_keys)
            return joined, left
        present = gone & members
        members.difference_update(present)
        joined = len(new_keys - members)
        members.update(new_keys)
        return joined, len(present)

    def load(self, sid: int, ecids: set[Key], declared: set[Key]) -> None:
        """Replace the segment's membership of both ID types."""
        self._members[(sid, "ecid")] = ecids
        self._members[(sid, "declared")] = declared

    def stats(self) -> dict[str, int]:
        return {
            "segments": len({sid for sid, _ in self._members}),
            "members": sum(len(m) for m in self._members.values()),
        }


def population_members(population: Population, name: str) -> tuple[set[Key], set[Key]]:
    """(ECIDs, declared IDs) of a population segment's profiles, as keys. CPU-bound: run it in a thread."""
    ecids: set[Key] = set()
    declared: set[Key] = set()
    for profile in population.segment_members(name):
        for ecid in profile.ecids:
            ecids.add(encode_id(ecid))
        if profile.declared_id is not None:
            declared.add(encode_id(profile.declared_id))
    return ecids, declared
