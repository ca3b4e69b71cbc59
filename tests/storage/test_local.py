"""LocalStorage specifics: the root directory, hidden partial files, key mapping."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from mongosnap._errors import AccessDenied, ObjectExists, ObjectNotFound, UsageError
from mongosnap.storage import LocalStorage, local

MiB = 1024 * 1024


async def test_check_creates_the_root(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "root"
    await LocalStorage(root).check()
    assert root.is_dir()
    assert list(root.iterdir()) == []  # the write probe is gone


async def test_check_refuses_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"")
    with pytest.raises(UsageError, match="not a directory"):
        await LocalStorage(path).check()


async def test_check_reports_an_unwritable_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(AccessDenied, match="Permission denied"):
        await LocalStorage(tmp_path).check()


async def test_keys_map_to_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    await storage.put("a/b/c.tar", b"data")
    assert (tmp_path / "a" / "b" / "c.tar").read_bytes() == b"data"
    assert storage.url == tmp_path.as_uri()


async def test_writer_uses_a_hidden_partial_file(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    writer = storage.open_writer("dir/archive.tar")
    await writer.write(b"x" * (2 * MiB))  # past the write buffer: on disk now
    (partial,) = (tmp_path / "dir").iterdir()
    assert partial.name.startswith(".archive.tar.") and partial.name.endswith(".partial")
    assert [info async for info in storage.list()] == []
    await writer.commit()
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == ["archive.tar"]
    assert os.stat(tmp_path / "dir" / "archive.tar").st_nlink == 1


async def test_partial_names_are_reserved(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        await LocalStorage(tmp_path).put("dir/.x.abc.partial", b"")


async def test_delete_prunes_empty_directories(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    await storage.put("a/b/c", b"1")
    await storage.put("a/d", b"2")
    await storage.delete("a/b/c")
    assert not (tmp_path / "root" / "a" / "b").exists()
    assert (tmp_path / "root" / "a" / "d").exists()
    await storage.delete("a/d")
    assert list((tmp_path / "root").iterdir()) == []


async def test_a_file_appearing_before_commit_is_kept(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    writer = storage.open_writer("race")
    await writer.write(b"mine")
    (tmp_path / "race").write_bytes(b"theirs")
    with pytest.raises(ObjectExists):
        await writer.commit()
    assert (tmp_path / "race").read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race"]


async def test_directories_and_symlinks_are_not_objects(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    await storage.put("dir/file", b"1")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(b"s")
    (tmp_path / "root" / "link").symlink_to(tmp_path / "outside")
    (tmp_path / "root" / "filelink").symlink_to(tmp_path / "outside" / "secret")
    assert [info.key async for info in storage.list()] == []
    assert [info.key async for info in storage.list("dir/")] == ["dir/file"]
    assert [info.key async for info in storage.list("link/")] == []
    with pytest.raises(ObjectNotFound):
        await storage.stat("dir")
    with pytest.raises(ObjectNotFound):
        await storage.read_bytes("dir", limit=10)


async def test_listings_survive_files_going_away_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that goes away between reading the directory and its stat (a writer
    renaming its temporary file, a prune deleting) is left out, never an error."""
    storage = LocalStorage(tmp_path)
    await storage.check()
    names = [
        ".2026-01-01-00-00-00-mongodb-dump.tar.gz.x1.partial",
        "2026-01-01-00-00-00-mongodb-dump.tar.gz",
    ]
    read_entries = local._entries

    def entries_then_gone(root: Path, prefix: str) -> list[Any]:
        found = read_entries(root, prefix)
        for name in names:
            (tmp_path / name).unlink(missing_ok=True)  # after scandir, before the stat
        return found

    monkeypatch.setattr(local, "_entries", entries_then_gone)
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert [u async for u in storage.uploads()] == []
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert [o async for o in storage.list()] == []
