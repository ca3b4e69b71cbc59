"""MemoryStorage: objects in a dict. A complete backend, and a fake for tests.

``MemoryStorage()`` is private to its instance; ``MemoryStorage.shared(name)``
(what ``open_storage("memory://name")`` returns) sees the same objects as every
other storage opened under that name in the process. ``list`` shows one
level, like the other backends; ``uploads`` lists the writers that hold data
and are neither committed nor aborted.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import ClassVar

from .._errors import ObjectExists, ObjectNotFound, StorageError
from ._keys import CHUNK_SIZE, check_key, check_range
from ._writer import BaseWriter
from .base import ObjectInfo, Retention, UploadInfo, refuse_retention


class _Object:
    __slots__ = ("data", "modified")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.modified = datetime.now(UTC)


class MemoryStorage:
    _registry: ClassVar[dict[str, dict[str, _Object]]] = {}
    _pending_registry: ClassVar[dict[str, dict[str, UploadInfo]]] = {}
    _ids: ClassVar[itertools.count[int]] = itertools.count(1)

    def __init__(self, name: str = "") -> None:
        self._name = name
        self._objects: dict[str, _Object] = {}
        self._pending: dict[str, UploadInfo] = {}  # upload id: the writer's upload

    @classmethod
    def shared(cls, name: str) -> MemoryStorage:
        """A storage over the process-wide object set called name."""
        storage = cls(name)
        storage._objects = cls._registry.setdefault(name, {})
        storage._pending = cls._pending_registry.setdefault(name, {})
        return storage

    @property
    def url(self) -> str:
        return f"memory://{self._name}"

    async def check(self) -> None:
        return None

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        for key in sorted(k for k in self._objects if _at_level(k, prefix)):
            obj = self._objects.get(key)
            if obj is not None:
                yield ObjectInfo(key, len(obj.data), obj.modified)

    async def stat(self, key: str) -> ObjectInfo:
        obj = self._get(key)
        return ObjectInfo(key, len(obj.data), obj.modified)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        check_range(start, end)
        data = self._get(key).data
        stop = len(data) if end is None else min(end, len(data))
        for pos in range(start, stop, CHUNK_SIZE):
            yield data[pos : min(pos + CHUNK_SIZE, stop)]

    async def read_bytes(self, key: str, *, limit: int) -> bytes:
        data = self._get(key).data
        if len(data) > limit:
            raise StorageError(f"{self.url}/{key} holds {len(data)} bytes, over the {limit} limit")
        return data

    async def put(self, key: str, data: bytes, *, retention: Retention | None = None) -> ObjectInfo:
        refuse_retention(self.url, retention)
        writer = self.open_writer(key)
        await writer.write(data)
        return await writer.commit()

    def open_writer(self, key: str, *, retention: Retention | None = None) -> _MemoryWriter:
        refuse_retention(self.url, retention)
        return _MemoryWriter(self, key)

    async def delete(self, key: str) -> None:
        self._objects.pop(check_key(key), None)

    async def uploads(self, prefix: str = "") -> AsyncIterator[UploadInfo]:
        found = [u for u in self._pending.values() if _at_level(u.key, prefix)]
        for upload in sorted(found, key=lambda u: (u.key, u.upload_id)):
            yield upload

    async def abort_upload(self, upload: UploadInfo) -> None:
        self._pending.pop(upload.upload_id, None)

    async def aclose(self) -> None:
        return None

    async def __aenter__(self) -> MemoryStorage:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _get(self, key: str) -> _Object:
        obj = self._objects.get(check_key(key))
        if obj is None:
            raise ObjectNotFound(f"{self.url}/{key} does not exist")
        return obj


def _at_level(key: str, prefix: str) -> bool:
    return key.startswith(prefix) and "/" not in key[len(prefix) :]


class _MemoryWriter(BaseWriter):
    def __init__(self, storage: MemoryStorage, key: str) -> None:
        super().__init__(key)
        self._storage = storage
        self._buffer = bytearray()
        self._upload: UploadInfo | None = None

    async def _append(self, offset: int, data: bytes) -> None:
        if self._upload is None:
            upload_id = f"memory-{next(MemoryStorage._ids)}"
            self._upload = UploadInfo(self.key, upload_id, datetime.now(UTC))
            self._storage._pending[upload_id] = self._upload
        self._upload = replace(self._upload, last_written=datetime.now(UTC))
        self._storage._pending[self._upload.upload_id] = self._upload
        self._buffer += data

    async def _fill(self, offset: int, data: bytes) -> None:
        self._buffer[offset : offset + len(data)] = data

    async def _commit(self) -> ObjectInfo:
        objects = self._storage._objects
        if self._upload is not None and self._upload.upload_id not in self._storage._pending:
            raise StorageError(f"the write of {self._storage.url}/{self.key} was aborted")
        if self.key in objects:
            raise ObjectExists(f"{self._storage.url}/{self.key} already exists")
        obj = objects[self.key] = _Object(bytes(self._buffer))
        self._forget()
        return ObjectInfo(self.key, len(obj.data), obj.modified)

    async def _discard(self) -> None:
        self._forget()

    def _forget(self) -> None:
        self._buffer = bytearray()
        if self._upload is not None:
            self._storage._pending.pop(self._upload.upload_id, None)
