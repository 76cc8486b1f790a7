"""The local stack's daemons keep none of their caller's files: a lock or a pipe it holds is not held for ever.

`flock LOCK make bench` used to start Kafka and Postgres (make's ``infra``) holding LOCK's descriptor: the lock
outlived the benchmark and the next `flock` waited for ever. deploy/local/lib.sh's ``WITHOUT_INHERITED_FDS``
closes every descriptor above 2 before a daemon starts; every daemon the scripts start goes through it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.fixtures.local_stack import LOCAL
from tests.helpers import eventually


def _runs_sleep(pid: int) -> bool:
    """The daemon has become its command (its descriptors are then the command's own)."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep")


def _lock_is_free(path: Path) -> bool:
    with path.open("w") as other:
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(other, fcntl.LOCK_UN)
        return True


@asynccontextmanager
async def _daemon_started_under_our_lock(tmp_path: Path, start: str) -> AsyncIterator[tuple[int, Path]]:
    """A script holding our lock's descriptor starts a daemon (``start`` runs ``sleep``, in the background,
    its output to /dev/null as the scripts do) and exits; we let our lock go. Yields the daemon's pid."""
    lock = tmp_path / "bench.lock"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        script = f'here="{LOCAL}"; source "{LOCAL}/lib.sh"; {start} >/dev/null 2>&1 </dev/null & echo $!'
        started = await asyncio.to_thread(
            subprocess.run,
            ["bash", "-c", script],
            pass_fds=(held.fileno(),),
            capture_output=True,
            check=True,
            timeout=10,
        )
    pid = int(started.stdout)
    try:
        await eventually(lambda: asyncio.to_thread(_runs_sleep, pid), until=bool, timeout=10)
        yield pid, lock
    finally:
        os.kill(pid, signal.SIGKILL)


async def test_a_daemon_started_through_it_does_not_keep_its_callers_lock(tmp_path: Path) -> None:
    async with _daemon_started_under_our_lock(tmp_path, '"${WITHOUT_INHERITED_FDS[@]}" sleep 60') as (pid, lock):
        assert sorted(os.listdir(f"/proc/{pid}/fd")) == ["0", "1", "2"]
        assert _lock_is_free(lock)  # only we held it, and we let it go


async def test_without_it_the_daemon_holds_the_lock(tmp_path: Path) -> None:
    """What the helper prevents, staged: the same daemon started plainly keeps the lock while it lives."""
    async with _daemon_started_under_our_lock(tmp_path, "sleep 60") as (_, lock):
        assert not _lock_is_free(lock)


def test_every_daemon_the_scripts_start_goes_through_it() -> None:
    starts = []
    for script in sorted(LOCAL.glob("*.sh")):
        for number, line in enumerate(script.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"\bsetsid\b", code) or re.search(r'pg_ctl"? .*\bstart\b', code):
                starts.append((script.name, number, code))
    assert len(starts) >= 5, starts  # kafka, postgres, services, connect's Postgres and worker
    unguarded = [s for s in starts if '"${WITHOUT_INHERITED_FDS[@]}"' not in s[2]]
    assert not unguarded, unguarded
