"""Declared keys in Postgres: stored or computed, they are the keys Python computes (shared/ids.py)."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.reconcile.catalog import ensure_declared_key_index
from services.reconcile.declared_keys import (
    RECONCILIATION_KEYS,
    STORED_KEYS,
    declared_key_sql,
    exportable_key_sql,
    unexportable_key_sql,
)
from shared.ids import KEY_TRANSFORMS, KEY_WHITESPACE, InvalidId, declared_key
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
            f"ab_key(r.{key}, '{transform}') AS computed, {exportable_key_sql(key, transform)} AS ok, "
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


# ab_key written with convert_to (STABLE, so never inlined), as a database of another encoding keeps it (017).
_CONVERT_TO_BODY = """CASE
    WHEN nullif(btrim(v, E' \\t\\n\\r\\f\\013'), '') IS NULL THEN NULL
    WHEN t = 'none' THEN btrim(v, E' \\t\\n\\r\\f\\013')
    WHEN t = 'sha256' THEN encode(sha256(convert_to(lower(btrim(v, E' \\t\\n\\r\\f\\013') COLLATE "C"), 'UTF8')), 'hex')
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
        f"SELECT v, t, ab_key(v, t) AS now, {_CONVERT_TO_BODY} AS before "
        "FROM unnest($1::text[]) v, unnest(ARRAY['none', 'sha256']) t",
        texts,
    )
    assert len(rows) == 2 * len(texts)
    assert [tuple(r) for r in rows if r["now"] != r["before"]] == []
    # Inlined (every part IMMUTABLE): a generated column or a join evaluates the expression, not a SQL-function
    # call per row (~5 µs each, most of a recipient upsert's cost).
    plan = "\n".join(
        r[0] for r in await campaign.pool.fetch("EXPLAIN VERBOSE SELECT ab_key(email, 'sha256') FROM recipient")
    )
    assert "ab_key" not in plan
    assert "sha256(" in plan


# Where Python's str.strip()/str.lower() and a collation's lower() disagreed: Unicode whitespace (and the ASCII
# separators \x1c-\x1f that str.isspace() counts), letters whose case mappings differ by table or by length.
_TRICKY = " \t\n\r\f\v\x1c\x1f\x85\u00a0\u2028\u3000İ\u0131ẞßΣςǅÉéЖ\\Aa@."
_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(_TRICKY), st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(_TEXT, min_size=1, max_size=40))
async def test_python_and_sql_keys_agree_on_any_text(campaign: Campaign, texts: list[str]) -> None:
    # The expression (ab_key) and the stored columns, against shared.ids.declared_key: one rule (017).
    async with campaign.pool.acquire() as conn, conn.transaction():
        await conn.execute("CREATE TEMP TABLE any_text (n int, v text) ON COMMIT DROP")
        await conn.copy_records_to_table("any_text", records=list(enumerate(texts)), columns=("n", "v"))
        await conn.execute("INSERT INTO recipient (recipient_id, email, crm_id) SELECT 1000000 + n, v, v FROM any_text")
        rows = await conn.fetch(
            """SELECT a.v, ab_key(a.v, 'none') AS none, ab_key(a.v, 'sha256') AS sha256,
                      r.key_email_sha256, r.key_crm_id_none
                 FROM any_text a JOIN recipient r ON r.recipient_id = 1000000 + a.n ORDER BY a.n"""
        )
        await conn.execute("DELETE FROM recipient WHERE recipient_id >= 1000000")
    assert len(rows) == len(texts)
    for row in rows:
        value = row["v"]
        assert row["key_email_sha256"] == row["sha256"], value
        assert row["key_crm_id_none"] == row["none"], value
        try:
            python = declared_key(value, "sha256")
        except InvalidId:
            assert row["sha256"] is None, value  # empty once trimmed: no key on either side
            assert row["none"] is None, value
            continue
        assert row["sha256"] == python, value
        assert row["none"] == value.strip(KEY_WHITESPACE), value
        # A value Python refuses as an ID: SQL still stores it, and exports refuse it (exportable_key_sql).
        with contextlib.suppress(InvalidId):
            assert declared_key(value, "none") == row["none"], value
