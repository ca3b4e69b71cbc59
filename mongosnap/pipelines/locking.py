"""S3 Object Lock for the pipelines: the retention a run gives what it writes,
and whether a lock still forbids deleting an object (docs/operations.md,
"Locked archives").

Only the objects a reader trusts are locked (archives, sidecars, oplog chunks
and their gap records); a name claim is not, since the backup deletes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .._errors import ObjectNotFound, UsageError
from ..storage import Retention, Storage
from ..storage.base import LockMode

MODES: dict[str, LockMode] = {"governance": "GOVERNANCE", "compliance": "COMPLIANCE"}


@dataclass(frozen=True)
class LockPolicy:
    """How long what a run writes stays locked, and in which mode."""

    period: timedelta
    mode: LockMode

    def retention(self) -> Retention:
        """The lock of an object written now."""
        return Retention(datetime.now(UTC).replace(microsecond=0) + self.period, self.mode)


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
    await check()
    return LockPolicy(lock_for, mode)


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
