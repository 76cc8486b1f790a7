"""Who holds a port: free, our own stack, another checkout's, or another program; what to say about it."""

from __future__ import annotations

import glob
import os
import re
import socket
import struct
from typing import Callable, List, NamedTuple, Optional, Tuple

from stack_settings import (
    BASE_PORTS,
    DB_CREDENTIALS,
    LOCAL_HOSTS,
    SIDE_BY_SIDE,
    Port,
    StackError,
    read_saved,
    resolve,
    stack_ports,
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
