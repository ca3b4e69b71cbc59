"""The storage contract: where archives live. It knows nothing of BSON or tar.

A storage is a namespace of immutable objects under one root (a bucket and
prefix, or a directory). Keys are relative to that root and use ``/``. A
storage is one level: ``list`` and ``uploads`` show the keys directly under
the root (or under the level a prefix ending in ``/`` names), never those
below a further ``/``, so ``s3://b`` never sees what ``s3://b/staging``
holds.
Every backend (local directory, S3, in-memory) honours the same contract and
runs the same conformance suite (``tests/storage/test_conformance.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Literal, Protocol, runtime_checkable

from .._errors import UsageError


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime | None = None
    storage_class: str | None = None
    """The S3 storage class a listing reports (None: the backend has none)."""
    retain_until: datetime | None = None
    """Until when S3 Object Lock forbids deleting it (``stat`` only; None: no lock)."""


LockMode = Literal["GOVERNANCE", "COMPLIANCE"]


@dataclass(frozen=True)
class Retention:
    """An S3 Object Lock retention for a new object: until ``until`` nobody
    may delete that version (GOVERNANCE: except with the bypass permission;
    COMPLIANCE: nobody at all, not even the account's root user)."""

    until: datetime
    mode: LockMode = "GOVERNANCE"


@dataclass(frozen=True)
class UploadInfo:
    """A write that was started and neither committed nor aborted: an S3
    multipart upload, a local temporary file, an open in-memory writer. It may
    be another process's live write, or what a killed one left behind."""

    key: str
    upload_id: str
    """What ``abort_upload`` needs to find it (S3: the UploadId)."""
    initiated: datetime | None = None
    last_written: datetime | None = None
    """When data last arrived, if the backend can say (S3: the newest part)."""

    @property
    def last_active(self) -> datetime | None:
        """The later of ``initiated`` and ``last_written``."""
        times = [t for t in (self.initiated, self.last_written) if t is not None]
        return max(times) if times else None


def refuse_retention(url: str, retention: Retention | None) -> None:
    """For backends that cannot lock objects: a lock asked for is a usage error."""
    if retention is not None:
        raise UsageError(f"{url} cannot lock objects: only S3 buckets with Object Lock can")


@runtime_checkable
class ObjectWriter(Protocol):
    """Streams one new object. Nothing is visible under the key until commit().

    The object is the concatenation of every ``write`` and ``reserve`` in call
    order. A reserved region is written later with ``fill`` (same length),
    which lets a producer emit a fixed-size header before it knows its content.
    A backend must keep back any bytes that share an upload unit with an
    unfilled reservation; everything else may be uploaded as it comes, so
    memory stays bounded by the reservations plus the writer's buffers.

    Any error or cancellation inside write, reserve, fill or commit aborts the
    writer before it propagates; misuse (filling an offset that holds no
    unfilled reservation, a length that differs, using a finished writer)
    raises StorageError. As an async context manager a writer aborts on
    leaving the block, unless commit() succeeded inside it::

        async with storage.open_writer("a/b") as writer:
            await writer.write(data)
            await writer.commit()
    """

    discarded: bool | None
    """None until aborted; then whether everything written was removed."""

    @property
    def position(self) -> int:
        """Bytes written or reserved so far: the offset of the next write."""
        ...

    async def write(self, data: bytes) -> None:
        """Append data. May wait for uploads to drain (backpressure)."""
        ...

    async def reserve(self, placeholder: bytes) -> int:
        """Append a placeholder to be replaced by fill(); return its offset."""
        ...

    async def fill(self, offset: int, data: bytes) -> None:
        """Replace a reserved region; ``len(data)`` must equal the placeholder's."""
        ...

    async def commit(self) -> ObjectInfo:
        """Make the object visible atomically; every reservation must be filled.

        Raises ObjectExists if the key appeared meanwhile (never overwrites).
        On any failure the writer aborts itself before raising.
        """
        ...

    async def abort(self) -> None:
        """Discard everything written; idempotent; leaves nothing behind."""
        ...

    async def __aenter__(self) -> ObjectWriter: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Abort unless committed (an exception leaving the block included)."""
        ...


@runtime_checkable
class Storage(Protocol):
    """A flat store of immutable objects."""

    @property
    def url(self) -> str:
        """Where this storage points, without credentials (for messages)."""
        ...

    async def check(self) -> None:
        """Fail early if the storage cannot be reached or written.

        Raises BucketNotFound, AccessDenied or StorageError.
        """
        ...

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Objects whose key starts with prefix (a string, not a folder) and
        holds no ``/`` after it, in ascending key order: one level, like an
        S3 listing with the delimiter ``/``. ``list()`` is the root's level,
        ``list("a/")`` the level of ``a/``; ``a/b`` is in neither."""
        ...

    async def stat(self, key: str) -> ObjectInfo:
        """Raises ObjectNotFound."""
        ...

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Stream bytes [start, end) of an object (end None: to its end).

        Like a slice, the range is clipped to the object's size. Raises
        ObjectNotFound (when iteration starts). Chunks are at most 1 MiB.
        """
        ...

    async def read_bytes(self, key: str, *, limit: int) -> bytes:
        """Read a whole small object; raises StorageError if larger than limit."""
        ...

    async def put(self, key: str, data: bytes, *, retention: Retention | None = None) -> ObjectInfo:
        """Store a small object atomically; raises ObjectExists if present.

        ``retention`` locks it (S3 Object Lock); a backend that cannot lock
        objects raises UsageError, a bucket without Object Lock LockUnavailable.
        """
        ...

    def open_writer(self, key: str, *, retention: Retention | None = None) -> ObjectWriter:
        """Start streaming a new object under key (see ObjectWriter; ``retention``
        as for put)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove an object; missing objects are not an error."""
        ...

    def uploads(self, prefix: str = "") -> AsyncIterator[UploadInfo]:
        """Unfinished writes at the level ``list(prefix)`` shows, by key.

        Some may be live (another task or process is writing them): judge by
        ``last_active`` before aborting one.
        """
        ...

    async def abort_upload(self, upload: UploadInfo) -> None:
        """Discard an unfinished write and what it stored; one already gone
        (committed, aborted) is not an error. A live writer's commit fails."""
        ...

    async def aclose(self) -> None:
        """Release connections. Idempotent."""
        ...
