"""Who writes which table: one declared mapping, checked against the SQL of every module (static).

``WRITERS`` says, for every table of ``schemas/sql/``, which parts of the code may write it. The scan reads
the string literals of every module under ``services/`` and ``shared/`` (by AST: string constants and the
constant parts of f-strings; docstrings are prose and skipped) for ``INSERT INTO t``, ``UPDATE t``,
``DELETE FROM t``, ``TRUNCATE t`` and ``COPY t ... FROM``, and the calls ``copy_to_table("t", ...)`` and
``copy_records_to_table("t", ...)`` (a table handed down to a helper as a parameter is followed to the
helper's callers in any module, and counts as written by the caller that names it). A name that is no
table is prose ("Update shared audience"), left alone: test_every_table_has_declared_writers knows every
table. A module may write only the tables its writer is declared for:

* ``services/<name>/``: the service ``<name>`` (``ingest``, ``reconcile``, ``publish``, ``cli``), except
  ``services/cli/demo.py``: ``demo``, the demo's set-up and targeting (it runs with the dev image only);
* ``shared/runs/``: ``shared/runs``, the only writer of ``run``; ``shared/migrations.py``:
  ``shared/migrations``; any other shared module ``shared/<module>``.

The README's "Who writes what" table is the same mapping, checked here too.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from shared.settings import REPO_ROOT

SCANNED: Final = ("services", "shared")
README: Final = REPO_ROOT / "README.md"
MIGRATIONS: Final = REPO_ROOT / "schemas" / "sql"

WRITERS: Final[dict[str, frozenset[str]]] = {
    # The campaign's side, loaded by the operators (and the demo).
    "recipient": frozenset({"cli", "demo", "reconcile"}),
    "visitor_link": frozenset({"cli", "demo", "reconcile"}),
    "recipient_tombstone": frozenset({"reconcile"}),
    "visitor_link_pending": frozenset({"reconcile"}),
    "withdrawn_id": frozenset({"reconcile"}),
    # The catalog, lists and membership.
    "data_source": frozenset({"reconcile"}),
    "list": frozenset({"reconcile"}),
    "shared_audience": frozenset({"reconcile", "publish", "demo"}),
    "list_member": frozenset({"reconcile", "demo"}),
    "unmatched_id": frozenset({"reconcile", "demo"}),
    # Importing.
    "processed_file": frozenset({"ingest"}),
    "import_poll": frozenset({"ingest"}),  # import polling intervals' slots (services/ingest/poll_slots.py)
    "segment_event_seen": frozenset({"ingest"}),
    "segment_member_latest": frozenset({"ingest"}),
    "segment_governance": frozenset({"ingest"}),
    "applied_batch": frozenset({"reconcile", "shared/runs"}),
    "import_stage_batch": frozenset({"reconcile", "shared/runs"}),
    # Exporting.
    "export_request": frozenset({"reconcile"}),
    "export_audience_declaration": frozenset({"reconcile"}),
    "export_schedule": frozenset({"reconcile", "demo"}),
    "audience_rebind": frozenset({"reconcile"}),
    "export_excluded": frozenset({"reconcile"}),
    "exported_member": frozenset({"publish", "demo"}),
    "exported_member_partition": frozenset({"publish"}),  # its partitions are exported_member's (schemas/sql/030)
    "export_prepared_set": frozenset({"publish", "shared/runs"}),  # shared/runs: retention drops stale sets
    "export_rejected_id": frozenset({"publish"}),
    "publish_run": frozenset({"publish", "shared/runs"}),
    "publish_stage_batch": frozenset({"publish", "shared/runs"}),
    "published_batch": frozenset({"publish", "shared/runs"}),
    "published_file": frozenset({"publish", "shared/runs"}),
    # Both directions.
    "run": frozenset({"shared/runs"}),
    "schema_migrations": frozenset({"shared/migrations"}),
}

# Modules that still write ``run`` themselves while its writes move into shared/runs/ (repository paths). The
# lead empties this list; a module that no longer writes ``run`` must leave it
# (test_run_writers_being_moved_still_write_run). Empty today: every write of ``run`` is in shared/runs/.
RUN_WRITERS_BEING_MOVED: Final[frozenset[str]] = frozenset()

# Temporary tables: per connection, gone with it (or its transaction), invisible to every other service.
TEMP_TABLES: Final = frozenset(
    {
        "changed_recipients",  # reconcile: a poll's recipient changes, newest per recipient
        "doomed_recipients",  # reconcile: recipients being erased
        "link_stage",  # reconcile: a poll's visitor links
        "new_links",  # reconcile: the links that are new
        "old_runs",  # shared/runs: ended runs being purged
        "batch_matches",  # reconcile: a delta batch's matches
        "snapshot_match",  # reconcile: a full snapshot's matches
        "member_adds",  # reconcile: members to add with their IDs (a delta's, re-matching's)
        "load_recipient",  # cli: `load recipients`
        "load_link",  # cli: `load visitor-links`
        "demo_recipient",  # demo: the campaign it loads
        "demo_link",
    }
)

COPY_METHODS: Final = frozenset({"copy_to_table", "copy_records_to_table"})
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# ``\x00`` stands for an f-string's run-time part: a write whose table is one cannot be attributed.
_TARGET = rf"(?:ONLY\s+)?(\x00|{_NAME})"
WRITE_SQL: Final = re.compile(
    rf"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|TRUNCATE(?:\s+TABLE)?)\s+{_TARGET}"
    rf"|\bCOPY\s+(\x00|{_NAME})\s*(?:\([^)]*\))?\s*FROM\b",
    re.IGNORECASE,
)
CREATE_TEMP: Final = re.compile(rf"\bCREATE\s+TEMP(?:ORARY)?\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?({_NAME})", re.I)
CREATE_TABLE: Final = re.compile(rf"\bCREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?({_NAME})", re.IGNORECASE)
# A partition is written through its parent: it is the parent's, not a table of its own.
PARTITION: Final = re.compile(rf"\bCREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?({_NAME})\s+PARTITION\s+OF\b", re.I)
DROP_TABLE: Final = re.compile(rf"\bDROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?({_NAME})", re.IGNORECASE)
DYNAMIC: Final = "\x00"


@dataclass(frozen=True, order=True)
class Write:
    path: str  # repository-relative
    line: int
    table: str  # DYNAMIC when the scan cannot name it
    # A COPY call certainly names a table; a string may be prose ("Update shared audience") whose "table" is
    # no table at all: such a name is left alone (test_every_table_has_declared_writers knows every table).
    certain: bool = False


def writer_of(path: str) -> str:
    """Who a module writes for: its service, ``demo``, or the shared package or module."""
    parts = path.removesuffix(".py").split("/")
    if parts[0] == "services" and len(parts) > 2:
        return "demo" if parts[1] == "cli" and parts[2].startswith("demo") else parts[1]
    if parts[0] == "shared" and len(parts) > 1:
        return f"shared/{parts[1]}"
    return path


def _prose(tree: ast.AST) -> set[int]:
    """ids of the string statements (docstrings and the like): prose, not SQL."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant | ast.JoinedStr)
    }


def _strings(tree: ast.AST) -> Iterator[tuple[str, int]]:
    """Every string expression's text, an f-string's run-time parts as ``DYNAMIC``, with its line."""
    prose = _prose(tree)
    for node in ast.walk(tree):
        if id(node) in prose:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value, node.lineno
        elif isinstance(node, ast.JoinedStr):
            text = "".join(
                v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else DYNAMIC for v in node.values
            )
            yield text, node.lineno
            # ast.walk also visits the f-string's constant parts: their writes are found twice, which is harmless.


Function = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass
class _Module:
    """A parsed module and, for each node (by id), the innermost function around it."""

    path: str
    tree: ast.Module
    enclosing: dict[int, Function]

    @classmethod
    def parse(cls, path: str, source: str) -> _Module:
        tree = ast.parse(source)
        enclosing: dict[int, Function] = {}

        def walk(node: ast.AST, function: Function | None) -> None:
            for child in ast.iter_child_nodes(node):
                if function is not None:
                    enclosing[id(child)] = function
                walk(child, child if isinstance(child, Function) else function)

        walk(tree, None)
        return cls(path, tree, enclosing)

    def calls(self) -> Iterator[ast.Call]:
        return (node for node in ast.walk(self.tree) if isinstance(node, ast.Call))


@dataclass(frozen=True)
class _TableParameter:
    """A function that writes the table one of its parameters names (a COPY helper, say)."""

    function: str
    position: int | None  # among the arguments of a call (``self`` left out); None: keyword-only
    keyword: str
    path: str  # where it is defined
    line: int


def _call_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _argument(call: ast.Call, position: int | None, keyword: str) -> ast.expr | None:
    if (
        position is not None
        and position < len(call.args)
        and not any(isinstance(a, ast.Starred) for a in call.args[: position + 1])
    ):
        return call.args[position]
    return next((k.value for k in call.keywords if k.arg == keyword), None)


def _table_argument(module: _Module, node: ast.expr) -> str | _TableParameter:
    """What a table argument is: a literal name, a parameter of the function around it, or DYNAMIC."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.lower()
    function = module.enclosing.get(id(node))
    if isinstance(node, ast.Name) and function is not None:
        positional = [p.arg for p in (*function.args.posonlyargs, *function.args.args)]
        if node.id in positional:
            position = positional.index(node.id) - (1 if positional[0] in ("self", "cls") else 0)
            return _TableParameter(function.name, position, node.id, module.path, node.lineno)
        if node.id in [p.arg for p in function.args.kwonlyargs]:
            return _TableParameter(function.name, None, node.id, module.path, node.lineno)
    return DYNAMIC


def _sql_writes(module: _Module) -> Iterator[Write]:
    for text, line in _strings(module.tree):
        for match in WRITE_SQL.finditer(text):
            table = (match.group(1) or match.group(2)).lower()
            if table == "set":  # ON CONFLICT ... DO UPDATE SET: the INSERT's own table
                continue
            if table == DYNAMIC and not match.group(0).split()[0].isupper():
                continue  # prose around a value (f"could not update {what}"); the code writes SQL upper case
            yield Write(module.path, line, table, certain=table == DYNAMIC)


def _copy_writes(modules: list[_Module]) -> Iterator[Write]:
    """The tables of asyncpg's COPY calls; a table handed down as a parameter is followed to every call of the
    function that takes it (in any scanned module), and counts as written by the module that names it."""
    pending: list[_TableParameter] = []
    for module in modules:
        for call in module.calls():
            if _call_name(call) in COPY_METHODS and (target := _argument(call, 0, "table_name")) is not None:
                table = _table_argument(module, target)
                if isinstance(table, _TableParameter):
                    pending.append(table)
                else:
                    yield Write(module.path, call.lineno, table, certain=True)
    followed: set[_TableParameter] = set()
    while pending:
        parameter = pending.pop()
        if parameter in followed:
            continue
        followed.add(parameter)
        callers = 0
        for module in modules:
            for call in module.calls():
                if _call_name(call) != parameter.function:
                    continue
                given = _argument(call, parameter.position, parameter.keyword)
                if given is None:
                    continue
                callers += 1
                table = _table_argument(module, given)
                if isinstance(table, _TableParameter):
                    pending.append(table)
                else:
                    yield Write(module.path, call.lineno, table, certain=True)
        if not callers:
            yield Write(parameter.path, parameter.line, DYNAMIC, certain=True)


def scan_sources(sources: dict[str, str]) -> list[Write]:
    """Every table write in these modules (path -> source)."""
    modules = [_Module.parse(path, source) for path, source in sources.items()]
    writes = {w for module in modules for w in _sql_writes(module)}
    writes.update(_copy_writes(modules))
    return sorted(writes)


def scan_source(source: str, path: str) -> list[Write]:
    return scan_sources({path: source})


def _modules() -> Iterator[tuple[str, str]]:
    for top in SCANNED:
        for file in sorted((REPO_ROOT / top).rglob("*.py")):
            yield file.relative_to(REPO_ROOT).as_posix(), file.read_text(encoding="utf-8")


@functools.cache
def found_writes() -> tuple[Write, ...]:
    return tuple(scan_sources(dict(_modules())))


@functools.cache
def temp_tables_created() -> frozenset[str]:
    created: set[str] = set()
    for _, source in _modules():
        for text, _ in _strings(ast.parse(source)):
            created.update(m.group(1).lower() for m in CREATE_TEMP.finditer(text))
    return frozenset(created)


def violations(
    writes: tuple[Write, ...] | list[Write], run_writers_being_moved: frozenset[str] = RUN_WRITERS_BEING_MOVED
) -> list[str]:
    """Each write the mapping does not allow, as one readable line."""
    bad = []
    for w in writes:
        where = f"{w.path}:{w.line}"
        if w.table == DYNAMIC:
            bad.append(f"{where}: writes a table the scan cannot name (use a literal table name)")
        elif w.table in TEMP_TABLES:
            continue
        elif w.table not in WRITERS:
            if w.certain:
                bad.append(f"{where}: writes {w.table!r}, which is not a table of WRITERS nor of TEMP_TABLES")
        elif writer_of(w.path) not in WRITERS[w.table]:
            if w.table == "run" and w.path in run_writers_being_moved:
                continue
            allowed = ", ".join(sorted(WRITERS[w.table]))
            bad.append(f"{where}: {writer_of(w.path)} writes {w.table!r}, which only {allowed} may write")
    return bad


# --- the code against the mapping ------------------------------------------------------------------------


def tables() -> set[str]:
    """The tables the migrations leave (in order: some drop earlier ones), and those the code creates itself."""
    found: set[str] = set()
    for migration in sorted(MIGRATIONS.glob("*.sql")):
        sql = migration.read_text()
        found |= {m.group(1).lower() for m in CREATE_TABLE.finditer(sql)}
        found -= {m.group(1).lower() for m in PARTITION.finditer(sql)}
        found -= {m.group(1).lower() for m in DROP_TABLE.finditer(sql)}
    for _, source in _modules():
        for text, _ in _strings(ast.parse(source)):
            found |= {m.group(1).lower() for m in CREATE_TABLE.finditer(text)}
    return found


def test_every_table_has_declared_writers() -> None:
    found = tables()
    assert found == set(WRITERS), (
        f"tables without declared writers: {sorted(found - set(WRITERS))}; "
        f"declared but not a table: {sorted(set(WRITERS) - found)}"
    )


def test_every_write_is_by_a_declared_writer() -> None:
    bad = violations(found_writes())
    assert not bad, "writes the mapping does not allow (fix the code or, deliberately, WRITERS):\n" + "\n".join(bad)


def test_every_declared_writer_writes() -> None:
    """No stale declaration: each writer of a table really writes it."""
    actual = {(writer_of(w.path), w.table) for w in found_writes()}
    stale = sorted(
        f"{who} -> {table}" for table, who_all in WRITERS.items() for who in who_all if (who, table) not in actual
    )
    assert not stale, f"declared writers that write nothing there: remove them from WRITERS: {stale}"


def test_run_writers_being_moved_still_write_run() -> None:
    actual = {w.path for w in found_writes() if w.table == "run"}
    moved = sorted(RUN_WRITERS_BEING_MOVED - actual)
    assert not moved, f"these modules no longer write `run`: remove them from RUN_WRITERS_BEING_MOVED: {moved}"


def test_temp_tables_are_temporary() -> None:
    """A name in TEMP_TABLES is skipped by the check: it must really be created TEMP, and not be a real table."""
    created = temp_tables_created()
    assert set(TEMP_TABLES) <= created, f"no module creates these TEMP: {sorted(TEMP_TABLES - created)}"
    assert created <= set(TEMP_TABLES), f"temporary tables to list in TEMP_TABLES: {sorted(created - TEMP_TABLES)}"
    assert not TEMP_TABLES & set(WRITERS)


def test_the_readme_table_is_the_mapping() -> None:
    text = README.read_text(encoding="utf-8")
    assert "\n### Who writes what\n" in text, "the README lost its 'Who writes what' section"
    section = text.split("\n### Who writes what\n", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    documented: dict[str, frozenset[str]] = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        (table,) = re.findall(r"`([^`]+)`", cells[0])
        documented[table] = frozenset(re.findall(r"`([^`]+)`", cells[1]))
    assert documented == WRITERS, "README 'Who writes what' and WRITERS differ: change both together"


# --- the scan itself ----------------------------------------------------------------------------------------

_SAMPLE = '''
"""Prose: INSERT INTO recipient here is documentation, not a write."""
A = "INSERT INTO processed_file (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name"
B = f"UPDATE list_member SET added = {1} WHERE list_id = $1"
C = """DELETE FROM unmatched_id
        WHERE audience_id = $1"""
D = "TRUNCATE snapshot_match"
E = "COPY exported_member (audience_id, id) FROM STDIN"
F = "COPY (SELECT id FROM exported_member) TO STDOUT"  # a read
G = "could not update a trait"  # prose


async def _copy(conn, table, rows):
    await conn.copy_to_table(table, source=rows)


async def work(conn, name):
    await conn.copy_records_to_table("publish_run", records=[])
    await conn.copy_to_table(table_name="published_file", source=b"")
    await _copy(conn, "import_stage_batch", b"")
    await conn.execute(f"DELETE FROM {name}")
'''


def test_the_scan_finds_every_form_of_write() -> None:
    found = scan_source(_SAMPLE, "services/reconcile/sample.py")
    tables = {w.table for w in found if w.certain or w.table in WRITERS or w.table in TEMP_TABLES}
    assert tables == {
        "processed_file",
        "list_member",
        "unmatched_id",
        "snapshot_match",
        "exported_member",
        "publish_run",
        "published_file",
        "import_stage_batch",
        DYNAMIC,
    }


def test_a_write_outside_the_mapping_fails() -> None:
    writes = scan_source(_SAMPLE, "services/reconcile/sample.py")
    bad = "\n".join(violations(writes))
    # reconcile may write list_member, unmatched_id, import_stage_batch (and snapshot_match is temporary) ...
    for allowed in ("'list_member'", "'unmatched_id'", "'import_stage_batch'", "'snapshot_match'"):
        assert allowed not in bad
    # ... but not ingest's ledger, publish's tables, nor a table it does not name.
    for refused in ("'processed_file'", "'exported_member'", "'publish_run'", "'published_file'", "cannot name"):
        assert refused in bad
    # run: shared/runs, and for now the modules being moved; any other module fails.
    run = "INSERT INTO run (run_id) VALUES ($1)"
    assert not violations(scan_source(f"S = {run!r}", "shared/runs/store.py"))
    moving = "services/reconcile/importing.py"
    assert violations(scan_source(f"S = {run!r}", moving), frozenset())
    assert not violations(scan_source(f"S = {run!r}", moving), frozenset({moving}))
    assert violations(scan_source(f"S = {run!r}", "services/ingest/new_module.py"))


def test_a_table_handed_to_a_helper_in_another_module_is_followed() -> None:
    helper = "async def copy_ids(conn, table, rows):\n    await conn.copy_to_table(table, source=rows)\n"
    caller = "async def stage(conn):\n    await copy_ids(conn, 'processed_file', b'')\n"
    writes = scan_sources({"services/reconcile/helper.py": helper, "services/reconcile/caller.py": caller})
    assert [(w.path, w.table) for w in writes] == [("services/reconcile/caller.py", "processed_file")]
    assert violations(writes)
    # A helper nobody calls with a name: the table cannot be named, which fails too.
    (unnamed,) = scan_sources({"services/reconcile/helper.py": helper})
    assert unnamed.table == DYNAMIC
