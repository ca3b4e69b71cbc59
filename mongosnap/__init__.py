"""mongosnap: streaming MongoDB backups to S3 or a directory, and healing."""

from __future__ import annotations

from ._errors import (
    AccessDenied,
    ArchiveError,
    AuthenticationFailed,
    BucketNotFound,
    CollectionExists,
    CorruptArchive,
    DatabaseNotFound,
    HealIncomplete,
    Interrupted,
    MongosnapError,
    NoBackupsFound,
    ObjectExists,
    ObjectNotFound,
    PartialFailure,
    ServerUnreachable,
    SourceError,
    StorageError,
    Terminated,
    TruncatedArchive,
    UnsafeArchive,
    UsageError,
)
from ._version import __version__
from .catalog import ArchiveInfo, ArchiveStatus, list_archives
from .pipelines.backup import BackupResult, CollectionResult, backup
from .pipelines.heal import HealReport, heal
from .pipelines.prune import PruneReport, prune
from .pipelines.restore import CollectionOutcome, RestoreResult, restore
from .pipelines.verify import VerifyReport, verify
from .progress import Progress, ProgressCallback, Stage
from .storage import LocalStorage, MemoryStorage, S3Config, S3Storage, Storage, open_storage

__all__ = [
    "AccessDenied",
    "ArchiveError",
    "ArchiveInfo",
    "ArchiveStatus",
    "AuthenticationFailed",
    "BackupResult",
    "BucketNotFound",
    "CollectionExists",
    "CollectionOutcome",
    "CollectionResult",
    "CorruptArchive",
    "DatabaseNotFound",
    "HealIncomplete",
    "HealReport",
    "Interrupted",
    "LocalStorage",
    "MemoryStorage",
    "MongosnapError",
    "NoBackupsFound",
    "ObjectExists",
    "ObjectNotFound",
    "PartialFailure",
    "Progress",
    "ProgressCallback",
    "PruneReport",
    "RestoreResult",
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
    "VerifyReport",
    "__version__",
    "backup",
    "heal",
    "list_archives",
    "open_storage",
    "prune",
    "restore",
    "verify",
]
