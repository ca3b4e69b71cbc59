"""Unfinished uploads that failed or killed backups left behind: list, abort.

A backup aborts its upload when it fails, retrying for about a minute; an
outage that lasts longer, or a process killed outright, leaves the upload
behind (on S3 its parts stay stored and billed; in a directory, a hidden
``.NAME.XXXX.partial`` file). ``backup`` and ``prune`` call
``abort_stale_uploads`` first. It touches only:

- this tool's own uploads: the key is at the destination's level and its name
  is a mongosnap archive name (``YYYY-MM-DD-HH-MM-SS-mongodb-dump.tar.gz``,
  ``.tar.zst``, ``.tar``);
- stale ones: no sign of life for ``STALE_AFTER`` (24 hours). The signs are
  when the upload was created, when its newest part arrived, and the time in
  its name (when its backup started; some servers report no useful creation
  time). A live backup sends a part every few seconds to minutes, so a
  concurrent backup's upload is never aborted unless it made no progress at
  all for a day.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import units
from .._errors import StorageError
from ..archive.manifest import parse_archive_name
from ..storage import Storage, UploadInfo

log = logging.getLogger("mongosnap.storage")

STALE_AFTER = timedelta(hours=24)
"""How long an upload of ours must show no sign of life before it is aborted."""


@dataclass(frozen=True)
class PendingUpload:
    """An unfinished upload at a destination, as ``list --uploads`` shows it."""

    upload: UploadInfo
    ours: bool
    """Whether its key is a mongosnap archive name."""
    last_active: datetime | None
    """The newest sign of life: created, newest part, the time in its name."""

    @property
    def key(self) -> str:
        return self.upload.key

    def age(self, now: datetime) -> timedelta | None:
        """How long since the upload was created (None: the server does not say)."""
        initiated = self.upload.initiated
        return None if initiated is None else now - initiated

    def idle(self, now: datetime) -> timedelta | None:
        """How long since its last sign of life."""
        return None if self.last_active is None else now - self.last_active

    def to_dict(self, now: datetime) -> dict[str, Any]:
        age, idle = self.age(now), self.idle(now)
        return {
            "key": self.key,
            "upload_id": self.upload.upload_id,
            "initiated": units.iso_utc(self.upload.initiated),
            "last_active": units.iso_utc(self.last_active),
            "age_seconds": None if age is None else round(age.total_seconds()),
            "idle_seconds": None if idle is None else round(idle.total_seconds()),
            "ours": self.ours,
        }


async def pending_uploads(storage: Storage) -> list[PendingUpload]:
    """Every unfinished upload at the storage's level, by key."""
    return [_describe(upload) async for upload in storage.uploads()]


async def abort_stale_uploads(
    storage: Storage, *, stale_after: timedelta | None = None, now: datetime | None = None
) -> int:
    """Abort this tool's uploads idle for ``stale_after`` (default STALE_AFTER);
    return how many. Never raises a StorageError: cleaning up must not stop
    the backup or prune that asked for it (what fails is logged)."""
    limit = STALE_AFTER if stale_after is None else stale_after
    moment = now or datetime.now(UTC)
    try:
        pending = await pending_uploads(storage)
    except StorageError as exc:
        log.warning("cannot list unfinished uploads in %s: %s", storage.url, exc)
        return 0
    aborted = 0
    for found in pending:
        idle = found.idle(moment)
        if not found.ours or idle is None or idle < limit:
            continue
        try:
            await storage.abort_upload(found.upload)
        except StorageError as exc:
            log.warning("cannot abort the unfinished upload of %s: %s", found.key, exc)
        else:
            aborted += 1
    if aborted:
        log.warning(
            "aborted %d unfinished upload(s) in %s left by failed backups (idle over %s)",
            aborted,
            storage.url,
            units.duration(limit),
        )
    else:
        log.info("no stale unfinished upload in %s", storage.url)
    return aborted


def _describe(upload: UploadInfo) -> PendingUpload:
    named = parse_archive_name(upload.key.rsplit("/", 1)[-1])
    signs = [t for t in (upload.last_active, named) if t is not None]
    return PendingUpload(upload, named is not None, max(signs) if signs else None)


__all__ = ["STALE_AFTER", "PendingUpload", "abort_stale_uploads", "pending_uploads"]
