"""The local stack as a newcomer meets it: a fresh copy of this checkout in a folder of mode 700 (root's home
when run as root) reaches a ready stack with `make up`; `make up` in a second copy on the first one's ports
stops with one line naming the setting (its services would share the first one's broker); moved with
STACK_PORT_OFFSET it runs beside the first, and both pass `make demo`; `make clean` then removes each one's
private cluster, wherever it lives.

Minutes of work (two venvs, two brokers, two clusters, two demos), so it runs only when asked:
`AB_STACK_E2E=1 .venv/bin/pytest tests/e2e/test_local_stack.py`. The decisions it exercises are unit-tested in
tests/unit/test_local_scripts.py, which every `make test` runs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.settings import REPO_ROOT

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("AB_STACK_E2E") != "1", reason="minutes of work: set AB_STACK_E2E=1"),
    pytest.mark.timeout(3600),
]

BASE_PORTS = (9092, 9093, 5432, 8081, 8082, 8083, 8090)
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


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_offsets(count: int) -> list[int]:
    offsets = [o for o in range(20000, 50000, 100) if all(_free(p + o) for p in BASE_PORTS)]
    assert len(offsets) >= count
    return offsets[:count]


def _copy_checkout(dest: Path) -> None:
    """What a clone of this working tree holds (tracked and new files, not var/, .venv or caches)."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        source = REPO_ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def _env() -> dict[str, str]:
    drop = {*STACK_VARS, "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "VIRTUAL_ENV"}
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("AB_", "PLATFORM_", "PYTEST_"))}


def _make(checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=checkout,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )


@pytest.fixture
def private_folder() -> Iterator[Path]:
    """A folder of mode 700, in root's home when run as root (as /root itself is)."""
    folder = Path(tempfile.mkdtemp(prefix="ab-stack-e2e-", dir=Path.home()))
    folder.chmod(0o700)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_two_checkouts_under_a_700_folder_run_side_by_side(private_folder: Path) -> None:
    first, second = private_folder / "first", private_folder / "second"
    _copy_checkout(first)
    _copy_checkout(second)
    a, b = _free_offsets(2)
    try:
        up = _make(first, "up", f"STACK_PORT_OFFSET={a}")
        assert up.returncode == 0, up.stdout + up.stderr
        status = _make(first, "status").stdout
        assert f"kafka      ready    127.0.0.1:{9092 + a}" in status
        assert f"reconcile  ready    http://127.0.0.1:{8082 + a}" in status
        if os.geteuid() == 0:  # the postgres user cannot enter the checkout: the cluster moved
            assert "private cluster in /var/lib/postgresql/audience-bridge/" in status, status
            assert "the postgres user cannot enter" in up.stderr

        # On the first one's ports: the broker and the cluster could be shared (by tests), the services not.
        taken = _make(second, "up", f"STACK_PORT_OFFSET={a}")
        assert taken.returncode != 0
        lines = [line for line in taken.stderr.splitlines() if " is taken by " in line]
        assert len(lines) == 1, taken.stderr
        assert lines[0].startswith(f"kafka: 127.0.0.1:{9092 + a} is taken by the Kafka broker of {first}")
        assert "KAFKA_BOOTSTRAP_SERVERS" in lines[0]

        demo_b = _make(second, "demo", f"STACK_PORT_OFFSET={b}")
        assert demo_b.returncode == 0, demo_b.stdout[-3000:] + demo_b.stderr[-3000:]
        assert f"status page: http://127.0.0.1:{8082 + b}/" in demo_b.stdout
        assert "demo succeeded" in demo_b.stdout

        demo_a = _make(first, "demo")  # its ports from var/stack.env, the second stack still up
        assert demo_a.returncode == 0, demo_a.stdout[-3000:] + demo_a.stderr[-3000:]
        assert f"status page: http://127.0.0.1:{8082 + a}/" in demo_a.stdout
        assert f"platform (ecsim): http://127.0.0.1:{8090 + a}/sim/state" in demo_a.stdout
    finally:
        for checkout in (first, second):
            link = checkout / "var" / "log" / "postgres.log"
            outside = Path(os.readlink(link)).parent if link.is_symlink() else None
            _make(checkout, "clean")
            if outside is not None:
                assert not outside.exists(), f"make clean left {outside}"
