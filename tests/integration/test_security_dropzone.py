"""Drop-zone names cannot escape their folder: whatever name a remote party (a listing, an ``.info``
control file) puts forward, nothing outside the zone's root is read, written, moved or deleted.

Runs against the real file system (a temporary folder with a sentinel file beside the zone); the pure name
rules are in ``tests/unit/test_dropzone_names.py``, and the importer's handling of a ``.info`` that names
``../`` paths in ``tests/e2e/test_bad_input_import.py``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.dropzone import FileDropZone, UnsafeName
from shared.dropzone.base import DropZoneRejected, ObjectNotFound

SECRET = b"outside the zone: must never be read, moved or overwritten\n"

ESCAPES = [
    "../outside/secret.txt",
    "../../etc/passwd",
    "a/../../outside/secret.txt",
    "./../outside/secret.txt",
    "/etc/passwd",
    "//etc/passwd",
    "..",
    ".",
    "a/./b",
    "a//b",
    "..\\outside\\secret.txt",
    "a\\..\\..\\outside",
    "a/\x00/b",
    "ok\n../outside",
    "x" * 1100,
    "",
]


def _inside(root: Path, path: Path) -> bool:
    """``path`` with every link and ``..`` resolved is below ``root``."""
    return Path(os.path.realpath(path)).is_relative_to(root)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest_asyncio.fixture
async def zone(tmp_path: Path) -> AsyncIterator[FileDropZone]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    root = tmp_path / "zone"
    async with FileDropZone(root) as z:
        await z.write("inbox.sync", b"u 1 \n")
        yield z
    assert (outside / "secret.txt").read_bytes() == SECRET
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert set(_tree(tmp_path)) - {"outside/secret.txt"} == {f"zone/{n}" for n in _tree(root)}


@pytest.mark.parametrize("name", ESCAPES, ids=repr)
async def test_every_operation_refuses_a_name_that_could_escape(zone: FileDropZone, name: str) -> None:
    with pytest.raises(UnsafeName):
        await zone.read_bytes(name)
    with pytest.raises(UnsafeName):
        await zone.exists(name)
    with pytest.raises(UnsafeName):
        await zone.write(name, b"overwritten")
    with pytest.raises(UnsafeName):
        await zone.delete(name, missing_ok=True)
    with pytest.raises(UnsafeName):
        await zone.move(name, "rejected", reason="x")
    if name.endswith("/") or not name:
        return
    with pytest.raises(UnsafeName):
        await zone.list(name)
    # An escaping name as the thing moved *into* is refused too; the object stays where it is.
    with pytest.raises((UnsafeName, DropZoneRejected)):
        await zone.move("inbox.sync", name)  # type: ignore[arg-type]
    assert await zone.exists("inbox.sync")


async def test_a_symlink_in_the_zone_is_not_offered(zone: FileDropZone, tmp_path: Path) -> None:
    """Whoever can write the folder (an SFTP user) could link a file outside it under a valid name."""
    root = zone.root
    (root / "s3_1_2_full_1337229891903.sync").symlink_to(tmp_path / "outside" / "secret.txt")
    (root / "linked-dir").symlink_to(tmp_path / "outside", target_is_directory=True)
    names = {o.name for o in await zone.list()}
    assert names == {"inbox.sync"}


characters = st.sampled_from(["a", ".", "/", "..", "\\", "\x00", "é", " ", "%2e", "\u2024", "~", ":"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.lists(characters, max_size=10).map("".join))
async def test_a_random_path_like_name_stays_inside_or_is_refused(name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "outside").mkdir()
        (base / "outside" / "secret.txt").write_bytes(SECRET)
        root = base / "zone"
        async with FileDropZone(root) as z:
            try:
                await z.write(name, b"data")
            except (UnsafeName, DropZoneRejected):
                pass
            else:
                assert _inside(root, root / name)
                assert await z.read_bytes(name) == b"data"
                await z.move(name, "processed")
            for op in (z.read_bytes, z.exists):
                with contextlib.suppress(UnsafeName, ObjectNotFound):
                    await op(name)
        assert (base / "outside" / "secret.txt").read_bytes() == SECRET
        assert [p.name for p in (base / "outside").iterdir()] == ["secret.txt"]
        assert all(_inside(root, p) for p in root.rglob("*"))
