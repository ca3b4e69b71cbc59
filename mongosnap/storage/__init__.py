"""Where archives live: one contract (base.py), three backends, one opener.

open_storage("s3://bucket/prefix")     S3Storage (config from S3Config)
open_storage("file:///srv/backups")    LocalStorage
open_storage("/srv/backups")           LocalStorage
open_storage("./name:with-colon")      LocalStorage (a bare ``word:`` prefix is refused)
open_storage("memory://name")          MemoryStorage, shared per name
open_storage(storage)                  the storage itself
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from .._errors import UsageError
from ._s3_config import S3Config
from .base import ObjectInfo, ObjectWriter, Retention, Storage, UploadInfo
from .local import LocalStorage
from .memory import MemoryStorage

if TYPE_CHECKING:
    from .s3 import S3Storage

__all__ = [
    "LocalStorage",
    "MemoryStorage",
    "ObjectInfo",
    "ObjectWriter",
    "Retention",
    "S3Config",
    "S3Storage",
    "Storage",
    "UploadInfo",
    "open_storage",
    "opened",
]

_SCHEMES = "s3://bucket[/prefix], file:///absolute/path, memory://name or a plain path"
_SUPPORTED = ("s3", "file", "memory")
_WORD_COLON = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
"""What a URL scheme looks like: a local path never starts so (write ./name:x)."""


def open_storage(
    destination: str | os.PathLike[str] | Storage, *, s3: S3Config | None = None
) -> Storage:
    """The storage a destination names; raises UsageError if it is malformed.

    ``s3`` configures S3 access (endpoint, credentials, part size...); it is
    ignored for other destinations.
    """
    if isinstance(destination, os.PathLike):
        return LocalStorage(os.fspath(destination))
    if not isinstance(destination, str):
        if isinstance(destination, Storage):
            return destination
        raise UsageError(f"a destination is a string or a path, not {type(destination).__name__}")
    if not destination:
        raise UsageError(f"empty destination: expected {_SCHEMES}")
    if not _WORD_COLON.match(destination):
        return LocalStorage(destination)
    scheme, _, rest = destination.partition(":")
    if scheme not in _SUPPORTED or not rest.startswith("//"):
        raise UsageError(
            f"unsupported destination {_shown(scheme, rest)!r}: expected {_SCHEMES}"
            " (schemes in lower case; a directory whose name holds ':' is ./NAME)"
        )
    parts = urlsplit(destination)
    if parts.query or parts.fragment:
        raise UsageError(f"destination {scheme}://... may not carry a query or a fragment")
    if scheme == "s3":
        return _s3(parts.netloc, parts.path, s3)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise UsageError("file:// destinations name a local path: file:///absolute/path")
        if not parts.path.startswith("/"):
            raise UsageError("file:// destinations need an absolute path: file:///absolute/path")
        return LocalStorage(unquote(parts.path))
    if scheme == "memory":
        if not parts.netloc or parts.path.strip("/"):
            raise UsageError("memory destinations are memory://name")
        return MemoryStorage.shared(parts.netloc)
    raise AssertionError(f"unhandled scheme {scheme}")


def _shown(scheme: str, rest: str) -> str:
    """How a rejected destination is named: its scheme and separator, never
    the rest (it may hold credentials)."""
    return scheme + ":" + ("//" if rest.startswith("//") else rest[:1] if rest[:1] == "/" else "")


@contextlib.asynccontextmanager
async def opened(
    destination: str | os.PathLike[str] | Storage, s3: S3Config | None = None
) -> AsyncIterator[Storage]:
    """The storage a destination names, closed on exit if this opened it.

    A Storage the caller passed stays open: it is the caller's to close.
    """
    storage = open_storage(destination, s3=s3)
    try:
        yield storage
    finally:
        if storage is not destination:
            await storage.aclose()


def __getattr__(name: str) -> Any:
    """S3Storage, imported on first use: aiobotocore takes longer to import than a
    small backup to a directory takes to run."""
    if name == "S3Storage":
        from .s3 import S3Storage

        return S3Storage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _s3(bucket: str, path: str, config: S3Config | None) -> S3Storage:
    from .s3 import S3Storage

    if "@" in bucket or ":" in bucket:
        # Never echo it back: it may hold credentials.
        raise UsageError("s3:// destinations take no credentials or port: s3://bucket[/prefix]")
    if not bucket:
        raise UsageError("s3:// destination without a bucket: expected s3://bucket[/prefix]")
    prefix = unquote(path).strip("/")
    if any(s in ("", ".", "..") for s in prefix.split("/")) and prefix:
        raise UsageError(f"invalid prefix in s3://{bucket}/{prefix}")
    return S3Storage(bucket, prefix, config)
