"""SQL is parameterised everywhere: a static scan of ``services/`` and ``shared/``.

Values reach Postgres as ``$n`` parameters only. The few statements whose *text* is assembled (a column
or transform picked from a fixed whitelist, a shared sub-query) are reviewed, one by one, in ``REVIEWED``
(``tests/unit/sql_reviewed_sites.py``) with why no input can reach them; each is also marked ``# noqa: S608``
where ruff's own check sees it. The scan finds every piece of Python that builds SQL text from something other
than a string literal:

* f-strings, ``+``/``%`` concatenation and ``.format()`` whose literal part reads like SQL;
* calls of a database method (``execute``, ``fetch``, ``cursor``, ...) whose query is not a literal.

An expression that only names a module-level string constant is a literal too. Anything else must be in
``REVIEWED``: a new site fails this test until someone parameterises it or reviews it there (and a site
that went away must leave the list, so the list stays the truth).
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from shared.settings import REPO_ROOT
from tests.unit.sql_reviewed_sites import NOQA_S608, REVIEWED, Site

SCANNED: Final = ("services", "shared")
DB_METHODS: Final = frozenset(
    {"execute", "executemany", "fetch", "fetchrow", "fetchval", "cursor", "prepare", "copy_from_query"}
)
# Upper case only, as the code base writes SQL: prose in messages does not trip it.
SQL_WORDS: Final = re.compile(
    r"\b(SELECT|INSERT INTO|UPDATE|DELETE FROM|CREATE|ALTER|DROP|TRUNCATE|COPY|GRANT|WHERE|FROM|JOIN|AND)\b"
)


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
    """ruff's S608 is silenced only on statements reviewed (``REVIEWED``) or built of literals only."""
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
