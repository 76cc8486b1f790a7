"""Where the private Postgres cluster lives, and the tools, disk and network a stack needs."""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, Dict, List, Optional, Tuple

from stack_settings import (
    HERE,
    MAVEN_CENTRAL_URL,
    MIN_FREE_MB,
    MIN_JAVA,
    MIN_MAVEN,
    MIN_PYTHON,
    PYPI_URL,
    _int_setting,
    var_dir,
)

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
