"""How to write a large snapshot's membership, measured apart from the bridge (README, Performance: growth with
size). Two first snapshots (an ECID list recording each member's ID, a declared list) written side by side, in
a throw-away database ``ab_membership_layouts`` of the cluster at DSN, from matches already made (not timed):

* ``live``: ordered INSERT into a ``list_member`` like the bridge's (primary key, recipient index, per-statement
  reference check);
* ``trunc``: the list's own partition of a partitioned ``list_member`` truncated and refilled (indexes kept);
* ``swap``: a fresh table per list created in the transaction, loaded, indexed afterwards, reference-checked and
  attached as the list's partition (the old one detached and dropped, under the parent's ACCESS EXCLUSIVE lock:
  two swaps side by side otherwise deadlock).

``python -m tests.bench.membership_layouts DSN N live,trunc,swap`` (under ``flock /tmp/ab-bench.lock``); a
variant per process keeps each on a fresh database.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

import asyncpg

SCHEMA = """
CREATE TABLE recipient (recipient_id bigint PRIMARY KEY);
CREATE TABLE list (list_id bigint PRIMARY KEY);
CREATE TABLE list_member (list_id bigint NOT NULL, recipient_id bigint NOT NULL,
  added_at timestamptz NOT NULL DEFAULT now(), platform_ids text[], PRIMARY KEY (list_id, recipient_id));
CREATE INDEX list_member_recipient_idx ON list_member (recipient_id);
CREATE TABLE list_member_p (list_id bigint NOT NULL, recipient_id bigint NOT NULL,
  added_at timestamptz NOT NULL DEFAULT now(), platform_ids text[], PRIMARY KEY (list_id, recipient_id))
  PARTITION BY LIST (list_id);
CREATE INDEX list_member_p_recipient_idx ON list_member_p (recipient_id);
CREATE FUNCTION check_refs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE missing bigint;
BEGIN
  SELECT n.recipient_id INTO missing FROM new_rows n
   WHERE NOT EXISTS (SELECT 1 FROM recipient r WHERE r.recipient_id = n.recipient_id) LIMIT 1;
  IF FOUND THEN RAISE foreign_key_violation; END IF;
  SELECT n.list_id INTO missing FROM new_rows n
   WHERE NOT EXISTS (SELECT 1 FROM list l WHERE l.list_id = n.list_id) LIMIT 1;
  IF FOUND THEN RAISE foreign_key_violation; END IF;
  RETURN NULL;
END $$;
ALTER FUNCTION check_refs() SET enable_hashjoin = off;
CREATE TRIGGER t AFTER INSERT ON list_member REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION check_refs();
INSERT INTO list VALUES (1), (2);
"""


async def setup(dsn: str, n: int) -> None:
    c = await asyncpg.connect(dsn)
    await c.execute(SCHEMA)
    await c.execute(f"INSERT INTO recipient SELECT g FROM generate_series(1, {n}) g")
    # The matches (not timed): per list, 0.45 N members; the ECID list's IDs are 38 digits.
    await c.execute(
        f"CREATE TABLE match1 AS SELECT lpad(g::text, 38, '0') AS id, g::bigint AS recipient_id "
        f"FROM generate_series(1, {n * 45 // 100}) g"
    )
    await c.execute(
        f"CREATE TABLE match2 AS SELECT md5(g::text) AS id, g::bigint AS recipient_id "
        f"FROM generate_series({n // 2 + 1}, {n // 2 + n * 45 // 100}) g"
    )
    await c.execute("VACUUM ANALYZE")
    await c.close()


def _missing_refs(table: str) -> str:
    """The reference check a table loaded apart needs (the statement trigger does not see its rows)."""
    return (
        f"SELECT count(*) FROM {table} n "
        "WHERE NOT EXISTS (SELECT 1 FROM recipient r WHERE r.recipient_id = n.recipient_id)"
    )


ADD = {
    1: "SELECT 1::bigint, recipient_id, now(), array_agg(id) FROM match1 GROUP BY recipient_id ORDER BY recipient_id",
    2: "SELECT DISTINCT 2::bigint, recipient_id, now(), NULL::text[] FROM match2 ORDER BY 2",
}


async def _partition(c: asyncpg.Connection, list_id: int) -> str | None:
    """The list's partition of list_member_p (a swap replaces it by another table)."""
    name: str | None = await c.fetchval(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'list_member_p'::regclass AND pg_get_expr(c.relpartbound, c.oid) = $1",
        f"FOR VALUES IN ('{list_id}')",
    )
    return name


async def live(dsn: str, list_id: int) -> float:
    """The bridge's way: into the live, indexed table."""
    c = await asyncpg.connect(dsn)
    t = time.perf_counter()
    async with c.transaction():
        await c.execute("SET LOCAL work_mem = '256MB'; SET LOCAL enable_hashagg = off")
        await c.execute(f"DELETE FROM list_member WHERE list_id = {list_id}")
        await c.execute(f"INSERT INTO list_member {ADD[list_id]}")
    el = time.perf_counter() - t
    await c.close()
    return el


async def swap(dsn: str, list_id: int) -> float:
    """Loaded apart, indexed after, swapped in."""
    c = await asyncpg.connect(dsn)
    t = time.perf_counter()
    new = f"lm_{list_id}_{int(time.time() * 1000)}"
    async with c.transaction():
        await c.execute(
            "SET LOCAL work_mem = '256MB'; SET LOCAL enable_hashagg = off;SET LOCAL maintenance_work_mem = '256MB'"
        )
        await c.execute(
            f"CREATE TABLE {new} (list_id bigint NOT NULL, recipient_id bigint NOT NULL, "
            "added_at timestamptz NOT NULL DEFAULT now(), platform_ids text[])"
        )
        await c.execute(f"INSERT INTO {new} {ADD[list_id]}")
        await c.execute(f"ALTER TABLE {new} ADD PRIMARY KEY (list_id, recipient_id)")
        await c.execute(f"CREATE INDEX ON {new} (recipient_id)")
        await c.execute(f"ALTER TABLE {new} ADD CONSTRAINT {new}_list CHECK (list_id = {list_id})")
        missing = await c.fetchval(_missing_refs(new))
        assert missing == 0
        # DETACH takes the parent's ACCESS EXCLUSIVE lock: take it first (two swaps side by side deadlock).
        await c.execute("LOCK TABLE list_member_p IN ACCESS EXCLUSIVE MODE")
        old = await _partition(c, list_id)
        if old:
            await c.execute(f"ALTER TABLE list_member_p DETACH PARTITION {old}")
            await c.execute(f"DROP TABLE {old}")
        await c.execute(f"ALTER TABLE list_member_p ATTACH PARTITION {new} FOR VALUES IN ({list_id})")
    el = time.perf_counter() - t
    await c.close()
    return el


async def trunc(dsn: str, list_id: int) -> float:
    """The list's own partition (attached once, before) truncated and refilled: no lock on the parent beyond the
    insert's, its indexes maintained during the load (empty, so appended in key order)."""
    c = await asyncpg.connect(dsn)
    t = time.perf_counter()
    async with c.transaction():
        await c.execute("SET LOCAL work_mem = '256MB'; SET LOCAL enable_hashagg = off")
        part = await _partition(c, list_id)
        if part is None:
            raise RuntimeError(f"list {list_id} has no partition of list_member_p")
        await c.execute(f"TRUNCATE {part}")
        await c.execute(f"INSERT INTO {part} {ADD[list_id]}")
        missing = await c.fetchval(_missing_refs(part))
        assert missing == 0
    el = time.perf_counter() - t
    await c.close()
    return el


VARIANTS: dict[str, Callable[[str, int], Awaitable[float]]] = {"live": live, "trunc": trunc, "swap": swap}


async def _members(db: str, variant: str) -> list[int]:
    """Each list's members after a variant: the variant's work checked, not only timed."""
    table = "list_member" if variant == "live" else "list_member_p"
    c = await asyncpg.connect(db)
    try:
        return [await c.fetchval(f"SELECT count(*) FROM {table} WHERE list_id = $1", k) for k in (1, 2)]
    finally:
        await c.close()


async def measure(dsn: str, n: int, variants: list[str], database: str = "ab_membership_layouts") -> dict[str, float]:
    """Seconds of each variant (both lists side by side) for N IDs, in a throw-away database of DSN's cluster;
    a variant whose lists do not hold 0.45 N members each raises."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"DROP DATABASE IF EXISTS {database}")
    await admin.execute(f"CREATE DATABASE {database}")
    await admin.close()
    db = dsn.rsplit("/", 1)[0] + "/" + database
    try:
        await setup(db, n)
        c = await asyncpg.connect(db)
        for list_id in (1, 2):
            await c.execute(f"CREATE TABLE lm_part_{list_id} PARTITION OF list_member_p FOR VALUES IN ({list_id})")
        await c.close()
        seconds: dict[str, float] = {}
        for v in variants:
            t = time.perf_counter()
            per = await asyncio.gather(VARIANTS[v](db, 1), VARIANTS[v](db, 2))
            seconds[v] = time.perf_counter() - t
            members = await _members(db, v)
            if members != [n * 45 // 100] * 2:
                raise RuntimeError(f"{v}: lists hold {members} members, expected {n * 45 // 100} each")
            print(f"N={n:>9,} {v:5s} both lists {seconds[v]:6.2f}s (per list {per[0]:.2f}/{per[1]:.2f})", flush=True)
        return seconds
    finally:
        admin = await asyncpg.connect(dsn)
        await admin.execute(f"DROP DATABASE IF EXISTS {database}")
        await admin.close()


if __name__ == "__main__":
    asyncio.run(measure(sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",") if len(sys.argv) > 3 else list(VARIANTS)))
