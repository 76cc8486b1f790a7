"""A folder drop zone never follows a link: not for reads, writes, moves, deletes or listings, whether the link
is the object, a folder on its path, or an area (``processed/``) swapped for a link to somewhere else."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.dropzone.base import AREAS, DropZoneRejected, ObjectNotFound
from shared.dropzone.file import FileDropZone

pytestmark = pytest.mark.integration

NAME = "ftp_dpm_1001_1700000000000.sync"


def contents(folder: Path) -> dict[str, bytes]:
    """Everything under ``folder`` (links not followed), by relative path."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() and not p.is_symlink() else b"<link or dir>"
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.sync").write_bytes(b"not the zone's\n")
    return folder


@pytest.fixture
def zone(tmp_path: Path) -> FileDropZone:
    root = tmp_path / "zone"
    root.mkdir()
    return FileDropZone(root)


async def test_processed_replaced_by_a_link_receives_nothing(zone: FileDropZone, outside: Path) -> None:
    await zone.write(NAME, b"ids\n")
    before = contents(outside)
    for area in AREAS:
        (zone.root / area).symlink_to(outside, target_is_directory=True)
        with pytest.raises(DropZoneRejected, match="symbolic link"):
            await zone.move(NAME, area, reason="handled")
    assert contents(outside) == before  # no file, no reason written through the link
    assert await zone.read_bytes(NAME) == b"ids\n"  # still in the inbox, for when an operator fixes the zone
    assert await zone.list("processed/") == []


async def test_a_linked_folder_is_neither_read_written_listed_nor_deleted(zone: FileDropZone, outside: Path) -> None:
    (zone.root / "date=2026-01-01").symlink_to(outside, target_is_directory=True)
    before = contents(outside)
    linked = "date=2026-01-01/secret.sync"
    with pytest.raises(DropZoneRejected, match="symbolic link"):
        await zone.read_bytes(linked)
    with pytest.raises(DropZoneRejected, match="symbolic link"):
        await zone.write("date=2026-01-01/new.sync", b"x\n")
    with pytest.raises(DropZoneRejected, match="symbolic link"):
        await zone.delete(linked)
    with pytest.raises(DropZoneRejected, match="symbolic link"):
        await zone.move(linked, "processed")
    assert not await zone.exists(linked)
    assert await zone.list("date=2026-01-01/") == []
    assert await zone.list() == []
    assert contents(outside) == before


async def test_a_link_deeper_on_the_path_is_refused_too(zone: FileDropZone, outside: Path) -> None:
    (zone.root / "in").mkdir()
    (zone.root / "in" / "deeper").symlink_to(outside, target_is_directory=True)
    before = contents(outside)
    with pytest.raises(DropZoneRejected, match="symbolic link"):
        await zone.write("in/deeper/x/y.sync", b"x\n")
    with pytest.raises(DropZoneRejected, match="symbolic link"):
        await zone.read_bytes("in/deeper/secret.sync")
    assert contents(outside) == before


async def test_an_object_that_is_a_link_is_refused(zone: FileDropZone, outside: Path) -> None:
    (zone.root / NAME).symlink_to(outside / "secret.sync")
    with pytest.raises(DropZoneRejected, match="symbolic link"):
        await zone.read_bytes(NAME)
    with pytest.raises(DropZoneRejected, match="symbolic link"):
        await zone.move(NAME, "processed")
    with pytest.raises(DropZoneRejected, match="symbolic link"):
        await zone.delete(NAME)
    assert not await zone.exists(NAME)
    assert (zone.root / NAME).is_symlink()  # left for an operator to look at
    assert not (zone.root / "processed" / NAME).exists()
    # Writing the name replaces the link itself: the file it pointed to is untouched.
    await zone.write(NAME, b"mine\n")
    assert not (zone.root / NAME).is_symlink()
    assert (outside / "secret.sync").read_bytes() == b"not the zone's\n"


async def test_a_fifo_is_not_read(zone: FileDropZone) -> None:
    os.mkfifo(zone.root / NAME)
    with pytest.raises(ObjectNotFound):
        await zone.read_bytes(NAME)  # would block for ever on a FIFO opened for reading


async def test_ordinary_folders_still_work(zone: FileDropZone) -> None:
    await zone.write("a/b/c.sync", b"1\n")
    assert [i.name for i in await zone.list("a/")] == ["a/b/c.sync"]
    assert await zone.move("a/b/c.sync", "processed", reason="ok") == "processed/a/b/c.sync"
    assert await zone.read_bytes("processed/a/b/c.sync.reason.txt") == b"ok"
    await zone.delete("processed/a/b/c.sync")
    assert not await zone.exists("processed/a/b/c.sync")
