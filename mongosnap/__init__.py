"""mongosnap: streaming MongoDB backups to S3 or a directory, and healing."""

from __future__ import annotations

from ._errors import (
    AccessDenied,
    ArchiveError,
    AuthenticationFailed,
    BucketNotFound,
    CorruptArchive,
    DatabaseNotFound,
    HealIncomplete,
    Interrupted,
    MongosnapError,
    NoBackupsFound,
    ObjectExists,
    ObjectNotFound,
    ServerUnreachable,
    SourceError,
    StorageError,
    Terminated,
    TruncatedArchive,
    UnsafeArchive,
    UsageError,
)

__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "ArchiveError",
    "AuthenticationFailed",
    "BucketNotFound",
    "CorruptArchive",
    "DatabaseNotFound",
    "HealIncomplete",
    "Interrupted",
    "MongosnapError",
    "NoBackupsFound",
    "ObjectExists",
    "ObjectNotFound",
    "ServerUnreachable",
    "SourceError",
    "StorageError",
    "Terminated",
    "TruncatedArchive",
    "UnsafeArchive",
    "UsageError",
    "__version__",
]
