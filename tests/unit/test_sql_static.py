"""SQL is parameterised everywhere: a static scan of ``services/`` and ``shared/``.

Values reach Postgres as ``$n`` parameters only. The few statements whose *text* is assembled (a column
or transform picked from a fixed whitelist, a shared sub-query) are reviewed, one by one, in ``REVIEWED``
below with why no input can reach them; each is also marked ``# noqa: S608`` where ruff's own check sees
it. The scan finds every piece of Python that builds SQL text from something other than a string literal:

* f-strings, ``+``/``%`` concatenation and ``.format()`` whose literal part reads like SQL;
* calls of a database method (``execute``, ``fetch``, ``cursor``, ...) whose query is not a literal.

An expression that only names a module-level string constant is a literal too. Anything else must be in
``REVIEWED``: a new site fails this test until someone parameterises it or reviews it here (and a site
that went away must leave the list, so the list stays the truth).
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from shared.settings import REPO_ROOT

SCANNED: Final = ("services", "shared")
DB_METHODS: Final = frozenset(
    {"execute", "executemany", "fetch", "fetchrow", "fetchval", "cursor", "prepare", "copy_from_query"}
)
# Upper case only, as the code base writes SQL: prose in messages does not trip it.
SQL_WORDS: Final = re.compile(
    r"\b(SELECT|INSERT INTO|UPDATE|DELETE FROM|CREATE|ALTER|DROP|TRUNCATE|COPY|GRANT|WHERE|FROM|JOIN|AND)\b"
)


@dataclass(frozen=True, order=True)
class Site:
    """One place where SQL text depends on an expression: file, enclosing scope, kind, the expression."""

    path: str
    scope: str
    kind: str  # "interpolates" (into SQL text) or "query" (a database call's non-literal query)
    expr: str


_KEYS = "from the fixed whitelists ('recipient_id', 'email', 'crm_id') x ('none', 'sha256')"
REVIEWED: Final[dict[Site, str]] = {
    # reconcile: declared keys, all written by services/reconcile/declared_keys.py declared_key_sql(), which
    # raises for anything off the whitelists.
    Site("services/reconcile/import_delta.py", "_DECLARED_APPLY", "interpolates", "declared_key_sql(key, transform)"): (
        f"declared_key_sql over {_KEYS}"
    ),
    Site("services/reconcile/import_delta.py", "apply_delta", "query", "apply_statement(target)"): (
        "one of the prebuilt statements of _ECID_APPLY/_DECLARED_APPLY, looked up, never built from the target"
    ),
    Site(
        "services/reconcile/import_snapshot.py",
        "_DECLARED_SNAPSHOT",
        "interpolates",
        "declared_key_sql(key, transform)",
    ): f"declared_key_sql over {_KEYS}",
    Site("services/reconcile/import_snapshot.py", "match_snapshot", "interpolates", "snapshot_join(target)"): (
        "one of the prebuilt statements of _ECID_SNAPSHOT/_DECLARED_SNAPSHOT, looked up, never built from the target"
    ),
    # reconcile: the export diff.
    Site("services/reconcile/export_diff.py", "CURRENT_IDS", "interpolates", "declared_key_sql(key, transform)"): (
        f"declared_key_sql over {_KEYS}"
    ),
    Site("services/reconcile/export_diff.py", "CURRENT_IDS", "interpolates", "exportable_key_sql(key, transform)"): (
        f"declared_keys.py's condition over the same declared_key_sql, {_KEYS}"
    ),
    Site("services/reconcile/export_diff.py", "EXCLUDED", "interpolates", "unexportable_key_sql(key, transform)"): (
        f"declared_keys.py's condition over the same declared_key_sql, {_KEYS}"
    ),
    Site("services/reconcile/export_diff.py", "diff_sql", "interpolates", "current_ids"): (
        "one of the prebuilt CURRENT_IDS statements, chosen by the data source's kind"
    ),
    Site("services/reconcile/export_run_rows.py", "record_left_out", "interpolates", "EXCLUDED[source.kind]"): (
        "a prebuilt EXCLUDED statement; its caller checked source.kind against CURRENT_IDS first"
    ),
    Site("services/reconcile/exporting.py", "Exporter._emit", "query", "query.sql"): (
        "diff_sql(...) of a prebuilt statement"
    ),
    Site("services/reconcile/insights_queries.py", "list_audience_overlap", "interpolates", "ids"): (
        "a CURRENT_IDS query looked up by the data source's (id_type, key, transform), never built from input"
    ),
    Site("services/reconcile/export_guard.py", "removal_plan", "interpolates", "current_ids"): (
        "one of the prebuilt CURRENT_IDS statements, chosen by the data source's kind"
    ),
    Site("services/reconcile/export_release.py", "release_plan", "interpolates", "query.sql"): (
        "diff_sql(...) of a prebuilt CURRENT_IDS statement"
    ),
    # reconcile: catalog indexes and re-matching.
    Site("services/reconcile/catalog.py", "ensure_declared_key_index", "interpolates", "key"): (
        "validated by declared_key_sql on the line above (it raises off the whitelist)"
    ),
    Site("services/reconcile/catalog.py", "ensure_declared_key_index", "interpolates", "transform"): (
        "validated by declared_key_sql on the line above (it raises off the whitelist)"
    ),
    Site("services/reconcile/catalog.py", "ensure_declared_key_index", "interpolates", "expression"): (
        "declared_key_sql(key, transform) of the whitelisted key and transform"
    ),
    Site("services/reconcile/rematch.py", "_declared", "interpolates", "key"): f"{_KEYS} (_STATEMENTS)",
    Site("services/reconcile/rematch.py", "_declared", "interpolates", "transform"): f"{_KEYS} (_STATEMENTS)",
    Site("services/reconcile/rematch.py", "_declared", "interpolates", "declared_key_sql(key, transform)"): (
        f"declared_key_sql over {_KEYS} (_STATEMENTS)"
    ),
    Site("services/reconcile/rematch.py", "rematch", "query", "sql"): "one of the prebuilt _STATEMENTS",
    # publish: reading the staged run.
    Site("services/publish/files.py", "_write_once", "query", "q.plan"): "a prebuilt _SYNC_PLAN/_OVERWRITE_PLAN",
    Site("services/publish/files.py", "_write_once", "query", "q.rows"): "a prebuilt _SYNC_ROWS/_OVERWRITE_ROWS",
    Site("services/publish/file_set_rows.py", "set_query.fetch_overwrite", "query", "FETCH_ROWS"): (
        "a cursor's fetch(n): a row count"
    ),
    Site("services/publish/file_set_rows.py", "set_query.fetch_sync", "query", "STAGED_BATCHES_PER_FETCH"): (
        "a cursor's fetch(n): a row count"
    ),
    # cli: `audience-bridge run` reads a run's files with the status page's constant statement.
    Site("services/cli/run_commands.py", "run_cmd.read", "query", "RUN_FILES_SQL"): (
        "services/reconcile/status_files.RUN_FILES_SQL: a constant column list and literals"
    ),
    # shared: migrations are the repository's own files.
    Site("shared/migrations.py", "migrate", "query", "migration.sql"): "schemas/sql/NNN_name.sql from the repo",
    # The campaign streams (issue 18): recipient changes, clicks, consent, erasure, retention.
    Site("services/reconcile/consent.py", "admitted_sql", "interpolates", "recipient_id"): (
        "a column name its callers write as a literal (member_ids, import_snapshot)"
    ),
    Site("services/reconcile/member_ids.py", "_ADD", "interpolates", "admitted_sql('a.recipient_id')"): (
        "consent.admitted_sql over a literal column name; the GUC name is a constant"
    ),
    Site("services/reconcile/member_ids.py", "add_members", "query", "_ADD"): "the module's _ADD, built once",
    Site("services/reconcile/import_snapshot.py", "_ADD_TRACKED", "interpolates", "admitted_sql('s.recipient_id')"): (
        "consent.admitted_sql over a literal column name"
    ),
    Site("services/reconcile/import_snapshot.py", "_ADD", "interpolates", "admitted_sql('s.recipient_id')"): (
        "consent.admitted_sql over a literal column name"
    ),
    Site(
        "services/reconcile/import_snapshot.py",
        "apply_snapshot",
        "query",
        "_ADD_TRACKED if target.tracks_ids else _ADD",
    ): ("one of the module's two statements, built once"),
    Site("services/reconcile/export_run_rows.py", "record_left_out", "query", "OPTED_OUT"): (
        "export_diff.OPTED_OUT: a constant statement"
    ),
    Site("services/reconcile/recipient_changes.py", "apply_changes", "query", "LEAVE_IMPORT_LISTS"): (
        "consent.LEAVE_IMPORT_LISTS: a constant statement (the GUC name is a constant)"
    ),
    Site("services/reconcile/recipient_erasure.py", "_declared", "interpolates", "declared_key_sql(key, transform)"): (
        f"declared_key_sql over {_KEYS}"
    ),
    Site("services/reconcile/recipient_erasure.py", "_declared", "interpolates", "key"): _KEYS,
    Site("services/reconcile/recipient_erasure.py", "_declared", "interpolates", "transform"): _KEYS,
    Site("services/reconcile/recipient_erasure.py", "withdraw_and_delete", "query", "sql"): (
        "one of the module's _STATEMENTS, built once over the whitelists"
    ),
    Site("services/reconcile/rematch.py", "_ecid", "interpolates", "only"): (
        "'' or the module's literal restriction to the new_links temporary table"
    ),
    Site("services/reconcile/rematch.py", "_declared", "interpolates", "only"): (
        "'' or the module's literal restriction to the changed_recipients temporary table"
    ),
    Site("services/reconcile/rematch.py", "rematch_new_links", "query", "_ECID_OF_NEW_LINKS"): (
        "built once from _ecid and a literal restriction"
    ),
    Site("services/reconcile/rematch.py", "rematch_changed_recipients", "query", "sql"): (
        f"one of _DECLARED_OF_CHANGED's values, built once over {_KEYS}"
    ),
    Site("shared/runs/purge.py", "purge_staging", "query", "sql"): "one of the module's constant _STAGING statements",
    Site("shared/runs/purge.py", "purge_finished_runs", "query", "sql"): (
        "one of the module's constant _RUN_DETAILS statements"
    ),
    Site("services/reconcile/visitor_links.py", "link_pending_of_changed", "query", "_LINK_PENDING_OF_CHANGED"): (
        "_MOVE_PENDING formatted once with a literal restriction"
    ),
    Site("services/reconcile/visitor_links.py", "link_all_pending", "query", "_LINK_ALL_PENDING"): (
        "_MOVE_PENDING formatted once with no restriction"
    ),
    Site(
        "services/cli/loads.py",
        "load_recipients",
        "query",
        "UPSERT_WITH_CONSENT if 'opted_out' in header else UPSERT_KEEPING_CONSENT",
    ): ("one of two statements built once from literals; the header only chooses which"),
    Site("services/cli/demo_streams.py", "CampaignStreams._until", "query", "sql"): (
        "the demo's own literal queries, passed by its methods"
    ),
    # The import preview runs the import's own match statement read-only.
    Site("services/cli/import_preview.py", "_preview_one", "interpolates", "admitted_sql('m.recipient_id')"): (
        "consent.admitted_sql over a literal column name"
    ),
    Site("services/cli/import_preview.py", "_preview_one", "interpolates", "join"): (
        "snapshot_join(target): one of import_snapshot's prebuilt joins, looked up, never built from the target"
    ),
    Site("services/cli/import_preview.py", "_preview_one", "query", "sql"): (
        "_MATCH formatted just above with the two reviewed pieces"
    ),
    Site("services/ingest/event_ledger.py", "EventLedger.purge", "interpolates", "table"): (
        "a table name from the literal tuple of the loop"
    ),
    Site("services/reconcile/api_queries.py", "run_view", "query", "RUN_FILES_SQL"): (
        "status_files' module constant, literal text"
    ),
    Site("services/reconcile/export_dry_run.py", "dry_run", "query", "OPTED_OUT"): (
        "consent's module constant, built once from literals"
    ),
    Site("services/reconcile/export_dry_run.py", "_counted", "interpolates", "int(sample)"): (
        "an int (DRY_RUN_SAMPLE_SIZE), formatted as a number"
    ),
    Site("services/reconcile/export_dry_run.py", "_counted", "interpolates", "query"): (
        "its callers pass the export's own statements: EXCLUDED[kind], _OPTED_OUT_RECIPIENTS, diff_queries().sql"
    ),
}

# Every S608 noqa comment in services/ and shared/, by file and scope. Each silences ruff on a statement whose
# run-time pieces are in REVIEWED, or that is put together from literals only (_OVERWRITE_ROWS, the run store's).
NOQA_S608: Final = {
    # The campaign streams (issue 18): reviewed in REVIEWED, or f-strings of the module's own constants.
    ("services/reconcile/consent.py", "LEAVE_IMPORT_LISTS"),
    ("services/reconcile/consent.py", "admitted_sql"),
    ("services/reconcile/import_snapshot.py", "_ADD"),
    ("services/reconcile/import_snapshot.py", "_ADD_TRACKED"),
    ("services/reconcile/member_ids.py", "_ADD"),
    ("services/reconcile/recipient_erasure.py", "_declared"),
    ("services/reconcile/rematch.py", "_ecid"),
    ("shared/runs/purge.py", "_OLD_RUNS"),
    ("shared/runs/purge.py", "_STAGING"),
    ("shared/runs/purge.py", "_STALE_PREPARED"),
    ("services/publish/file_set_rows.py", "_OVERWRITE_ROWS"),
    ("services/reconcile/import_delta.py", "_DECLARED_APPLY"),
    ("services/reconcile/import_delta.py", "_ECID_APPLY"),
    ("services/reconcile/import_snapshot.py", "_DECLARED_SNAPSHOT"),
    ("services/reconcile/import_snapshot.py", "match_snapshot"),
    ("services/reconcile/import_snapshot.py", "_ECID_SNAPSHOT"),
    ("services/reconcile/rematch.py", "_declared"),
    ("services/reconcile/export_diff.py", "CURRENT_IDS"),
    ("services/reconcile/export_diff.py", "EXCLUDED"),
    ("services/reconcile/export_diff.py", "diff_sql"),
    ("services/reconcile/export_run_rows.py", "record_left_out"),
    ("services/reconcile/export_guard.py", "removal_plan"),
    ("services/reconcile/insights_queries.py", "list_audience_overlap"),
    ("services/reconcile/export_release.py", "release_plan"),
    # The run table's reads and move: the column list is the module constant _COLUMNS.
    ("shared/runs/store.py", "move"),
    ("shared/runs/store.py", "load"),
    ("shared/runs/store.py", "latest_of_request"),
    ("shared/runs/store.py", "fail_stalled_imports"),
    ("services/reconcile/export_dry_run.py", "_counted"),
}


def _module_constants(tree: ast.Module) -> set[str]:
    """Module-level names bound to a string made of literals only."""
    constants: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            target, value = node.target.id, node.value
        else:
            continue
        if _is_static(value, constants):  # a literal, or literals and earlier constants put together
            constants.add(target)
    return constants


def _scopes(tree: ast.Module) -> dict[ast.AST, str]:
    """Each node's scope: ``Class.function``, or the module-level name it is assigned to."""
    scopes: dict[ast.AST, str] = {}

    def walk(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                inner = f"{scope}.{child.name}" if scope else child.name
            elif not scope and isinstance(child, ast.Assign | ast.AnnAssign):
                target = child.targets[0] if isinstance(child, ast.Assign) else child.target
                inner = ast.unparse(target)
            scopes[child] = inner
            walk(child, inner)

    walk(tree, "")
    return scopes


def _text_of(node: ast.AST, texts: dict[str, str]) -> str:
    """The literal text a string expression is built from (what can tell it is SQL)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return texts.get(node.id, "")
    if isinstance(node, ast.JoinedStr):
        return "".join(_text_of(v, texts) for v in node.values)
    if isinstance(node, ast.BinOp):
        return _text_of(node.left, texts) + _text_of(node.right, texts)
    if isinstance(node, ast.IfExp):
        return _text_of(node.body, texts) + _text_of(node.orelse, texts)
    return ""


def _is_static(node: ast.AST, constants: set[str]) -> bool:
    """A literal, a module constant, or literals put together: nothing from run time."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return True
    if isinstance(node, ast.Name):
        return node.id in constants
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _is_static(node.left, constants) and _is_static(node.right, constants)
    if isinstance(node, ast.IfExp):
        return _is_static(node.body, constants) and _is_static(node.orelse, constants)
    if isinstance(node, ast.JoinedStr):
        return all(_is_static(v.value, constants) if isinstance(v, ast.FormattedValue) else True for v in node.values)
    return False


def _pieces(node: ast.AST) -> Iterator[ast.AST]:
    """The run-time pieces of a string expression: f-string values, concatenated and %-formatted operands."""
    if isinstance(node, ast.JoinedStr):
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                yield value.value
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        for operand in (node.left, node.right):
            if isinstance(operand, ast.JoinedStr | ast.BinOp):
                yield from _pieces(operand)
            else:
                yield operand
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        yield from node.args
        yield from (k.value for k in node.keywords)
    else:
        yield node


def scan(path: Path, root: Path = REPO_ROOT) -> Iterator[tuple[Site, int]]:
    """Every run-time piece of SQL text in one file, with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    rel = path.relative_to(root).as_posix()
    constants = _module_constants(tree)
    texts = {
        n.targets[0].id: n.value.value
        for n in tree.body
        if isinstance(n, ast.Assign)
        and isinstance(n.targets[0], ast.Name)
        and isinstance(n.value, ast.Constant)
        and isinstance(n.value.value, str)
    }
    scopes = _scopes(tree)

    def dynamic(node: ast.AST) -> Iterator[tuple[Site, int]]:
        for piece in _pieces(node):
            if not _is_static(piece, constants):
                kind = "query" if piece is node else "interpolates"
                yield Site(rel, scopes.get(node, ""), kind, ast.unparse(piece)), getattr(node, "lineno", 0)

    for node in ast.walk(tree):
        builder = isinstance(node, ast.JoinedStr) or (
            isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod)
        )
        if (builder and SQL_WORDS.search(_text_of(node, texts))) or (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format"
            and SQL_WORDS.search(_text_of(node.func.value, texts))
        ):
            yield from dynamic(node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in DB_METHODS:
            query = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "query"), None)
            if query is not None:
                # A database call's query is SQL whatever it reads like.
                yield from dynamic(query)


@functools.cache
def found_sites() -> dict[Site, list[str]]:
    sites: dict[Site, list[str]] = {}
    for top in SCANNED:
        for path in sorted((REPO_ROOT / top).rglob("*.py")):
            for s, line in scan(path):
                sites.setdefault(s, []).append(f"{s.path}:{line}")
    return sites


def test_every_sql_text_built_from_runtime_values_is_reviewed() -> None:
    sites = found_sites()
    unreviewed = {f"{where[0]} [{s.scope}] {s.kind}: {s.expr}" for s, where in sites.items() if s not in REVIEWED}
    assert not unreviewed, (
        "SQL text built from runtime values: pass the values as $n parameters, or (for identifiers from a fixed "
        f"whitelist) review the site in REVIEWED with why no input reaches it: {sorted(unreviewed)}"
    )


def test_reviewed_sites_still_exist() -> None:
    found = found_sites()
    stale = sorted(f"{s.path} [{s.scope}] {s.expr}" for s in REVIEWED if s not in found)
    assert not stale, f"reviewed sites that are gone: remove them from REVIEWED: {stale}"


def test_every_noqa_s608_is_known() -> None:
    """ruff's S608 is silenced only on statements reviewed here (``REVIEWED``) or built of literals only."""
    found = set()
    for top in SCANNED:
        for path in sorted((REPO_ROOT / top).rglob("*.py")):
            for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if "noqa: S608" in text:
                    found.add((path.relative_to(REPO_ROOT).as_posix(), _scope_at(path, number)))
    assert found == NOQA_S608, "a new or moved `# noqa: S608`: review the statement, then list it in NOQA_S608"


@functools.cache
def _parsed_scopes(path: Path) -> dict[ast.AST, str]:
    return _scopes(ast.parse(path.read_text(encoding="utf-8")))


def _scope_at(path: Path, line: int) -> str:
    """The scope of the innermost node spanning ``line``."""
    best, span = "", -1
    for node, scope in _parsed_scopes(path).items():
        start, end = getattr(node, "lineno", None), getattr(node, "end_lineno", None)
        if start is not None and end is not None and start <= line <= end and (span < 0 or end - start <= span):
            best, span = scope, end - start
    return best


SAMPLE = """
NAME = "list"
QUERY = f"SELECT * FROM {NAME} WHERE name = $1"
async def bad(conn, a, b, c, d, sql):
    await conn.execute(f"DELETE FROM list WHERE name = '{a}'")
    await conn.fetch("SELECT * FROM list WHERE name = '" + b + "'")
    await conn.fetch("SELECT * FROM list WHERE name = '%s'" % c)
    await conn.fetch("SELECT * FROM list WHERE name = '{}'".format(d))
    await conn.fetch(sql)
async def good(conn, name):
    await conn.execute("DELETE FROM list WHERE name = $1", name)
    await conn.fetch(f"SELECT * FROM {NAME} WHERE name = $1", name)
    await conn.fetch(QUERY, name)
    await conn.fetch("SELECT " + ("1" if name else "2"))
"""


def test_the_scan_sees_what_it_must(tmp_path: Path) -> None:
    """The scanner itself: every unsafe shape is found, parameterised and literal ones are not."""
    sample = tmp_path / "sample.py"
    sample.write_text(SAMPLE)
    sites = {(s.scope, s.kind, s.expr) for s, _ in scan(sample, tmp_path)}
    assert sites == {
        ("bad", "interpolates", "a"),
        ("bad", "interpolates", "b"),
        ("bad", "interpolates", "c"),
        ("bad", "interpolates", "d"),
        ("bad", "query", "sql"),
    }
