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

import glob
import hashlib
import os
import re
import shlex
import shutil
import socket
import stat
import struct
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

BASE_PORTS = {"kafka": 9092, "postgres": 5432, "ingest": 8081, "reconcile": 8082, "publish": 8083, "ecsim": 8090}
HTTP_SETTINGS = {
    "ingest": "INGEST_HTTP_PORT",
    "reconcile": "RECONCILE_HTTP_PORT",
    "publish": "PUBLISH_HTTP_PORT",
    "ecsim": "ECSIM_HTTP_PORT",
}
STACK_VARS = (
    "STACK_PORT_OFFSET",
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_CONTROLLER_PORT",
    "DATABASE_URL",
    "INGEST_HTTP_PORT",
    "RECONCILE_HTTP_PORT",
    "PUBLISH_HTTP_PORT",
    "ECSIM_HTTP_PORT",
    "ECSIM_URL",
)
DB_CREDENTIALS = "audience_bridge:audience_bridge"
SIDE_BY_SIDE = 'README "Two stacks side by side"'
MIN_PYTHON = (3, 11)
MIN_JAVA = 17
MIN_MAVEN = (3, 6)
MIN_FREE_MB = 2048  # Kafka's and Postgres's data for the demo, the tests and a chaos run, with WAL to spare
VENV_MB = 700
KAFKA_JARS_MB = 150
PYPI_URL = "https://pypi.org/simple/"
MAVEN_CENTRAL_URL = "https://repo.maven.apache.org/maven2/"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class StackError(Exception):
    """A setting that cannot work: the message is the one line to print."""


# ---------------------------------------------------------------------------------------------- settings


def var_dir(environ: Dict[str, str]) -> str:
    return os.path.realpath(environ.get("AB_VAR_DIR") or os.path.join(ROOT, "var"))


def read_saved(path: str) -> Dict[str, str]:
    """NAME=value lines of var/stack.env (comments and unknown names ignored)."""
    saved: Dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                name, sep, value = line.strip().partition("=")
                if sep and name in STACK_VARS:
                    saved[name] = value
    except OSError:
        pass
    return saved


def _int_setting(name: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise StackError(f"{name}={value!r} is not a whole number") from None
    if not low <= number <= high:
        raise StackError(f"{name}={value} is out of range ({low}-{high})")
    return number


def kafka_address(bootstrap: str) -> Tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep or not host:
        raise StackError(f"KAFKA_BOOTSTRAP_SERVERS={bootstrap!r} is not of the form host:port[,host:port...]")
    return host.strip("[]"), _int_setting("KAFKA_BOOTSTRAP_SERVERS port", port, 1, 65535)


def postgres_address(url: str) -> Tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
        raise StackError("DATABASE_URL is not of the form postgresql://user[:password]@host[:port]/dbname")
    try:
        port = parts.port or 5432
    except ValueError:
        raise StackError("DATABASE_URL has an invalid port") from None
    return parts.hostname, port


def resolve(environ: Dict[str, str], saved: Dict[str, str]) -> Tuple[Dict[str, str], str]:
    """The stack's settings and where they came from ("environment", "var/stack.env" or "defaults").

    Explicit settings win; STACK_PORT_OFFSET moves the defaults of every port; ECSIM_URL follows ecsim's port
    and the controller the broker's (+1)."""
    given = {k: environ[k] for k in STACK_VARS if environ.get(k)}
    source = "environment"
    if not given:
        given, source = dict(saved), ("var/stack.env" if saved else "defaults")
    offset = _int_setting("STACK_PORT_OFFSET", given.get("STACK_PORT_OFFSET", "0"), 0, 55000)
    values = {"STACK_PORT_OFFSET": str(offset)}
    values["KAFKA_BOOTSTRAP_SERVERS"] = given.get("KAFKA_BOOTSTRAP_SERVERS") or (
        f"127.0.0.1:{BASE_PORTS['kafka'] + offset}"
    )
    _, kafka_port = kafka_address(values["KAFKA_BOOTSTRAP_SERVERS"])
    controller = given.get("KAFKA_CONTROLLER_PORT") or str(kafka_port + 1)
    values["KAFKA_CONTROLLER_PORT"] = str(_int_setting("KAFKA_CONTROLLER_PORT", controller, 1, 65535))
    values["DATABASE_URL"] = given.get("DATABASE_URL") or (
        f"postgresql://{DB_CREDENTIALS}@127.0.0.1:{BASE_PORTS['postgres'] + offset}/audience_bridge"
    )
    postgres_address(values["DATABASE_URL"])
    for name, setting in HTTP_SETTINGS.items():
        values[setting] = str(_int_setting(setting, given.get(setting) or str(BASE_PORTS[name] + offset), 1, 65535))
    values["ECSIM_URL"] = given.get("ECSIM_URL") or f"http://127.0.0.1:{values['ECSIM_HTTP_PORT']}"
    return values, source


def settings(environ: Dict[str, str]) -> Tuple[Dict[str, str], str]:
    return resolve(environ, read_saved(os.path.join(var_dir(environ), "stack.env")))


class Port(NamedTuple):
    name: str  # kafka, controller, postgres, ingest, reconcile, publish, ecsim
    host: str
    port: int
    setting: str


def stack_ports(values: Dict[str, str]) -> List[Port]:
    kafka_host, kafka_port = kafka_address(values["KAFKA_BOOTSTRAP_SERVERS"])
    pg_host, pg_port = postgres_address(values["DATABASE_URL"])
    ports = [
        Port("kafka", kafka_host, kafka_port, "KAFKA_BOOTSTRAP_SERVERS"),
        Port("controller", "127.0.0.1", int(values["KAFKA_CONTROLLER_PORT"]), "KAFKA_CONTROLLER_PORT"),
        Port("postgres", pg_host, pg_port, "DATABASE_URL"),
    ]
    ports += [Port(name, "127.0.0.1", int(values[s]), s) for name, s in HTTP_SETTINGS.items()]
    return ports


def describe(values: Dict[str, str], source: str) -> str:
    p = {x.name: x for x in stack_ports(values)}
    offset = values["STACK_PORT_OFFSET"]
    where = source + (f", STACK_PORT_OFFSET={offset}" if offset != "0" else "")
    return (
        f"stack      ports ({where}): kafka {p['kafka'].host}:{p['kafka'].port} (controller "
        f"{p['controller'].port}), postgres {p['postgres'].host}:{p['postgres'].port}, ingest {p['ingest'].port}, "
        f"reconcile {p['reconcile'].port}, publish {p['publish'].port}, ecsim {p['ecsim'].port}"
    )


# ---------------------------------------------------------------------------------------------- ports


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    """Could a server bind host:port now (as servers do, with SO_REUSEADDR)?"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def parse_proc_net_tcp(text: str, port: int) -> List[int]:
    """Socket inodes listening on `port` in a /proc/net/tcp{,6} table."""
    inodes = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != "0A":  # 0A: LISTEN
            continue
        if int(fields[1].rsplit(":", 1)[1], 16) == port:
            inodes.append(int(fields[9]))
    return inodes


class Holder(NamedTuple):
    pid: int
    name: str
    cmdline: List[str]
    cwd: Optional[str]


def holder_of(port: int) -> Optional[Holder]:
    """The process listening on `port`, when /proc lets us see it (all of them as root)."""
    inodes: List[int] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                inodes += parse_proc_net_tcp(f.read(), port)
        except OSError:
            continue
    wanted = {f"socket:[{i}]" for i in inodes if i}
    if not wanted:
        return None
    hidden = False
    for pid_dir in glob.glob("/proc/[0-9]*"):
        try:
            fds = os.listdir(pid_dir + "/fd")
        except OSError:
            hidden = True  # another user's process (not root): its sockets cannot be seen
            continue
        for fd in fds:
            try:
                if os.readlink(f"{pid_dir}/fd/{fd}") in wanted:
                    return _holder(int(pid_dir.rsplit("/", 1)[1]))
            except OSError:
                continue
    return _stack_process_on(port) if hidden else None


def _stack_process_on(port: int) -> Optional[Holder]:
    """Another user's checkout's process that says it serves `port` (its var/stack.env, or the broker's
    server.properties): command lines are public where sockets are not."""
    for pid_dir in glob.glob("/proc/[0-9]*"):
        holder = _holder(int(pid_dir.rsplit("/", 1)[1]))
        role = bridge_role(holder)
        if role and port in role_ports(role):
            return holder
    return None


def role_ports(role: Tuple[str, str]) -> List[int]:
    """The ports a checkout's process (bridge_role) serves, as far as its files tell."""
    what, var = role
    ports: List[int] = []
    saved = read_saved(os.path.join(var, "stack.env"))
    if saved:
        try:
            values, _ = resolve({}, saved)
        except StackError:
            values = {}
        names = {"Kafka broker": ("kafka", "controller"), "private Postgres cluster": ("postgres",)}.get(
            what, (what.split()[0],)
        )
        ports += [p.port for p in stack_ports(values) if p.name in names] if values else []
    if what == "Kafka broker":
        try:
            with open(os.path.join(var, "kafka", "server.properties"), encoding="utf-8") as f:
                listeners = [line for line in f if line.startswith("listeners=")]
            ports += [int(p) for p in re.findall(r":(\d+)(?:,|$)", listeners[0].strip())] if listeners else []
        except OSError:
            pass
    return ports


def _holder(pid: int) -> Holder:
    def read(name: str) -> str:
        try:
            with open(f"/proc/{pid}/{name}", "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    try:
        cwd: Optional[str] = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = None
    return Holder(pid, read("comm").strip() or "?", [a for a in read("cmdline").split("\0") if a], cwd)


def bridge_role(holder: Holder) -> Optional[Tuple[str, str]]:
    """(what, its var/ directory) when the process is part of some checkout's local stack."""
    args = holder.cmdline
    if "kafka.Kafka" in args and args[-1].endswith("/kafka/server.properties"):
        return "Kafka broker", os.path.realpath(os.path.dirname(os.path.dirname(args[-1])))
    if "-D" in args and os.path.basename(args[0]) in ("postgres", "postmaster") and args.index("-D") + 1 < len(args):
        data = args[args.index("-D") + 1].rstrip("/")
        marker = os.path.join(os.path.dirname(data), "checkout")
        if "/audience-bridge/" in data:
            try:
                with open(marker, encoding="utf-8") as f:
                    return "private Postgres cluster", f.read().strip()
            except OSError:
                return "private Postgres cluster", os.path.dirname(data)
        if data.endswith("/postgres/data"):
            return "private Postgres cluster", os.path.realpath(os.path.dirname(os.path.dirname(data)))
    if "-m" in args and args.index("-m") + 1 < len(args):
        module = args[args.index("-m") + 1]
        if module.startswith("services.") and holder.cwd:
            return module.split(".", 1)[1] + " service", os.path.realpath(os.path.join(holder.cwd, "var"))
    return None


def checkout_of(var: str) -> str:
    return os.path.dirname(var) if os.path.basename(var) == "var" else var


class Verdict(NamedTuple):
    """kind: free; ours (this checkout's process); external (a broker or server no checkout started: used);
    shared (another checkout's broker or cluster: the tests and benchmarks may share it, isolated by topic prefix
    and database, but not this checkout's services, which would consume that stack's topics and reset its demo);
    taken (anything else). message: for taken and shared, the line naming the holder and the setting to move."""

    kind: str
    message: str
    by: str = ""


def classify(
    p: Port, our_var: str, free: bool, holder: Optional[Holder], speaks: bool, suggestion: Optional[int]
) -> Verdict:
    """What to do about a stack port. `speaks`: a Kafka broker (kafka) or Postgres (postgres) answers there."""
    where = f"127.0.0.1:{p.port}" + (" (the broker's controller)" if p.name == "controller" else "")
    if free:
        return Verdict("free", f"{where} is free")
    role = bridge_role(holder) if holder else None
    if holder and role and role[1] == our_var:
        return Verdict("ours", f"{where} is held by this checkout's {role[0]} (pid {holder.pid})")
    if p.name in ("kafka", "postgres") and speaks and not role:
        kind = "a Kafka broker" if p.name == "kafka" else "a PostgreSQL server"
        return Verdict("external", f"{where}: {kind} not started by any checkout answers (it is used)")
    shared = p.name in ("kafka", "postgres") and speaks
    if holder and role:
        by = f"the {role[0]} of {checkout_of(role[1])} (pid {holder.pid})"
    elif holder:
        by = f"{holder.name} (pid {holder.pid})"
    else:
        by = "another program"
    move = f"set {p.setting} to a free port"
    if p.name == "controller":
        move = "set KAFKA_CONTROLLER_PORT (default: the broker's port + 1) or KAFKA_BOOTSTRAP_SERVERS"
    elif p.name == "postgres":
        move = f"set DATABASE_URL to another port (postgresql://{DB_CREDENTIALS}@127.0.0.1:<port>/audience_bridge)"
    beside = f", or move the whole stack: make up STACK_PORT_OFFSET={suggestion}" if suggestion else ""
    message = f"{where} is taken by {by}: {move}{beside} ({SIDE_BY_SIDE})"
    return Verdict("shared" if shared else "taken", message, by)


def speaks_kafka(host: str, port: int, timeout: float = 1.5) -> bool:
    """Does a Kafka broker answer an ApiVersions (v0) request there?"""
    client = b"audience-bridge-check"
    body = struct.pack(">hhih", 18, 0, 7, len(client)) + client
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(struct.pack(">i", len(body)) + body)
            head = _recv(s, 8)
    except OSError:
        return False
    return len(head) == 8 and struct.unpack(">ii", head)[1] == 7


def speaks_postgres(host: str, port: int, timeout: float = 1.5) -> bool:
    """Does a PostgreSQL server answer an SSLRequest there (with S, N or an error)?"""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(struct.pack(">ii", 8, 80877103))
            answer = _recv(s, 1)
    except OSError:
        return False
    return answer in (b"S", b"N", b"E")


def _recv(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def suggest_offset(taken: Callable[[int], bool]) -> Optional[int]:
    """The first STACK_PORT_OFFSET (100, 200 ... 900) whose seven ports are all free."""
    for offset in range(100, 1000, 100):
        ports = [p + offset for p in BASE_PORTS.values()] + [BASE_PORTS["kafka"] + 1 + offset]
        if not any(taken(port) for port in ports):
            return offset
    return None


def component(port_name: str) -> str:
    return "kafka" if port_name == "controller" else port_name


def check_port(p: Port, our_var: str) -> Verdict:
    if p.host not in LOCAL_HOSTS:
        return Verdict("external", f"{p.host}:{p.port} is not on this machine (it is used)")
    free = bindable(p.port)
    holder = None if free else holder_of(p.port)
    speaks = False
    if not free and p.name == "kafka":
        speaks = speaks_kafka("127.0.0.1", p.port)
    elif not free and p.name == "postgres":
        speaks = speaks_postgres("127.0.0.1", p.port)
    verdict = classify(p, our_var, free, holder, speaks, None)
    if verdict.kind in ("taken", "shared"):
        verdict = classify(p, our_var, free, holder, speaks, suggest_offset(lambda port: not bindable(port)))
    return verdict


# ---------------------------------------------------------------------------------------------- Postgres's place


def hash_of(path: str) -> str:
    return hashlib.sha1(path.encode()).hexdigest()[:12]


def choose_pg_dir(
    var: str, is_root: bool, postgres_home: Optional[str], postgres_reaches_var: bool, outside_has_cluster: bool
) -> Tuple[str, bool]:
    """Where this checkout's private cluster lives, and whether that is outside var/.

    Not root: var/postgres (the user runs the server). As root the server runs as the `postgres` user: in
    var/postgres when that user can enter var/, else in a folder of its own home named after this checkout,
    <home>/audience-bridge/<12 hex of var/'s path> (/var/lib/postgresql/... on Debian). A cluster already
    there stays there."""
    inside = os.path.join(var, "postgres")
    if not is_root or postgres_home is None:
        return inside, False
    outside = os.path.join(postgres_home, "audience-bridge", hash_of(var))
    if outside_has_cluster or not postgres_reaches_var:
        return outside, True
    return inside, False


def first_blocking_dir(
    path: str, uid: int, gids: List[int], stat_of: Callable[[str], os.stat_result] = os.stat
) -> Optional[str]:
    """The first folder on the way to `path` that uid (with gids) may not enter (permission bits only)."""
    current = "/"
    for part in [p for p in path.split("/") if p]:
        current = os.path.join(current, part)
        try:
            st = stat_of(current)
        except OSError:
            return None  # not there yet: what exists was enterable
        if not stat.S_ISDIR(st.st_mode):
            return None
        if st.st_uid == uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in gids:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok and uid != 0:
            return current
    return None


def _postgres_user() -> Optional[Tuple[int, List[int], str]]:
    import grp
    import pwd

    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        return None
    gids = [pw.pw_gid] + [g.gr_gid for g in grp.getgrall() if "postgres" in g.gr_mem]
    home = pw.pw_dir if os.path.isdir(pw.pw_dir) else "/var/lib/postgresql"
    return pw.pw_uid, gids, home


def _existing(path: str) -> str:
    while not os.path.exists(path) and path != "/":
        path = os.path.dirname(path)
    return path


def pg_place(environ: Dict[str, str]) -> Tuple[str, bool, Optional[str]]:
    """(the cluster's folder, outside var/?, the folder the postgres user cannot enter, if any)."""
    var = var_dir(environ)
    is_root = os.geteuid() == 0
    user = _postgres_user() if is_root else None
    if user is None:
        return choose_pg_dir(var, False, None, True, False) + (None,)
    uid, gids, home = user
    target = _existing(var)
    if shutil.which("runuser"):
        reaches = (
            subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", target], cwd="/", check=False).returncode
            == 0
        )
    else:
        reaches = first_blocking_dir(target, uid, gids) is None
    outside = os.path.join(home, "audience-bridge", hash_of(var))
    place, moved = choose_pg_dir(var, True, home, reaches, os.path.isfile(os.path.join(outside, "data", "PG_VERSION")))
    blocking = first_blocking_dir(target, uid, gids) if not reaches else None
    return place, moved, blocking


def explain_pg_place(place: str, blocking: Optional[str]) -> str:
    why = "the postgres user cannot enter the checkout"
    if blocking:
        st = os.stat(blocking)
        why = f"the postgres user cannot enter {blocking} ({stat.filemode(st.st_mode)}, owner uid {st.st_uid})"
    return (
        f"{why}: the private cluster lives in {place} (its log is linked from var/log/postgres.log; "
        "`make clean` removes it)"
    )


# ---------------------------------------------------------------------------------------------- tools, disk, network


def parse_java_major(text: str) -> Optional[int]:
    """17 from `openjdk version "17.0.15"`, 8 from `java version "1.8.0_292"`."""
    m = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def parse_maven_version(text: str) -> Optional[Tuple[int, int, int]]:
    m = re.search(r"Apache Maven (\d+)\.(\d+)(?:\.(\d+))?", re.sub(r"\x1b\[[0-9;]*m", "", text))
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else None


def _output(cmd: List[str]) -> Optional[str]:
    if not shutil.which(cmd[0]):
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout + out.stderr


def java_problem(text: Optional[str]) -> Optional[str]:
    fix = "install Java 17+ (Debian: apt-get install openjdk-17-jre-headless) and put its java on PATH"
    if text is None:
        return f"kafka: Java is needed to run the broker and there is no java on PATH: {fix}"
    major = parse_java_major(text)
    if major is None or major < MIN_JAVA:
        found = f"Java {major}" if major else "an unrecognised java"
        return f"kafka: the broker needs Java {MIN_JAVA}+, found {found} ({shutil.which('java')}): {fix}"
    return None


def maven_problem(text: Optional[str]) -> Optional[str]:
    fix = "install Maven 3.6+ (Debian: apt-get install maven)"
    why = "fetching the broker's jars from Maven Central (once) needs Maven"
    if text is None:
        return f"kafka: {why} and there is no mvn on PATH: {fix}"
    version = parse_maven_version(text)
    if version is None:
        return f"kafka: {why}, and `mvn -v` failed (is JAVA_HOME right?): {fix}"
    if version[:2] < MIN_MAVEN:
        return f"kafka: {why} 3.6+, found {'.'.join(map(str, version))}: {fix}"
    return None


def python_problem(version: Tuple[int, int], has_ensurepip: bool, venv_exists: bool) -> Optional[str]:
    if version < MIN_PYTHON:
        return (
            f"python: Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]}+ is needed, `{sys.executable}` is "
            f"{version[0]}.{version[1]}: install a newer one and run make PYTHON=python3.X"
        )
    if not has_ensurepip and not venv_exists:
        return (
            f"python: {sys.executable} cannot create the venv (no ensurepip): "
            f"install python3-venv (Debian: apt-get install python{version[0]}.{version[1]}-venv)"
        )
    return None


def pg_bindir() -> Optional[str]:
    candidates = []
    out = _output(["pg_config", "--bindir"])
    if out:
        candidates.append(out.strip().splitlines()[0])
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for d in candidates:
        if os.access(os.path.join(d, "initdb"), os.X_OK) and os.access(os.path.join(d, "pg_ctl"), os.X_OK):
            return d
    return None


def postgres_install_problem(bindir: Optional[str], is_root: bool, has_sudo: bool, has_apt: bool) -> Optional[str]:
    """None when the server binaries are there or `postgres.sh` can install them; else the line to print."""
    if bindir:
        return None
    other = "or point DATABASE_URL at a running server"
    if not has_apt:
        return (
            "postgres: PostgreSQL is not installed and apt-get is not available to install it: install the "
            f"PostgreSQL server (initdb, pg_ctl) with your system's packages, {other}"
        )
    if not is_root and not has_sudo:
        return (
            "postgres: PostgreSQL is not installed and there is no sudo to install it: have it installed "
            f"(as root: apt-get install postgresql), {other}"
        )
    return None


def disk_problem(what: str, path: str, free_mb: int, need_mb: int) -> Optional[str]:
    if free_mb >= need_mb:
        return None
    return (
        f"{what}: only {free_mb / 1024:.1f} GB free on the disk of {path}, {need_mb / 1024:.1f} GB needed for "
        "Kafka's and Postgres's data: free some space (an old checkout's `make clean`) and run make again"
    )


def free_mb(path: str) -> int:
    return int(shutil.disk_usage(_existing(path)).free // (1024 * 1024))


def min_free_mb(environ: Dict[str, str]) -> int:
    return _int_setting("AB_MIN_FREE_MB", environ.get("AB_MIN_FREE_MB") or str(MIN_FREE_MB), 0, 10**9)


def reachable(url: str, timeout: float = 5.0) -> bool:
    """Any HTTP answer counts (even 404): the network to the registry works."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


def pypi_url(environ: Dict[str, str]) -> str:
    return environ.get("PIP_INDEX_URL") or PYPI_URL


def maven_url(environ: Dict[str, str]) -> str:
    return environ.get("AB_MAVEN_CENTRAL_URL") or MAVEN_CENTRAL_URL


def registry_problem(what: str, url: str, ok: bool) -> Optional[str]:
    if ok:
        return None
    if what == "pip":
        return (
            f"venv: no network to PyPI ({url}): the first run installs the venv's packages from it; connect "
            "(behind a proxy: export https_proxy=...) or set PIP_INDEX_URL to a mirror, then run make again"
        )
    return (
        f"kafka: no network to Maven Central ({url}): the first run fetches the broker's jars from it; connect "
        "(behind a proxy: configure it in ~/.m2/settings.xml) or set a mirror there, then run make again"
    )


def kafka_libs_cached(environ: Dict[str, str]) -> Tuple[bool, str]:
    pom = os.path.join(HERE, "kafka", "pom.xml")
    with open(pom, encoding="utf-8") as f:
        m = re.search(r"<kafka.version>(.*)</kafka.version>", f.read())
    version = environ.get("KAFKA_VERSION") or (m.group(1) if m else "?")
    cache = environ.get("AB_CACHE_DIR") or os.path.join(
        environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "audience-bridge"
    )
    libs = os.path.join(cache, f"kafka-{version}", "libs")
    return os.path.isfile(os.path.join(libs, ".complete")), libs


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
