"""S3 Object Lock for the pipelines: the retention a run gives what it writes,
and whether a lock still forbids deleting an object (docs/operations.md,
"Locked archives").

Only the objects a reader trusts are locked (archives, sidecars, oplog chunks
and their gap records); a name claim is not, since the backup deletes it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import units
from .._errors import ObjectNotFound, UsageError
from ..storage import Retention, Storage
from ..storage.base import LockMode

log = logging.getLogger("mongosnap.lock")

MODES: dict[str, LockMode] = {"governance": "GOVERNANCE", "compliance": "COMPLIANCE"}


SKEW_NOTICED = timedelta(seconds=2)
"""A storage clock this far ahead of the host's lengthens every lock (the
``Date`` header has one-second resolution, and a request takes time)."""


@dataclass(frozen=True)
class LockPolicy:
    """How long what a run writes stays locked, and in which mode."""

    period: timedelta
    mode: LockMode
    storage_ahead: timedelta = timedelta(0)
    """How far the storage's clock ran ahead of this host's (never negative)."""

    def retention(self) -> Retention:
        """The lock of an object written now.

        S3 enforces the lock by its own clock: from a host whose clock runs
        behind, "now + period" would end early, or before it began. So now
        is the later of the two clocks: a lock is never shorter than asked."""
        now = datetime.now(UTC) + self.storage_ahead
        return Retention(now.replace(microsecond=0) + self.period, self.mode)


async def lock_policy(
    storage: Storage, lock_for: timedelta | None, lock_mode: str = "governance"
) -> LockPolicy | None:
    """The run's lock policy (None: no lock), checked before anything is written.

    UsageError for a storage that cannot lock objects (a directory) or a bad
    mode or period; LockUnavailable for a bucket without Object Lock.
    """
    if lock_for is None:
        return None
    mode = MODES.get(lock_mode.lower())
    if mode is None:
        raise UsageError(f"lock mode must be governance or compliance, not {lock_mode!r}")
    if lock_for <= timedelta(0):
        raise UsageError("a lock must last a positive time")
    check = getattr(storage, "check_lock", None)
    if check is None:
        raise UsageError(f"{storage.url} cannot lock objects: only S3 buckets with Object Lock can")
    server_now = await check()
    return LockPolicy(lock_for, mode, _storage_ahead(storage, server_now))


def _storage_ahead(storage: Storage, server_now: datetime | None) -> timedelta:
    if server_now is None:
        return timedelta(0)
    ahead = server_now - datetime.now(UTC)
    if ahead <= SKEW_NOTICED:
        return timedelta(0)
    log.warning(
        "this host's clock runs %s behind %s's: locks are dated by the storage's clock",
        units.duration(ahead),
        storage.url,
    )
    return ahead


def locked(retention: Retention | None) -> dict[str, Any]:
    """The keyword a write passes to lock its object (none when unlocked, so a
    Storage written before locks existed keeps working)."""
    return {} if retention is None else {"retention": retention}


async def locked_until(storage: Storage, keys: list[str], now: datetime) -> datetime | None:
    """The latest lock among keys that still holds at ``now`` (None: none does).

    One HEAD per key on S3; a missing object holds no lock.
    """
    latest: datetime | None = None
    for key in keys:
        try:
            until = (await storage.stat(key)).retain_until
        except ObjectNotFound:
            continue
        if until is not None and until > now and (latest is None or until > latest):
            latest = until
    return latest
