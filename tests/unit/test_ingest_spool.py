"""The spool folder of gzip parts' content: private, never a link, a crash's leftovers removed at start; each
spool an anonymous file, freed however its batch ends."""

from __future__ import annotations

import asyncio
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest

from services.ingest.app import build
from services.ingest.part_spool import LEFTOVER_PREFIX, BatchSpools, default_spool_dir, prepare_spool_dir
from services.ingest.settings import IngestSettings
from shared.errors import ConfigError
from tests.helpers import open_files_under


def test_the_folder_is_created_private_and_made_private(tmp_path: Path) -> None:
    folder = prepare_spool_dir(tmp_path / "a" / "spool")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    prepare_spool_dir(loose)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700


def test_a_crashs_leftovers_are_removed_and_nothing_else(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    (folder / f"{LEFTOVER_PREFIX}abc").write_bytes(b"ids of a crashed import")
    (folder / "someone-elses").write_bytes(b"kept")
    prepare_spool_dir(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["someone-elses"]


def test_a_linked_or_non_folder_spool_dir_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    with pytest.raises(ConfigError, match="link or not a folder"):
        prepare_spool_dir(link)
    plain = tmp_path / "file"
    plain.write_bytes(b"")
    with pytest.raises(ConfigError):
        prepare_spool_dir(plain)


def test_the_default_folder_is_the_users_in_the_system_temp_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    assert default_spool_dir() == tmp_path / f"audience-bridge-ingest-spool-{os.getuid()}"


async def test_a_spool_is_nameless_reads_back_and_is_freed_at_the_end(tmp_path: Path) -> None:
    folder = prepare_spool_dir(tmp_path / "spool")
    content = b"".join(b"%040d\n" % i for i in range(100_000))  # several read pieces
    async with BatchSpools(folder) as spools:
        spools.new("p1").write(content)
        assert list(folder.iterdir()) == []  # no name: nothing to leak if the process dies
        assert len(open_files_under(folder)) == 1
        assert b"".join([piece async for piece in spools.content("p1")]) == content
        assert open_files_under(folder) == []  # freed once read to the end
        spools.new("p2").write(b"left unread\n")
    assert open_files_under(folder) == []  # and the rest when the batch ends


async def test_spools_are_freed_when_the_batch_fails_or_is_cancelled(tmp_path: Path) -> None:
    folder = prepare_spool_dir(tmp_path / "spool")
    opened: list[int] = []

    async def failing() -> None:
        async with BatchSpools(folder) as spools:
            spools.new("p1").write(b"x\n")
            spools.new("p2").write(b"y\n")
            opened.append(len(open_files_under(folder)))
            raise RuntimeError("the emit failed")

    with pytest.raises(RuntimeError):
        await failing()
    assert opened == [2]
    assert open_files_under(folder) == []

    started = asyncio.Event()

    async def batch() -> None:
        async with BatchSpools(folder) as spools:
            spools.new("p1").write(b"x\n")
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(batch())
    await started.wait()
    assert len(open_files_under(folder)) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert open_files_under(folder) == []


async def test_without_o_tmpfile_a_spool_is_unlinked_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = prepare_spool_dir(tmp_path / "spool")
    real_open = os.open

    def no_tmpfile(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(95, "Operation not supported")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_tmpfile)
    async with BatchSpools(folder) as spools:
        spools.new("p1").write(b"abc\n")
        assert list(folder.iterdir()) == []
        assert b"".join([piece async for piece in spools.content("p1")]) == b"abc\n"
    assert open_files_under(folder) == []


def test_ingest_refuses_to_start_with_a_linked_spool_folder(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "spool"
    link.symlink_to(target, target_is_directory=True)
    # build() raising ConfigError is what makes `python -m services.ingest` exit 2 with the reason.
    with pytest.raises(ConfigError, match="link or not a folder"):
        build(IngestSettings(import_spool_dir=str(link)))
    build(IngestSettings(import_spool_dir=str(tmp_path / "own")))  # a fresh folder is fine
    assert stat.S_IMODE((tmp_path / "own").stat().st_mode) == 0o700
