"""MemoryStorage: objects in a dict. A complete backend, and a fake for tests.

``MemoryStorage()`` is private to its instance; ``MemoryStorage.shared(name)``
(what ``open_storage("memory://name")`` returns) sees the same objects as every
other storage opened under that name in the process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import ClassVar

from .._errors import ObjectExists, ObjectNotFound, StorageError
from ._keys import CHUNK_SIZE, check_key, check_range
from ._writer import BaseWriter
from .base import ObjectInfo


class _Object:
    __slots__ = ("data", "modified")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.modified = datetime.now(UTC)


class MemoryStorage:
    _registry: ClassVar[dict[str, dict[str, _Object]]] = {}

    def __init__(self, name: str = "") -> None:
        self._name = name
        self._objects: dict[str, _Object] = {}

    @classmethod
    def shared(cls, name: str) -> MemoryStorage:
        """A storage over the process-wide object set called name."""
        storage = cls(name)
        storage._objects = cls._registry.setdefault(name, {})
        return storage

    @property
    def url(self) -> str:
        return f"memory://{self._name}"

    async def check(self) -> None:
        return None

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        for key in sorted(k for k in self._objects if k.startswith(prefix)):
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

    async def put(self, key: str, data: bytes) -> ObjectInfo:
        writer = self.open_writer(key)
        await writer.write(data)
        return await writer.commit()

    def open_writer(self, key: str) -> _MemoryWriter:
        return _MemoryWriter(self, key)

    async def delete(self, key: str) -> None:
        self._objects.pop(check_key(key), None)

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


class _MemoryWriter(BaseWriter):
    def __init__(self, storage: MemoryStorage, key: str) -> None:
        super().__init__(key)
        self._storage = storage
        self._buffer = bytearray()

    async def _append(self, offset: int, data: bytes) -> None:
        self._buffer += data

    async def _fill(self, offset: int, data: bytes) -> None:
        self._buffer[offset : offset + len(data)] = data

    async def _commit(self) -> ObjectInfo:
        objects = self._storage._objects
        if self.key in objects:
            raise ObjectExists(f"{self._storage.url}/{self.key} already exists")
        obj = objects[self.key] = _Object(bytes(self._buffer))
        self._buffer = bytearray()
        return ObjectInfo(self.key, len(obj.data), obj.modified)

    async def _discard(self) -> None:
        self._buffer = bytearray()
