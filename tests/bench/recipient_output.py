"""What the recipient_changes benchmark must leave in Postgres, and the check that it did (no figure otherwise).

The benchmark upserts recipients 1..n (generation 1: inserts) then the same recipients again with a new e-mail
(generation 2: updates). Afterwards ``recipient`` holds exactly recipients 1..n, each with its generation-2 row
(e-mail, CRM id, not opted out, the e-mail's declared key), and ``recipient_version`` position 2 for each, none
deleted. Count, lowest and highest id (the primary key makes ids unique) pin the set; the rows "as expected"
pin each row's content, the keys of the lowest and highest recipient are compared with Python's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.ids import declared_key
from tests.bench.output_checks import require

# The bench's e-mail of recipient ``i`` in ``generation`` (tests/bench/recipient_bench.py writes it).
EMAIL = "p{i}.g{generation}@example.com"
CRM_ID = "CRM{i}"
# The generation the last upserts carry (their position): what every recipient must hold at the end.
LAST_GENERATION = 2


def email_of(i: int, generation: int) -> str:
    return EMAIL.format(i=i, generation=generation)


@dataclass(frozen=True, slots=True)
class RecipientTable:
    """The benchmark's recipients as Postgres holds them."""

    rows: int
    lowest: int | None
    highest: int | None
    as_expected: int  # rows whose e-mail, CRM id, consent and stored key are the last generation's
    lowest_key: str | None
    highest_key: str | None
    versions: int  # recipient_version rows of these recipients
    newest_versions: int  # … at the last generation's position, not deleted


def expected_table(recipients: int) -> RecipientTable:
    """What ``recipients`` recipients upserted twice leave (pure)."""
    if recipients == 0:
        return RecipientTable(0, None, None, 0, None, None, 0, 0)
    return RecipientTable(
        rows=recipients,
        lowest=1,
        highest=recipients,
        as_expected=recipients,
        lowest_key=declared_key(email_of(1, LAST_GENERATION), "sha256"),
        highest_key=declared_key(email_of(recipients, LAST_GENERATION), "sha256"),
        versions=recipients,
        newest_versions=recipients,
    )


def table_mismatches(expected: RecipientTable, actual: RecipientTable) -> list[str]:
    """Each figure that differs, named (empty: the table is exactly as expected)."""
    return [
        f"{name}: expected {want!r}, found {got!r}"
        for name in RecipientTable.__dataclass_fields__
        if (want := getattr(expected, name)) != (got := getattr(actual, name))
    ]


# Recipients below ``$1`` (the click-latency phase seeds its own far above): their count, bounds and content.
# The bench's e-mails are lower-case ASCII: their key is the SHA-256 of the e-mail itself.
_READ = """
SELECT count(*) AS rows, min(recipient_id) AS lowest, max(recipient_id) AS highest,
       count(*) FILTER (WHERE email = format('p%s.g%s@example.com', recipient_id, $2::int)
                          AND crm_id = 'CRM' || recipient_id AND NOT opted_out
                          AND key_email_sha256 = encode(sha256(convert_to(email, 'UTF8')), 'hex')) AS as_expected
  FROM recipient WHERE recipient_id < $1"""
_KEY = "SELECT key_email_sha256 FROM recipient WHERE recipient_id = $1"
_VERSIONS = """
SELECT count(*) AS versions, count(*) FILTER (WHERE position = $2 AND NOT deleted) AS newest
  FROM recipient_version WHERE recipient_id < $1"""


async def read_table(conn: Any, below: int) -> RecipientTable:
    """The recipients with an id below ``below``, as they are."""
    row = await conn.fetchrow(_READ, below, LAST_GENERATION)
    versions = await conn.fetchrow(_VERSIONS, below, LAST_GENERATION)
    lowest, highest = row["lowest"], row["highest"]
    return RecipientTable(
        rows=row["rows"],
        lowest=lowest,
        highest=highest,
        as_expected=row["as_expected"],
        lowest_key=None if lowest is None else await conn.fetchval(_KEY, lowest),
        highest_key=None if highest is None else await conn.fetchval(_KEY, highest),
        versions=versions["versions"],
        newest_versions=versions["newest"],
    )


async def check_recipients(conn: Any, recipients: int, below: int) -> None:
    """Fail the benchmark (BenchOutputError: BENCHMARK FAILED, no figure) unless exactly the expected rows are
    there."""
    actual = await read_table(conn, below)
    require(table_mismatches(expected_table(recipients), actual), f"recipient_changes {recipients:,} recipients")
