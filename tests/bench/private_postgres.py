"""``BENCH_WAL_LEVEL``: the benchmarks against a private Postgres cluster with another ``wal_level``.

The local cluster runs ``wal_level = minimal``: a table created or truncated in the loading transaction is then
not WAL-logged, which makes bulk loads cheaper than on any server that streams to replicas. ``replica`` is what
production runs; the benchmarks run under it by starting a throw-away cluster (same settings as the local one,
deploy/local/postgres.sh, but ``wal_level`` and ``max_wal_senders``) on a free port, for the run only.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shared.errors import ConfigError

WAL_LEVELS = ("minimal", "replica", "logical")
# The local cluster's settings (deploy/local/postgres.sh), so that only the WAL level differs.
LOCAL_SETTINGS = {
    "max_connections": "200",
    "shared_buffers": "512MB",
    "work_mem": "32MB",
    "maintenance_work_mem": "256MB",
    "synchronous_commit": "on",
    "max_wal_size": "2GB",
    "checkpoint_timeout": "15min",
}
# The benchmarks' instrument, not a setting of the bridge: each committed transaction's time, which the streaming
# benchmarks end their latencies at (tests/bench/commit_latency.py). A few bytes a commit.
INSTRUMENT_SETTINGS = {"track_commit_timestamp": "on"}
USER = "audience_bridge"


def wal_level(raw: str | None) -> str | None:
    """``BENCH_WAL_LEVEL``'s value: None (the local cluster as it is) or a WAL level."""
    if raw is None or raw.strip() == "":
        return None
    if raw not in WAL_LEVELS:
        raise ConfigError(f"BENCH_WAL_LEVEL must be one of {', '.join(WAL_LEVELS)}", value=raw)
    return raw


def cluster_settings(level: str, port: int) -> dict[str, str]:
    """postgresql.conf of the private cluster: the local cluster's, at WAL level ``level``."""
    senders = "0" if level == "minimal" else "4"
    return {**LOCAL_SETTINGS, **INSTRUMENT_SETTINGS, "wal_level": level, "max_wal_senders": senders, "port": str(port)}


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    configured = shutil.which("pg_config")
    if configured:
        out = subprocess.run([configured, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out and Path(out, "initdb").exists():
            return Path(out)
    if not found:
        raise ConfigError("BENCH_WAL_LEVEL needs Postgres' server binaries (initdb, pg_ctl): none found")
    return Path(found[-1]).parent


def _as_owner(args: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: as the 'postgres' system user then (as deploy/local does)."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(args: list[str], log: Path) -> None:
    with log.open("ab") as out:
        done = subprocess.run(_as_owner(args), stdout=out, stderr=subprocess.STDOUT, cwd="/", check=False)
    if done.returncode != 0:
        raise ConfigError(f"{Path(args[0]).name} failed for the private cluster (see {log})", code=done.returncode)


@contextmanager
def private_cluster(level: str, directory: Path) -> Iterator[str]:
    """A fresh cluster at WAL level ``level`` in ``directory``, started on a free port; yields its DSN and is
    stopped and removed afterwards."""
    bindir = _bindir()
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    data = directory / "data"
    log = directory / "postgres.log"
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
        log.touch()
        shutil.chown(log, "postgres")
    port = _free_port()
    _run(
        [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"],
        log,
    )
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("".join(f"{k} = '{v}'\n" for k, v in cluster_settings(level, port).items()))
    _run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"], log)
    try:
        psql = [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-v", "ON_ERROR_STOP=1"]
        _run([*psql, "-c", f"CREATE ROLE {USER} LOGIN SUPERUSER PASSWORD '{USER}'"], log)
        _run([*psql, "-c", f"CREATE DATABASE {USER} OWNER {USER}"], log)
        yield f"postgresql://{USER}:{USER}@127.0.0.1:{port}/{USER}"
    finally:
        _run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop"], log)
        shutil.rmtree(directory, ignore_errors=True)
