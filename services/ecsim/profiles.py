"""ecsim's profile store: which onboarded traits each user holds, per data source, compactly.

Shape: ``namespace (the DPID whose IDs the user ids are) -> user key -> trait ids``. Built to hold a few
million users cheaply:

* user ids are stored as compact keys (:func:`encode_id`): a 38-digit ECID as an ``int`` (44 bytes
  instead of an 87-byte ``str``), a 64-hex declared ID as 32 raw ``bytes``; anything else stays ``str``.
  The encoding is a bijection, so :func:`decode_id` gives back exactly the id that was sent;
* trait sets are interned ``frozenset`` objects shared by every user holding the same combination (a
  handful of combinations cover millions of users), so a user costs one dict slot and one key.

Measured with ``python -m services.ecsim.profiles`` (CPython 3.11): 2,000,000 ECID users, each with one of
7 trait combinations, grow the process by about 185 MB: ~93 bytes per user (a dict slot plus the key).

Changes go through a :class:`Transaction`, which remembers each touched user's previous traits so a
file that fails half-way (corrupt gzip, drop zone gone) can be rolled back and processed again from the
start: a file is applied completely or not at all.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Final, TypeAlias

from shared.ids import ECID_LENGTH

Key: TypeAlias = int | bytes | str
TraitSet: TypeAlias = frozenset[int]

_EMPTY: Final[TraitSet] = frozenset()
_HEX: Final = frozenset("0123456789abcdef")


def encode_id(user_id: str) -> Key:
    """The compact, hashable form of a user id (see the module docstring)."""
    n = len(user_id)
    if n == ECID_LENGTH and user_id.isascii() and user_id.isdigit():
        return int(user_id)
    if n == 64 and _HEX.issuperset(user_id):
        return bytes.fromhex(user_id)
    return user_id


def decode_id(key: Key) -> str:
    if isinstance(key, int):
        return f"{key:0{ECID_LENGTH}d}"
    if isinstance(key, bytes):
        return key.hex()
    return key


class ProfileStore:
    """Users' onboarded traits per namespace (the DPID of their ids), with per-trait member counts."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._users: dict[int, dict[Key, TraitSet]] = {}
        self._interned: dict[TraitSet, TraitSet] = {}
        self._counts: dict[int, int] = {}

    # --- reading -------------------------------------------------------------------------------------

    def traits(self, namespace: int, user_id: str) -> TraitSet:
        return self._users.get(namespace, {}).get(encode_id(user_id), _EMPTY)

    def profile(self, user_id: str) -> dict[int, list[int]]:
        """``{namespace: sorted trait ids}`` for every namespace that knows ``user_id``."""
        key = encode_id(user_id)
        return {ns: sorted(users[key]) for ns, users in sorted(self._users.items()) if key in users}

    def member_count(self, sid: int) -> int:
        return self._counts.get(sid, 0)

    def members(self, sid: int) -> Iterator[str]:
        """Users holding trait ``sid`` (unordered). Scans every user: an admin and test tool."""
        for users in self._users.values():
            for key, traits in users.items():
                if sid in traits:
                    yield decode_id(key)

    def user_count(self, namespace: int | None = None) -> int:
        if namespace is not None:
            return len(self._users.get(namespace, ()))
        return sum(len(u) for u in self._users.values())

    def stats(self) -> dict[str, int]:
        return {"users": self.user_count(), "namespaces": len(self._users), "trait_sets": len(self._interned)}

    # --- writing -------------------------------------------------------------------------------------

    def transaction(self) -> Transaction:
        return Transaction(self)

    def _set(self, namespace: int, key: Key, new: TraitSet) -> None:
        users = self._users.setdefault(namespace, {})
        old = users.get(key, _EMPTY)
        if old == new:
            return
        counts = self._counts
        for sid in old - new:
            left = counts[sid] - 1
            if left:
                counts[sid] = left
            else:
                del counts[sid]
        for sid in new - old:
            counts[sid] = counts.get(sid, 0) + 1
        if new:
            users[key] = self._interned.setdefault(new, new)
        else:
            users.pop(key, None)


class Transaction:
    """Changes to a :class:`ProfileStore` that can be undone until committed.

    Memory: one entry per distinct user changed (its traits before the first change).
    """

    def __init__(self, store: ProfileStore) -> None:
        self._store = store
        self._before: dict[tuple[int, Key], TraitSet] = {}
        self.added = 0  # trait memberships gained
        self.removed = 0  # trait memberships lost ("Total removed traits")

    def apply(
        self,
        namespace: int,
        user_id: str,
        adds: Collection[int],
        removes: Collection[int] = (),
        *,
        replace: Collection[int] | None = None,
    ) -> None:
        """Add ``adds`` and remove ``removes`` (removals win over adds of the same trait).

        ``replace`` (for ``.overwrite`` files) names the traits the line replaces, i.e. every trait of the
        file's data source: those not in ``adds`` are dropped, traits of other data sources are kept.
        """
        store = self._store
        key = encode_id(user_id)
        old = store._users.get(namespace, {}).get(key, _EMPTY)
        kept = old if replace is None else frozenset(t for t in old if t not in replace)
        new = kept.union(adds)
        if removes:
            new = new.difference(removes)
        if new == old:
            return
        self._before.setdefault((namespace, key), old)
        self.added += len(new - old)
        self.removed += len(old - new)
        store._set(namespace, key, new)

    @property
    def users_changed(self) -> int:
        return len(self._before)

    def commit(self) -> None:
        self._before.clear()

    def rollback(self) -> None:
        for (namespace, key), old in self._before.items():
            self._store._set(namespace, key, old)
        self._before.clear()
        self.added = self.removed = 0


def _measure(users: int = 2_000_000) -> None:  # pragma: no cover - a manual measurement
    import gc
    import random
    import resource

    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    store = ProfileStore()
    tx = store.transaction()
    rng = random.Random(1)
    combos = [(), (1,), (2,), (1, 2), (3,), (1, 3), (2, 3), (1, 2, 3)]
    for i in range(users):
        tx.apply(100, f"{rng.randrange(10**37, 10**38):038d}", combos[i % 7 + 1])
        if i % 10_000 == 0:
            tx.commit()  # as the processor does per file: the undo log must not count here
    tx.commit()
    gc.collect()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{users:,} users: {(after - before) / 1024:.0f} MB max RSS growth, {store.stats()}")


if __name__ == "__main__":  # pragma: no cover
    _measure()
