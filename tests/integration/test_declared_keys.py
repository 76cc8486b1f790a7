"""Declared keys in Postgres: stored or computed, they are the keys Python computes (shared/ids.py)."""

from __future__ import annotations

import random

import pytest

from services.reconcile.catalog import ensure_declared_key_index
from services.reconcile.declared_keys import (
    RECONCILIATION_KEYS,
    STORED_KEYS,
    declared_key_sql,
    exportable_key_sql,
    unexportable_key_sql,
)
from shared.ids import KEY_TRANSFORMS, InvalidId, declared_key
from tests.fixtures.bridge_db import Campaign

VALUES = [
    "Person.1@Example.com",
    "  padded@example.com\t",
    "UPPER@EXAMPLE.COM",
    "\r\nbreaks@example.com\n",
    "",
    "   ",
    "CRM000001",
    "with space@example.com",
    "comma,inside",
    "x" * 300,
]


@pytest.mark.parametrize(("key", "transform"), [(k, t) for k in ("email", "crm_id") for t in KEY_TRANSFORMS])
async def test_sql_keys_are_pythons_keys(campaign: Campaign, key: str, transform: str) -> None:
    async with campaign.pool.acquire() as conn:
        await conn.execute("DELETE FROM visitor_link; DELETE FROM recipient")
        await conn.copy_records_to_table(
            "recipient",
            records=[(i, v, v) for i, v in enumerate(VALUES, 1)] + [(len(VALUES) + 1, None, None)],
            columns=("recipient_id", "email", "crm_id"),
        )
        rows = await conn.fetch(
            f"SELECT r.recipient_id, r.{key} AS value, {declared_key_sql(key, transform)} AS k, "
            f"ab_declared_key(r.{key}, '{transform}') AS computed, {exportable_key_sql(key, transform)} AS ok, "
            f"{unexportable_key_sql(key, transform)} AS not_ok FROM recipient r ORDER BY 1"
        )
    assert len(rows) == len(VALUES) + 1
    for row in rows:
        assert row["k"] == row["computed"], row["value"]  # a stored key is the expression's value
        assert row["not_ok"] in (True, False), row["value"]
        assert bool(row["ok"]) is not row["not_ok"], row["value"]  # every recipient is one or the other
        if row["value"] is None or not row["value"].strip():
            assert row["k"] is None
            assert row["not_ok"]
            continue
        if transform == "sha256":
            assert row["k"] == declared_key(row["value"], "sha256")
            assert row["ok"]
        else:
            assert row["k"] == row["value"].strip()
            try:
                declared_key(row["value"], "none")
            except InvalidId:
                assert not row["ok"], row["value"]  # what Python refuses is never exported


async def test_usual_keys_are_stored_and_indexed(campaign: Campaign) -> None:
    assert set(STORED_KEYS) <= {(k, t) for k in RECONCILIATION_KEYS for t in KEY_TRANSFORMS}
    async with campaign.pool.acquire() as conn:
        for (key, transform), column in STORED_KEYS.items():
            assert declared_key_sql(key, transform) == f"r.{column}"
            await ensure_declared_key_index(conn, key, transform)  # already there: a no-op
            indexes = await conn.fetchval(
                "SELECT count(*) FROM pg_indexes WHERE tablename = 'recipient' AND indexdef LIKE $1",
                f"%({column})%",
            )
            assert indexes == 1
            await conn.execute("SET enable_seqscan = off")
            plan = await conn.fetch(
                f"EXPLAIN SELECT recipient_id FROM recipient r WHERE {declared_key_sql(key, transform)} = 'x'"
            )
            await conn.execute("RESET enable_seqscan")
            assert f"recipient_key_{key}_{transform}" in "\n".join(r[0] for r in plan)


# ab_declared_key as schemas/sql/002 wrote it (convert_to: STABLE, so the body was never inlined); 023 replaced it.
_CONVERT_TO_BODY = """CASE
    WHEN nullif(btrim(v, E' \\t\\n\\r\\f\\v'), '') IS NULL THEN NULL
    WHEN t = 'none' THEN btrim(v, E' \\t\\n\\r\\f\\v')
    WHEN t = 'sha256' THEN encode(sha256(convert_to(lower(btrim(v, E' \\t\\n\\r\\f\\v')), 'UTF8')), 'hex')
END"""
# What the escape decoding reads specially (backslashes, octal-looking digits), whitespace, non-ASCII.
_ALPHABET = "\\\\\\0178xabcABC@._-+ \t\r\n\f\vÉéüßçЖ中😀\u00a0"


def _texts() -> list[str]:
    rng = random.Random(18)
    drawn = ["".join(rng.choices(_ALPHABET, k=rng.randint(0, 24))) for _ in range(3000)]
    return [*VALUES, "\\", "\\\\", "\\101", "a\\x41b", "\\\\000", "Ä\\Ö", *drawn]


async def test_inlined_key_function_is_the_convert_to_one(campaign: Campaign) -> None:
    texts = _texts()
    rows = await campaign.pool.fetch(
        f"SELECT v, t, ab_declared_key(v, t) AS now, {_CONVERT_TO_BODY} AS before "
        "FROM unnest($1::text[]) v, unnest(ARRAY['none', 'sha256']) t",
        texts,
    )
    assert len(rows) == 2 * len(texts)
    assert [tuple(r) for r in rows if r["now"] != r["before"]] == []
    # Inlined (every part IMMUTABLE): a generated column or a join evaluates the expression, not a SQL-function
    # call per row (~5 µs each, most of a recipient upsert's cost).
    plan = "\n".join(
        r[0]
        for r in await campaign.pool.fetch("EXPLAIN VERBOSE SELECT ab_declared_key(email, 'sha256') FROM recipient")
    )
    assert "ab_declared_key" not in plan
    assert "sha256(" in plan
