"""LocalStorage: objects as files under a root directory.

A key ``a/b/c`` is the file ``root/a/b/c``. A writer streams into a hidden
temporary file next to its target (``.c.<random>.partial``), which ``list``
never shows; ``commit`` fsyncs it and hard-links it to the final name, which
fails rather than overwrite, so an object appears whole or not at all. Files
are created readable by their owner only (backups hold data) unless
``file_mode`` says otherwise (0640 for a monitoring group). ``list`` reads
one directory (no recursion), and fails with BucketNotFound when the root does
not exist, as S3 does for a missing bucket; ``uploads`` lists the temporary files of that
directory (a killed writer leaves its own), ``abort_upload`` removes one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import ParamSpec, TypeVar

from .._errors import (
    AccessDenied,
    BucketNotFound,
    ObjectExists,
    ObjectNotFound,
    StorageError,
    UsageError,
)
from ._keys import CHUNK_SIZE, check_key, check_range
from ._writer import BaseWriter
from .base import ObjectInfo, Retention, UploadInfo, refuse_retention

_P = ParamSpec("_P")
_T = TypeVar("_T")

_FLUSH_SIZE = 1024 * 1024
_INLINE_FILL = 8 * 1024
"""A fill this small (a stored tar header) is written on the event loop: handing
it to a thread cost more than the write (a backup fills two per collection)."""
_PARTIAL = ".partial"


DEFAULT_FILE_MODE = 0o600


class LocalStorage:
    def __init__(self, root: str | os.PathLike[str], *, file_mode: int = DEFAULT_FILE_MODE) -> None:
        self.root = Path(root).absolute()
        self.file_mode = file_mode

    @property
    def url(self) -> str:
        return self.root.as_uri()

    async def check(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"{self.root} exists and is not a directory")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".check.", suffix=_PARTIAL, dir=self.root)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise _os_error(exc, "cannot write to", self.root) from exc

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        for info in await _in_thread(_scan, self.root, prefix):
            yield info

    async def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            st = None
        except OSError as exc:
            raise _os_error(exc, "cannot stat", path) from exc
        if st is None or not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(f"{self.url}/{key} does not exist")
        return _info(key, st)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        check_range(start, end)
        fd, _ = self._open_object(key)
        try:
            pos = start
            while end is None or pos < end:
                size = CHUNK_SIZE if end is None else min(CHUNK_SIZE, end - pos)
                chunk = await _in_thread(_pread, fd, size, pos, self._path(key))
                if not chunk:
                    break
                pos += len(chunk)
                yield chunk
        finally:
            os.close(fd)

    async def read_bytes(self, key: str, *, limit: int) -> bytes:
        fd, size = self._open_object(key)
        try:
            if size > limit:
                raise StorageError(f"{self.url}/{key} holds {size} bytes, over the {limit} limit")
            return await _in_thread(_pread, fd, size, 0, self._path(key))
        finally:
            os.close(fd)

    async def put(self, key: str, data: bytes, *, retention: Retention | None = None) -> ObjectInfo:
        refuse_retention(self.url, retention)
        writer = self.open_writer(key)
        await writer.write(data)
        return await writer.commit()

    def open_writer(self, key: str, *, retention: Retention | None = None) -> _LocalWriter:
        refuse_retention(self.url, retention)
        return _LocalWriter(self, key)

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as exc:
            raise _os_error(exc, "cannot delete", path) from exc
        self._prune(path.parent)

    async def uploads(self, prefix: str = "") -> AsyncIterator[UploadInfo]:
        for upload in await _in_thread(_scan_partials, self.root, prefix):
            yield upload

    async def abort_upload(self, upload: UploadInfo) -> None:
        folder, _, name = upload.upload_id.rpartition("/")
        if not _is_partial(name):
            raise UsageError(f"{upload.upload_id!r} is not an unfinished write of {self.url}")
        path = (
            self.root.joinpath(*check_key(folder).split("/"), name) if folder else self.root / name
        )
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise _os_error(exc, "cannot delete", path) from exc
        self._prune(path.parent)

    async def aclose(self) -> None:
        return None

    async def __aenter__(self) -> LocalStorage:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- internals -------------------------------------------------------------

    def _path(self, key: str) -> Path:
        segments = check_key(key).split("/")
        if any(_is_partial(s) for s in segments):
            raise UsageError(f"invalid object key {key!r}: '.*.partial' names are reserved")
        return self.root.joinpath(*segments)

    def _open_object(self, key: str) -> tuple[int, int]:
        """Open an object for reading; return its descriptor and size."""
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"{self.url}/{key} does not exist") from None
        except OSError as exc:
            raise _os_error(exc, "cannot open", path) from exc
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise ObjectNotFound(f"{self.url}/{key} does not exist")
        return fd, st.st_size

    def _prune(self, directory: Path) -> None:
        """Remove empty directories from directory up to (not including) the root."""
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent


class _LocalWriter(BaseWriter):
    def __init__(self, storage: LocalStorage, key: str) -> None:
        super().__init__(key)
        self._storage = storage
        self._final = storage._path(key)
        self._tmp: Path | None = None
        self._fd: int | None = None
        self._buffer = bytearray()
        self._buffer_offset = 0  # file offset of the buffer's first byte

    async def _append(self, offset: int, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= _FLUSH_SIZE:
            await self._flush()

    async def _fill(self, offset: int, data: bytes) -> None:
        split = max(0, min(len(data), self._buffer_offset - offset))
        if 0 < split <= _INLINE_FILL:  # a tar header: into the page cache, no thread hop
            _pwrite(self._open_tmp(), data[:split], offset, self._final)
        elif split:
            await _in_thread(_pwrite, self._open_tmp(), data[:split], offset, self._final)
        if split < len(data):
            start = offset + split - self._buffer_offset
            self._buffer[start : start + len(data) - split] = data[split:]

    async def _commit(self) -> ObjectInfo:
        await self._flush()
        fd, tmp = self._open_tmp(), self._tmp
        assert tmp is not None
        await _in_thread(os.fsync, fd)
        os.close(fd)
        self._fd = None
        try:
            os.link(tmp, self._final)
        except FileExistsError:
            raise ObjectExists(f"{self._storage.url}/{self.key} already exists") from None
        except OSError as exc:
            raise _os_error(exc, "cannot publish", self._final) from exc
        os.unlink(tmp)
        self._tmp = None
        _fsync_dir(self._final.parent)
        return _info(self.key, os.stat(self._final))

    async def _discard(self) -> None:
        self._buffer = bytearray()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            self._tmp = None
            self._storage._prune(self._final.parent)

    async def _flush(self) -> None:
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            await _in_thread(_pwrite, self._open_tmp(), data, self._buffer_offset, self._final)
            self._buffer_offset += len(data)

    def _open_tmp(self) -> int:
        if self._fd is None:
            parent = self._final.parent
            prefix = f".{self._final.name}."
            try:
                for attempt in range(3):
                    parent.mkdir(parents=True, exist_ok=True)
                    try:
                        self._fd, name = tempfile.mkstemp(
                            prefix=prefix, suffix=_PARTIAL, dir=parent
                        )
                    except FileNotFoundError:
                        if attempt == 2:
                            raise
                        continue  # a concurrent delete pruned the directory
                    self._tmp = Path(name)
                    if self._storage.file_mode != DEFAULT_FILE_MODE:  # mkstemp's mode
                        os.fchmod(self._fd, self._storage.file_mode)
                    break
            except OSError as exc:
                raise _os_error(exc, "cannot create a file in", parent) from exc
        assert self._fd is not None
        return self._fd


def _level(root: Path, prefix: str) -> tuple[str, Path, str] | None:
    """The directory a prefix's level is, as (key prefix, path, name start);
    None if the prefix names no possible directory."""
    folder, _, start = prefix.rpartition("/")
    if not folder:
        return "", root, start
    try:
        segments = check_key(folder).split("/")
    except UsageError:
        return None
    path = root
    for segment in segments:  # like the old recursive scan: never through a symlink
        path = path / segment
        if path.is_symlink():
            return None
    return folder + "/", path, start


def _entries(root: Path, prefix: str) -> list[tuple[str, os.DirEntry[str]]]:
    """The entries of a prefix's directory whose name starts as the prefix does."""
    level = _level(root, prefix)
    if level is None:
        return []
    rel, path, start = level
    try:
        with os.scandir(path) as entries:
            return [(rel, e) for e in entries if e.name.startswith(start)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise _os_error(exc, "cannot list", path) from exc


def _check_root(root: Path) -> None:
    """A root that does not exist is a missing bucket: a listing of it fails
    rather than say "empty" (a typo in DEST). Writers create it (check())."""
    try:
        st = os.stat(root)
    except (FileNotFoundError, NotADirectoryError):
        raise BucketNotFound(f"directory {root} does not exist") from None
    except OSError as exc:
        raise _os_error(exc, "cannot list", root) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{root} exists and is not a directory")


def _scan(root: Path, prefix: str) -> list[ObjectInfo]:
    """The objects of one level whose key starts with prefix, sorted by key."""
    _check_root(root)
    found = []
    for rel, entry in _entries(root, prefix):
        if not entry.is_file(follow_symlinks=False) or _is_partial(entry.name):
            continue
        try:
            found.append(_info(rel + entry.name, entry.stat(follow_symlinks=False)))
        except FileNotFoundError:  # deleted since the directory was read, as S3 lists
            continue
    found.sort(key=lambda info: info.key)
    return found


def _scan_partials(root: Path, prefix: str) -> list[UploadInfo]:
    """The temporary files of one level's writers whose target starts with prefix."""
    _check_root(root)
    level = _level(root, prefix)
    if level is None:
        return []
    rel, _, start = level
    found: list[UploadInfo] = []
    for _, entry in _entries(root, rel):
        if not (_is_partial(entry.name) and entry.is_file(follow_symlinks=False)):
            continue
        target = entry.name[1 : -len(_PARTIAL)].rpartition(".")[0]
        if target and target.startswith(start):
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # its writer finished (renamed it) meanwhile
                continue
            written = datetime.fromtimestamp(st.st_mtime, UTC)
            found.append(UploadInfo(rel + target, rel + entry.name, None, written))
    found.sort(key=lambda u: (u.key, u.upload_id))
    return found


def _is_partial(name: str) -> bool:
    return name.startswith(".") and name.endswith(_PARTIAL)


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))


async def _in_thread(func: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run blocking I/O in a thread. If the caller is cancelled, wait for the
    thread to finish before re-raising, so no descriptor is closed under it."""
    task = asyncio.ensure_future(asyncio.to_thread(func, *args, **kwargs))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await task
        raise


def _pread(fd: int, size: int, offset: int, path: Path) -> bytes:
    try:
        return os.pread(fd, size, offset)
    except OSError as exc:
        raise _os_error(exc, "cannot read", path) from exc


def _pwrite(fd: int, data: bytes, offset: int, path: Path) -> None:
    view = memoryview(data)
    try:
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written
    except OSError as exc:
        raise _os_error(exc, "cannot write", path) from exc


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the link is done
    finally:
        os.close(fd)


def _os_error(exc: OSError, doing: str, path: Path) -> StorageError:
    reason = exc.strerror or str(exc)
    if isinstance(exc, PermissionError):
        return AccessDenied(f"{doing} {path}: {reason}")
    if exc.errno == errno.ENOSPC:
        return StorageError(f"{doing} {path}: no space left on the device")
    return StorageError(f"{doing} {path}: {reason}")
