#!/usr/bin/env python3
"""The local stack's settings, its checks, and `make doctor`. Standard library only: it runs on the system
python3 before the venv exists, for deploy/local/*.sh and the Makefile.

  stack.py env             `export NAME=value` lines of the stack's settings (the scripts eval them)
  stack.py run CMD...      run CMD with those settings in its environment (the Makefile's demo, tests...)
  stack.py save            record them in var/stack.env: later commands in this checkout use the same ports
  stack.py describe        one line: where the settings come from and the ports
  stack.py port NAME [--own]  is NAME's port (kafka, controller, postgres, ingest, reconcile, publish, ecsim)
                           free? exit 0 free, 3 a server of the right kind that is no checkout's answers (use it),
                           4 another checkout's broker or cluster (shared by tests and benchmarks; --own: taken),
                           1 taken (one line on stderr: by what, and the setting that moves it)
  stack.py answers kafka|postgres   exit 0 when a broker / a server answers at the configured address
  stack.py pg-dir [--say]  where the private Postgres cluster lives (see choose_pg_dir); --say explains a move
  stack.py check WHAT...   python, java, maven, postgres-binaries, disk-kafka, disk-postgres: one line per
                           problem (cause and fix), exit 1 if any
  stack.py diagnose pip|maven  after a failed download: the cause in one line (no network to the registry?)
  stack.py doctor          every check, changing nothing; exit 1 when something blocks `make run`/`make test`

The settings (README, "Two stacks side by side"): STACK_PORT_OFFSET moves every port at once (Kafka 9092 and
its controller 9093, Postgres 5432, ingest 8081, reconcile 8082, publish 8083, ecsim 8090); the settings
KAFKA_BOOTSTRAP_SERVERS, KAFKA_CONTROLLER_PORT, DATABASE_URL, INGEST_HTTP_PORT, RECONCILE_HTTP_PORT,
PUBLISH_HTTP_PORT, ECSIM_HTTP_PORT and ECSIM_URL move one each. When the environment sets none of them,
var/stack.env (written by `make up`) does; when it sets any, the environment alone decides.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from typing import Dict, List, Optional, Tuple

# The modules beside this script, whether it runs as a file or is loaded from its path (the tests). What
# they define is re-exported below: the scripts and the tests know this one module.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from stack_settings import (
    BASE_PORTS,
    DB_CREDENTIALS,
    HERE,
    HTTP_SETTINGS,
    KAFKA_JARS_MB,
    LOCAL_HOSTS,
    MAVEN_CENTRAL_URL,
    MIN_FREE_MB,
    MIN_JAVA,
    MIN_MAVEN,
    MIN_PYTHON,
    PYPI_URL,
    Port,
    ROOT,
    SIDE_BY_SIDE,
    STACK_VARS,
    StackError,
    VENV_MB,
    _int_setting,
    describe,
    kafka_address,
    postgres_address,
    read_saved,
    resolve,
    settings,
    stack_ports,
    var_dir,
)  # noqa: F401  (re-exported: the tests and scripts use stack.py)
from stack_ports import (
    Holder,
    Verdict,
    _holder,
    _recv,
    _stack_process_on,
    bindable,
    bridge_role,
    check_port,
    checkout_of,
    classify,
    component,
    holder_of,
    parse_proc_net_tcp,
    role_ports,
    speaks_kafka,
    speaks_postgres,
    suggest_offset,
)  # noqa: F401  (re-exported: the tests and scripts use stack.py)
from stack_checks import (
    _existing,
    _output,
    _postgres_user,
    choose_pg_dir,
    disk_problem,
    explain_pg_place,
    first_blocking_dir,
    free_mb,
    hash_of,
    java_problem,
    kafka_libs_cached,
    maven_problem,
    maven_url,
    min_free_mb,
    parse_java_major,
    parse_maven_version,
    pg_bindir,
    pg_place,
    postgres_install_problem,
    pypi_url,
    python_problem,
    reachable,
    registry_problem,
)  # noqa: F401  (re-exported: the tests and scripts use stack.py)

# ---------------------------------------------------------------------------------------------- commands


def check(what: str, environ: Dict[str, str]) -> Optional[str]:
    if what == "python":
        import importlib.util

        venv = os.path.join(ROOT, ".venv", "bin", "pip")
        return python_problem(
            (sys.version_info[0], sys.version_info[1]),
            importlib.util.find_spec("ensurepip") is not None,
            os.path.exists(venv),
        )
    if what == "java":
        return java_problem(_output(["java", "-version"]))
    if what == "maven":
        return maven_problem(_output(["mvn", "-v"]))
    if what == "postgres-binaries":
        return postgres_install_problem(
            pg_bindir(), os.geteuid() == 0, shutil.which("sudo") is not None, shutil.which("apt-get") is not None
        )
    if what == "disk-kafka":
        path = os.path.join(var_dir(environ), "kafka")
        return disk_problem("kafka", path, free_mb(path), min_free_mb(environ))
    if what == "disk-postgres":
        path = pg_place(environ)[0]
        return disk_problem("postgres", path, free_mb(path), min_free_mb(environ))
    raise StackError(f"unknown check {what!r}")


def doctor(environ: Dict[str, str]) -> int:
    """Every check; prints one line each (ok, note, FAIL with the fix). Changes nothing."""
    lines: List[Tuple[str, str]] = []
    blocked = False

    def report(problem: Optional[str], ok: str) -> None:
        nonlocal blocked
        if problem:
            blocked = True
            lines.append(("FAIL", problem))
        else:
            lines.append(("ok", ok))

    try:
        values, source = settings(environ)
    except StackError as e:
        print(f"FAIL  settings: {e}")
        return 1
    var = var_dir(environ)
    lines.append(("ok", "stack " + describe(values, source).split(None, 1)[1]))

    report(check("python", environ), f"python {sys.version.split()[0]} ({sys.executable}), venv module available")
    java_text = _output(["java", "-version"])
    major = parse_java_major(java_text or "")
    report(java_problem(java_text), f"java {major} (the broker needs {MIN_JAVA}+)")
    cached, libs = kafka_libs_cached(environ)
    mvn_problem = maven_problem(_output(["mvn", "-v"]))
    if cached:
        lines.append(("ok", f"kafka's jars are in {libs} (Maven is not needed)"))
    else:
        report(mvn_problem, f"maven (fetches the broker's jars into {libs} on first use)")

    pg_host, pg_port = postgres_address(values["DATABASE_URL"])
    local_pg = pg_host in LOCAL_HOSTS
    bindir = pg_bindir()
    if bindir:
        lines.append(("ok", f"postgresql server binaries in {bindir}"))
    elif local_pg:
        problem = check("postgres-binaries", environ)
        how = "as root" if os.geteuid() == 0 else "with sudo"
        report(problem, f"postgresql is not installed: the first `make up` installs Debian's postgresql ({how})")
    if os.geteuid() == 0 and local_pg:
        if not shutil.which("runuser"):
            report("postgres: as root the cluster runs as the postgres user through runuser: install util-linux", "")
        place, moved, blocking = pg_place(environ)
        if _postgres_user() is None:
            lines.append(("note", "postgres: where the private cluster lives is decided once PostgreSQL is installed"))
        elif moved:
            lines.append(("note", "postgres: " + explain_pg_place(place, blocking)))
        else:
            lines.append(("ok", f"postgres: the private cluster lives in {place}"))
    for tool, why, package in (
        ("curl", "services.sh waits for /readyz with it", "curl"),
        ("setsid", "the scripts start the processes with it", "util-linux"),
    ):
        if not shutil.which(tool):
            report(f"{tool}: not on PATH ({why}): install it (Debian: apt-get install {package})", "")

    for p in stack_ports(values):
        v = check_port(p, var)
        if v.kind == "shared":
            report(f"{component(p.name)}: {v.message} (`make test` may share it, `make up` may not)", "")
        elif v.kind == "taken":
            report(f"{component(p.name)}: {v.message}", "")
        else:
            lines.append(("ok", f"{component(p.name)}: {v.message}"))

    need = min_free_mb(environ)
    venv_missing = not os.path.exists(os.path.join(ROOT, ".venv", "bin", "python"))
    checkout_need = need + (VENV_MB if venv_missing else 0)
    report(
        disk_problem("disk", var, free_mb(var), checkout_need),
        f"disk: {free_mb(var) / 1024:.1f} GB free for var/ ({checkout_need / 1024:.1f} GB needed)",
    )
    if not cached:
        cache = os.path.dirname(os.path.dirname(libs))
        report(
            disk_problem("disk", cache, free_mb(cache), KAFKA_JARS_MB),
            f"disk: {free_mb(cache) / 1024:.1f} GB free for Kafka's jars ({KAFKA_JARS_MB} MB needed, once)",
        )
    if os.geteuid() == 0 and local_pg:
        place = pg_place(environ)[0]
        if os.stat(_existing(place)).st_dev != os.stat(_existing(var)).st_dev:
            report(
                disk_problem("disk", place, free_mb(place), need),
                f"disk: {free_mb(place) / 1024:.1f} GB free for Postgres's cluster",
            )

    for what, url, needed in (
        ("pip", pypi_url(environ), venv_missing),
        ("maven", maven_url(environ), not cached),
    ):
        ok = reachable(url)
        if ok:
            lines.append(("ok", f"network: {url} answers"))
        elif needed:
            report(registry_problem(what, url, ok), "")
        else:
            lines.append(("note", f"network: {url} does not answer (not needed: already installed)"))

    for mark, text in lines:
        if text:
            print(f"{mark:<5} {text}")
    print("doctor: " + ("something blocks (FAIL above)" if blocked else "ready for make run / make test"))
    return 1 if blocked else 0


def main(argv: List[str]) -> int:
    environ = dict(os.environ)
    cmd, args = (argv[0], argv[1:]) if argv else ("", [])
    try:
        if cmd == "env":
            values, _ = settings(environ)
            for name, value in values.items():
                print(f"export {name}={shlex.quote(value)}")
            return 0
        if cmd == "run":
            values, _ = settings(environ)
            if not args:
                raise StackError("usage: stack.py run CMD...")
            try:
                os.execvpe(args[0], args, {**environ, **values})
            except OSError as e:
                raise StackError(f"cannot run {args[0]}: {e.strerror}") from None
        if cmd == "save":
            values, _ = settings(environ)
            path = os.path.join(var_dir(environ), "stack.env")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write("# The settings `make up` started this checkout's stack with; later make commands use them\n")
                f.write("# unless the environment sets any of them. `make clean` forgets them.\n")
                f.writelines(f"{name}={value}\n" for name, value in values.items())
            return 0
        if cmd == "describe":
            print(describe(*settings(environ)))
            return 0
        if cmd == "port":
            values, _ = settings(environ)
            ports = {p.name: p for p in stack_ports(values)}
            own = "--own" in args  # services: the broker and the server must be no other checkout's
            args = [a for a in args if a != "--own"]
            if len(args) != 1 or args[0] not in ports:
                raise StackError(f"usage: stack.py port {'|'.join(ports)} [--own]")
            verdict = check_port(ports[args[0]], var_dir(environ))
            if verdict.kind == "free" or (own and verdict.kind == "ours"):
                return 0
            if verdict.kind == "external":
                return 3
            message = verdict.message
            if verdict.kind == "shared" and own:
                message += "; this checkout's services would consume that stack's topics and share its database"
            elif verdict.kind == "shared":
                print(
                    f"{component(args[0])}: 127.0.0.1:{ports[args[0]].port} is {verdict.by}: sharing it "
                    "(tests and benchmarks may; `make up` needs its own: STACK_PORT_OFFSET)"
                )
                return 4
            if verdict.kind == "ours":  # its pid file is gone (the scripts check theirs first)
                pid = re.findall(r"pid (\d+)", message)[-1]
                message += f", which var/run does not record: stop it (kill {pid}), then start again"
            print(f"{component(args[0])}: {message}", file=sys.stderr)
            return 1
        if cmd == "answers":
            values, _ = settings(environ)
            ports = {p.name: p for p in stack_ports(values)}
            if args not in (["kafka"], ["postgres"]):
                raise StackError("usage: stack.py answers kafka|postgres")
            p = ports[args[0]]
            return 0 if (speaks_kafka if args[0] == "kafka" else speaks_postgres)(p.host, p.port) else 1
        if cmd == "pg-dir":
            place, moved, blocking = pg_place(environ)
            if moved and "--say" in args:
                print("postgres: " + explain_pg_place(place, blocking), file=sys.stderr)
            print(place)
            return 0
        if cmd == "check":
            problems = [p for p in (check(w, environ) for w in args) if p]
            for p in problems:
                print(p, file=sys.stderr)
            return 1 if problems else 0
        if cmd == "diagnose":
            if args not in (["pip"], ["maven"]):
                raise StackError("usage: stack.py diagnose pip|maven")
            url = pypi_url(environ) if args[0] == "pip" else maven_url(environ)
            problem = registry_problem(args[0], url, reachable(url))
            if problem is None:
                what = "venv: pip could not install the packages" if args[0] == "pip" else "kafka: mvn failed"
                problem = f"{what}, though {url} answers: see the lines above"
            print(problem, file=sys.stderr)
            return 1
        if cmd == "doctor":
            return doctor(environ)
    except StackError as e:
        print(f"stack: {e}", file=sys.stderr)
        return 2
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
