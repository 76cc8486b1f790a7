"""The runtime image carries the bridge and nothing of its test rig, and still imports completely (static).

No Docker engine is needed: the test reads the ``Dockerfile`` (its stages, ``WORKDIR``, ``ARG``, ``COPY``
from the build context or from another stage, and the ``rm`` commands of ``RUN``) and ``.dockerignore``,
and works out which files of the repository each stage holds under ``/app``. ``pip install .`` installs
those same files, so what ships is what is copied. Then:

* the runtime stage (the last one, so what ``docker build .`` builds) holds none of ``TEST_RIG``: ecsim,
  the synthetic population and the schema/AsyncAPI exporters; the dev stage holds them;
* every module of the runtime image imports (at module level, as the AST says, ``if TYPE_CHECKING:``
  blocks left out) only modules the image holds, hence transitively too: a bridge module that imported
  ``shared.population`` at its top would fail here (test_an_eager_import_of_the_test_rig_fails shows it);
* docker-compose.yml builds ecsim from the dev target and the bridge's services from the runtime target;
* the CLI, which the runtime image ships, answers ``audience-bridge demo`` without the test rig with one
  line and exit code 2.
"""

from __future__ import annotations

import ast
import functools
import posixpath
import re
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Final

import pytest
import yaml

from shared.settings import REPO_ROOT

DOCKERFILE: Final = REPO_ROOT / "Dockerfile"
DOCKERIGNORE: Final = REPO_ROOT / ".dockerignore"
COMPOSE: Final = REPO_ROOT / "docker-compose.yml"
FIRST_PARTY: Final = ("services", "shared")
BRIDGE_SERVICES: Final = ("ingest", "reconcile", "publish")
# What the runtime image must leave out: the platform simulator, the population generator, the exporters.
TEST_RIG: Final = (
    "services/ecsim/",
    "shared/population.py",
    "shared/schema_export.py",
    "shared/asyncapi_export.py",
    "shared/asyncapi_catalog.py",
)
# What the runtime image must hold: each service's and the CLI's entry point, and the migrations.
ENTRY_POINTS: Final = tuple(f"services/{name}/__main__.py" for name in (*BRIDGE_SERVICES, "cli"))


# --- the Dockerfile, read --------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, the rest of the line)


def parse_dockerfile(text: str) -> list[Stage]:
    """The stages and their instructions (continuation lines joined, comments dropped)."""
    stages: list[Stage] = []
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=words[0]))
        else:
            stages[-1].instructions.append((keyword, rest))
    return stages


def _pattern(glob: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match plus ``**``) as a regular expression."""
    glob = glob.strip().lstrip("/").removeprefix("./").rstrip("/")
    out, i = "", 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif glob.startswith("**", i):
            out, i = out + ".*", i + 2
        elif glob[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif glob[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(glob[i]), i + 1
    return re.compile(out)


@functools.cache
def _ignore_rules() -> tuple[tuple[bool, re.Pattern[str]], ...]:
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), _pattern(line.removeprefix("!"))))
    return tuple(rules)


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps a repository path out of the build context (a matching folder: all in it)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    out = False
    for keep, rule in _ignore_rules():
        if any(rule.fullmatch(p) for p in prefixes):
            out = not keep
    return out


def context_files(source: str) -> dict[str, str]:
    """The build context's files under a source of ``COPY``: relative path inside it -> repository path."""
    root = REPO_ROOT / source
    if root.is_file():
        return {"": source} if not ignored(source) else {}
    found = {}
    for file in sorted(root.rglob("*")):
        rel = file.relative_to(REPO_ROOT).as_posix()
        if file.is_file() and not ignored(rel):
            found[file.relative_to(root).as_posix()] = rel
    return found


@dataclass
class Image:
    """A stage's files, as container path -> repository path, and its working directory."""

    files: dict[str, str]
    workdir: str = "/"


def _copy(image: Image, sources: dict[str, dict[str, str]], dest: str) -> None:
    """COPY's rules: a folder's contents go into ``dest``; a file goes to ``dest`` (into it if it ends with /)."""
    target = posixpath.normpath(posixpath.join(image.workdir, dest))
    for src, files in sources.items():
        for rel, repo_path in files.items():
            if rel:
                image.files[posixpath.join(target, rel)] = repo_path
            elif dest.endswith("/") or len(sources) > 1:
                image.files[posixpath.join(target, posixpath.basename(src))] = repo_path
            else:
                image.files[target] = repo_path


def _remove(image: Image, command: list[str]) -> None:
    """``rm [-r] [-f] paths...``: the paths (globs too), relative to the working directory. Without ``-f``,
    a relative path that names nothing fails the build, so it fails here too (files a RUN made itself, such
    as /tmp/..., are not tracked)."""
    force = any(arg.startswith("-") and "f" in arg for arg in command[1:])
    for arg in command[1:]:
        if arg.startswith("-"):
            continue
        gone = posixpath.normpath(posixpath.join(image.workdir, arg))
        matched = [p for p in image.files if fnmatchcase(p, gone) or p.startswith(gone.rstrip("/") + "/")]
        assert matched or force or arg.startswith("/"), f"RUN rm {arg}: no such file, the build would fail"
        for path in matched:
            del image.files[path]


def _commands(shell: str) -> Iterator[list[str]]:
    """A RUN line's simple commands, split at ``&&``, ``||``, ``;``, pipes and redirections (quotes kept)."""
    lexer = shlex.shlex(shell, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    command: list[str] = []
    for token in lexer:
        if token and set(token) <= set("();<>|&"):
            yield command
            command = []
        else:
            command.append(token)
    yield command


def _expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


@functools.cache
def stages() -> tuple[Stage, ...]:
    return tuple(parse_dockerfile(DOCKERFILE.read_text()))


@functools.cache
def image(name: str) -> Image:
    """What a stage holds, worked out from its instructions (and its base stage's)."""
    by_name = {s.name: s for s in stages()}
    stage = by_name[name]
    if stage.base in by_name:
        base = image(stage.base)
        built = Image(dict(base.files), base.workdir)
    else:
        built = Image({})
    args: dict[str, str] = {}
    for keyword, rest in stage.instructions:
        if keyword == "WORKDIR":
            built.workdir = posixpath.join(built.workdir, rest)
        elif keyword == "ARG":
            name_, _, default = rest.partition("=")
            args[name_] = shlex.split(default)[0] if default else ""
        elif keyword == "COPY":
            words = shlex.split(rest)
            flags = {w.split("=", 1)[0]: w.partition("=")[2] for w in words if w.startswith("--")}
            *srcs, dest = [w for w in words if not w.startswith("--")]
            if "--from" in flags:
                other = image(flags["--from"]).files
                sources = {}
                for src in srcs:
                    root = posixpath.normpath(src)
                    sources[src] = {
                        posixpath.relpath(p, root) if p != root else "": repo
                        for p, repo in other.items()
                        if p == root or p.startswith(root + "/")
                    }
            else:
                sources = {src: context_files(src) for src in srcs}
            assert all(sources.values()), f"{name}: COPY {rest}: nothing to copy"
            _copy(built, sources, dest)
        elif keyword == "RUN":
            for command in _commands(_expand(rest, args)):
                if command and command[0] == "rm":
                    _remove(built, command)
    return built


def shipped(name: str) -> set[str]:
    """The repository's files a stage holds."""
    return set(image(name).files.values())


# --- module-level imports -----------------------------------------------------------------------------


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements that run when a module is imported: its top level, class bodies, if/try/with blocks
    (not ``if TYPE_CHECKING:``), not function bodies."""
    for node in body:
        yield node
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _import_time_statements(node.body)
            yield from _import_time_statements(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _import_time_statements(block)
        elif isinstance(node, ast.With | ast.ClassDef):
            yield from _import_time_statements(node.body)


def imported_names(path: str, source: str) -> Iterator[tuple[str, int]]:
    """Dotted names a module imports when it is imported; ``from a import b`` gives ``a`` and ``a.b``."""
    package = path.removesuffix(".py").split("/")
    package = package[:-1]  # a module's package; a package's __init__ is in its own package, which is this too
    for node in _import_time_statements(ast.parse(source).body):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            yield module, node.lineno
            for alias in node.names:
                if alias.name != "*":
                    yield f"{module}.{alias.name}", node.lineno


def files_of(name: str, repo: set[str]) -> list[str] | None:
    """The repository files importing a dotted name runs (its packages' ``__init__`` too); None if it is not
    a module of the repository (a third-party module, or an attribute ``from a import b`` took)."""
    parts = name.split(".")
    if parts[0] not in FIRST_PARTY:
        return []
    needed = []
    for n in range(1, len(parts) + 1):
        stem = "/".join(parts[:n])
        if f"{stem}/__init__.py" in repo:
            needed.append(f"{stem}/__init__.py")
        elif f"{stem}.py" in repo and n == len(parts):
            needed.append(f"{stem}.py")
        else:
            return None
    return needed


def missing_imports(sources: dict[str, str], ships: set[str]) -> list[str]:
    """Each import of a shipped module that needs a repository file the image does not hold."""
    repo = set(sources)
    problems = []
    for path in sorted(ships & repo):
        if not path.endswith(".py"):
            continue
        for name, line in imported_names(path, sources[path]):
            needed = files_of(name, repo)
            if needed is None:
                if "." not in name or files_of(name.rsplit(".", 1)[0], repo) is None:
                    problems.append(f"{path}:{line} imports {name}, which is not in the repository")
                continue  # ``from a import b`` where b is a name of a, not a module
            problems += [
                f"{path}:{line} imports {name}, which needs {f}: not in the image" for f in needed if f not in ships
            ]
    return problems


def reachable(sources: dict[str, str], start: tuple[str, ...]) -> dict[str, str | None]:
    """The repository modules importing ``start`` runs, each with the module that first imports it."""
    repo = set(sources)
    seen: dict[str, str | None] = dict.fromkeys(start)
    todo = list(start)
    while todo:
        path = todo.pop()
        for name, _ in imported_names(path, sources[path]):
            for file in files_of(name, repo) or []:
                if file not in seen:
                    seen[file] = path
                    todo.append(file)
    return seen


@functools.cache
def repository_sources() -> dict[str, str]:
    return {
        file.relative_to(REPO_ROOT).as_posix(): file.read_text(encoding="utf-8")
        for top in FIRST_PARTY
        for file in sorted((REPO_ROOT / top).rglob("*.py"))
        if "__pycache__" not in file.parts
    }


def _in_test_rig(path: str) -> bool:
    return any(path == rig or (rig.endswith("/") and path.startswith(rig)) for rig in TEST_RIG)


# --- the runtime image -------------------------------------------------------------------------------------


def test_runtime_is_the_default_target_and_dev_a_stage() -> None:
    names = [s.name for s in stages()]
    assert names[-1] == "runtime", "the runtime stage must be the last one: `docker build .` builds it"
    assert "dev" in names


def test_the_test_rig_stays_out_of_the_runtime_image() -> None:
    runtime, dev = shipped("runtime"), shipped("dev")
    rig = {p for p in repository_sources() if _in_test_rig(p)}
    assert {"services/ecsim/__main__.py", "shared/population.py"} <= rig, "TEST_RIG names nothing"
    assert not rig & runtime, f"the runtime image carries the test rig: {sorted(rig & runtime)}"
    assert rig <= dev, f"the dev image lacks: {sorted(rig - dev)}"


def test_the_runtime_image_carries_the_bridge() -> None:
    runtime = shipped("runtime")
    assert set(ENTRY_POINTS) <= runtime
    migrations = {p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "schemas" / "sql").glob("*.sql")}
    assert migrations <= runtime, "the services apply the migrations at start"
    assert "pyproject.toml" in runtime
    assert not any(p.startswith("tests/") for p in runtime)


def test_every_module_of_the_runtime_image_imports_only_what_it_holds() -> None:
    problems = missing_imports(repository_sources(), shipped("runtime"))
    assert not problems, "the runtime image would fail to import:\n" + "\n".join(problems)


def test_the_entry_points_reach_only_what_the_runtime_image_holds() -> None:
    runtime = shipped("runtime")
    paths = reachable(repository_sources(), ENTRY_POINTS)
    for path, by in paths.items():
        chain = [path]
        while by is not None:
            chain.append(by)
            by = paths[by]
        assert path in runtime, f"{' <- '.join(chain)}: not in the runtime image"


def test_the_dev_image_runs_ecsim_and_the_generators() -> None:
    dev = shipped("dev")
    starts = ("services/ecsim/__main__.py", "shared/schema_export.py", "shared/asyncapi_export.py")
    assert not missing_imports(repository_sources(), dev)
    assert set(reachable(repository_sources(), starts)) <= dev


def test_an_eager_import_of_the_test_rig_fails() -> None:
    """What the checks above are for: a bridge module importing the test rig at its top is caught."""
    sources, runtime = dict(repository_sources()), shipped("runtime")
    assert not missing_imports(sources, runtime)
    for statement in ("import shared.population", "from shared.population import Population"):
        changed = dict(sources)
        changed["services/reconcile/app.py"] = statement + "\n" + sources["services/reconcile/app.py"]
        (problem,) = missing_imports(changed, runtime)
        assert problem.startswith("services/reconcile/app.py:1 imports shared.population")
    # Inside a function, or for type checkers only, it is not imported with the module: fine.
    lazy = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import shared.population\n"
    changed = dict(sources, **{"services/reconcile/app.py": lazy + "def f():\n    import services.ecsim.app\n"})
    assert not missing_imports(changed, runtime)


def test_healthchecks_import_only_what_their_image_holds() -> None:
    """``python -c`` one-liners (the Dockerfile's HEALTHCHECK, compose's) run in the image: same rule."""
    commands = re.findall(r'python -c "([^"]+)"', DOCKERFILE.read_text())
    for service in BRIDGE_SERVICES:
        test = _compose()["services"][service]["healthcheck"]["test"]
        commands.append(test[test.index("-c") + 1])
    assert commands
    runtime, repo = shipped("runtime"), set(repository_sources())
    for code in commands:
        for name, _ in imported_names("healthcheck.py", code):
            assert set(files_of(name, repo) or []) <= runtime, f"{code!r} imports {name}"


# --- compose -----------------------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_compose_builds_ecsim_from_dev_and_the_bridge_from_runtime() -> None:
    services = _compose()["services"]
    assert services["ecsim"]["build"]["target"] == "dev"
    for name in BRIDGE_SERVICES:
        assert services[name]["build"]["target"] == "runtime"
        # Not one tag for two images: whichever compose builds last would win it.
        assert services[name]["image"] != services["ecsim"]["image"]


# --- the CLI without the test rig ------------------------------------------------------------------------


def test_the_demo_without_the_test_rig_exits_2_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from services.cli.demo_setup import NEEDS_DEV_IMAGE
    from services.cli.main import app

    # As in the runtime image: importing shared.population fails.
    monkeypatch.setitem(sys.modules, "shared.population", None)
    result = CliRunner().invoke(app, ["demo", "--timeout", "1"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [f"error: {NEEDS_DEV_IMAGE}"]
    # The other commands never needed it.
    assert CliRunner().invoke(app, ["--help"]).exit_code == 0


def test_the_repository_is_scanned() -> None:
    """The helpers above read what Docker reads (guards against a parser that silently finds nothing)."""
    assert len(shipped("runtime")) > 50
    assert ignored("tests/unit/test_runtime_image.py")
    assert ignored("shared/__pycache__/x.pyc")
    assert not ignored("shared/settings.py")
