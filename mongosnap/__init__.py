"""mongosnap: streaming MongoDB backups to S3 or a directory, and healing."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from ._errors import (
        AccessDenied,
        ArchiveError,
        AuthenticationFailed,
        BucketNotFound,
        CollectionBusy,
        CollectionExists,
        CorruptArchive,
        DatabaseNotArchived,
        DatabaseNotFound,
        HealIncomplete,
        HungUp,
        Interrupted,
        MongosnapError,
        NoBackupsFound,
        NothingMatched,
        ObjectArchived,
        ObjectExists,
        ObjectNotFound,
        PartialFailure,
        PointInTimeUnavailable,
        ReplayError,
        ServerUnreachable,
        SourceError,
        StorageError,
        Terminated,
        TruncatedArchive,
        UnsafeArchive,
        UsageError,
    )
    from .catalog import ArchiveInfo, ArchiveStatus, list_archives
    from .clients import AsyncMongoClientLike, MongoSource
    from .oplog.archiver import archive_oplog, list_oplog
    from .oplog.position import Ts, TsLike
    from .pipelines.backup import BackupReport, CollectionBackup, backup
    from .pipelines.engine import Status
    from .pipelines.heal import HealReplay, HealReport, SkippedArchive, heal
    from .pipelines.prune import PruneDecision, PruneReport, prune
    from .pipelines.restore import CollectionOutcome, RestoreReport, restore
    from .pipelines.undo import UndoReport, undo
    from .pipelines.verify import CollectionCheck, Problem, VerifyReport, verify
    from .progress import Progress, ProgressCallback, Stage
    from .storage import (
        LocalStorage,
        MemoryStorage,
        S3Config,
        S3Storage,
        Storage,
        open_storage,
        opened,
    )

# Imported on first use (PEP 562), so `mongosnap --version` and `--help` stay fast:
# the pipelines pull in pymongo and aiobotocore.
_EXPORTS = {
    "AccessDenied": "._errors",
    "ArchiveError": "._errors",
    "AuthenticationFailed": "._errors",
    "BucketNotFound": "._errors",
    "CollectionBusy": "._errors",
    "CollectionExists": "._errors",
    "CorruptArchive": "._errors",
    "DatabaseNotArchived": "._errors",
    "DatabaseNotFound": "._errors",
    "HealIncomplete": "._errors",
    "HungUp": "._errors",
    "Interrupted": "._errors",
    "MongosnapError": "._errors",
    "NoBackupsFound": "._errors",
    "NothingMatched": "._errors",
    "ObjectArchived": "._errors",
    "ObjectExists": "._errors",
    "ObjectNotFound": "._errors",
    "PartialFailure": "._errors",
    "PointInTimeUnavailable": "._errors",
    "ReplayError": "._errors",
    "ServerUnreachable": "._errors",
    "SourceError": "._errors",
    "StorageError": "._errors",
    "Terminated": "._errors",
    "TruncatedArchive": "._errors",
    "UnsafeArchive": "._errors",
    "UsageError": "._errors",
    "ArchiveInfo": ".catalog",
    "ArchiveStatus": ".catalog",
    "list_archives": ".catalog",
    "archive_oplog": ".oplog.archiver",
    "list_oplog": ".oplog.archiver",
    "Ts": ".oplog.position",
    "TsLike": ".oplog.position",
    "BackupReport": ".pipelines.backup",
    "CollectionBackup": ".pipelines.backup",
    "backup": ".pipelines.backup",
    "HealReplay": ".pipelines.heal",
    "HealReport": ".pipelines.heal",
    "heal": ".pipelines.heal",
    "PruneReport": ".pipelines.prune",
    "prune": ".pipelines.prune",
    "CollectionOutcome": ".pipelines.restore",
    "RestoreReport": ".pipelines.restore",
    "restore": ".pipelines.restore",
    "UndoReport": ".pipelines.undo",
    "undo": ".pipelines.undo",
    "VerifyReport": ".pipelines.verify",
    "verify": ".pipelines.verify",
    "Progress": ".progress",
    "ProgressCallback": ".progress",
    "Stage": ".progress",
    "LocalStorage": ".storage",
    "MemoryStorage": ".storage",
    "S3Config": ".storage",
    "S3Storage": ".storage",
    "Storage": ".storage",
    "open_storage": ".storage",
    "Status": ".pipelines.engine",
    "SkippedArchive": ".pipelines.heal",
    "PruneDecision": ".pipelines.prune",
    "CollectionCheck": ".pipelines.verify",
    "Problem": ".pipelines.verify",
    "opened": ".storage",
    "AsyncMongoClientLike": ".clients",
    "MongoSource": ".clients",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "AccessDenied",
    "ArchiveError",
    "ArchiveInfo",
    "ArchiveStatus",
    "AsyncMongoClientLike",
    "AuthenticationFailed",
    "BackupReport",
    "BucketNotFound",
    "CollectionBackup",
    "CollectionBusy",
    "CollectionCheck",
    "CollectionExists",
    "CollectionOutcome",
    "CorruptArchive",
    "DatabaseNotArchived",
    "DatabaseNotFound",
    "HealIncomplete",
    "HealReplay",
    "HealReport",
    "HungUp",
    "Interrupted",
    "LocalStorage",
    "MemoryStorage",
    "MongoSource",
    "MongosnapError",
    "NoBackupsFound",
    "NothingMatched",
    "ObjectArchived",
    "ObjectExists",
    "ObjectNotFound",
    "PartialFailure",
    "PointInTimeUnavailable",
    "Problem",
    "Progress",
    "ProgressCallback",
    "PruneDecision",
    "PruneReport",
    "ReplayError",
    "RestoreReport",
    "S3Config",
    "S3Storage",
    "ServerUnreachable",
    "SkippedArchive",
    "SourceError",
    "Stage",
    "Status",
    "Storage",
    "StorageError",
    "Terminated",
    "TruncatedArchive",
    "Ts",
    "TsLike",
    "UndoReport",
    "UnsafeArchive",
    "UsageError",
    "VerifyReport",
    "__version__",
    "archive_oplog",
    "backup",
    "heal",
    "list_archives",
    "list_oplog",
    "open_storage",
    "opened",
    "prune",
    "restore",
    "undo",
    "verify",
]
