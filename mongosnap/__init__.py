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
from ._version import __version__
from .pipelines.backup import BackupResult, CollectionResult, backup
from .progress import Progress, ProgressCallback, Stage
from .storage import LocalStorage, MemoryStorage, S3Config, S3Storage, Storage, open_storage

__all__ = [
    "AccessDenied",
    "ArchiveError",
    "AuthenticationFailed",
    "BackupResult",
    "BucketNotFound",
    "CollectionResult",
    "CorruptArchive",
    "DatabaseNotFound",
    "HealIncomplete",
    "Interrupted",
    "LocalStorage",
    "MemoryStorage",
    "MongosnapError",
    "NoBackupsFound",
    "ObjectExists",
    "ObjectNotFound",
    "Progress",
    "ProgressCallback",
    "S3Config",
    "S3Storage",
    "ServerUnreachable",
    "SourceError",
    "Stage",
    "Storage",
    "StorageError",
    "Terminated",
    "TruncatedArchive",
    "UnsafeArchive",
    "UsageError",
    "__version__",
    "backup",
    "open_storage",
]
