"""A lock on a destination for work that must not run twice at once (rekey).

The storage offers no compare-and-swap everywhere, so the lock is restic's:
each run writes its own object ``locks/<kind>-<time>-<run>.json`` (the time
to the millisecond; a new name, never an overwrite), then lists ``locks/``. If another run's fresh
lock of the same kind is there, it deletes its own and stops with
DestinationBusy. Two runs starting together may both see the other and both
stop; never may both go on. A holder rewrites its lock (a new object, then
the old one deleted) every REFRESH, so a live lock never goes stale; a lock
not refreshed for STALE (plus the clock tolerance, since the judging host's
clock is not the writer's) belongs to a killed run and is removed.

Locks live one level below the destination's root, like drill records: list,
prune and every archive reader never see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from .. import units
from .._errors import DestinationBusy, ObjectNotFound, StorageError
from ..archive.manifest import CLOCK_TOLERANCE
from ..storage import ObjectInfo, Storage

log = logging.getLogger("mongosnap.lock")

FOLDER = "locks/"
REFRESH = timedelta(minutes=5)
STALE = timedelta(minutes=30)
_NAME = "%Y%m%dT%H%M%S"


@contextlib.asynccontextmanager
async def holding(
    storage: Storage, kind: str, *, break_others: bool = False
) -> AsyncIterator[None]:
    """Hold the destination's ``kind`` lock for the block; DestinationBusy if
    another run holds it. ``break_others``: the operator says no other run
    is alive; their locks are removed instead."""
    run = uuid.uuid4().hex[:12]
    key = await _write(storage, kind, run)
    try:
        await _check_alone(storage, kind, run, break_others)
    except BaseException:
        await _remove(storage, key)
        raise
    state = {"key": key}
    refresher = asyncio.create_task(_refresh(storage, kind, run, state))
    try:
        yield
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
        await _remove(storage, state["key"])


async def _write(storage: Storage, kind: str, run: str) -> str:
    now = datetime.now(UTC)
    key = f"{FOLDER}{kind}-{now.strftime(_NAME)}{now.microsecond // 1000:03d}-{run}.json"
    body = {"kind": kind, "run": run, "host": socket.gethostname(), "pid": os.getpid()}
    await storage.put(key, json.dumps({**body, "written": units.iso_utc(now)}).encode())
    return key


async def _check_alone(storage: Storage, kind: str, run: str, break_others: bool) -> None:
    now = datetime.now(UTC)
    for obj in [o async for o in storage.list(FOLDER)]:
        owner = _owner(obj.key, kind)
        if owner is None or owner == run:
            continue
        if break_others or _stale(obj, now):
            why = "as asked" if break_others else "its run is gone"
            log.warning("removing the %s lock %s (%s)", kind, obj.key, why)
            await _remove(storage, obj.key)
            continue
        raise DestinationBusy(
            f"another {kind} of {storage.url} is running (lock {obj.key}, refreshed"
            f" {units.iso_utc(_written(obj))}); try again once it ends, or after"
            f" {units.duration(STALE + CLOCK_TOLERANCE)} without a refresh if it was killed"
            " (or with --break-lock when none is running)"
        )


async def _refresh(storage: Storage, kind: str, run: str, state: dict[str, str]) -> None:
    """Write a fresh lock, then drop the old: the run always has one."""
    while True:
        await asyncio.sleep(REFRESH.total_seconds())
        try:
            key = await _write(storage, kind, run)
        except StorageError as exc:
            log.warning("cannot refresh the %s lock: %s", kind, exc)
            continue
        old, state["key"] = state["key"], key
        await _remove(storage, old)


async def _remove(storage: Storage, key: str) -> None:
    try:
        await storage.delete(key)
    except ObjectNotFound:
        pass
    except StorageError as exc:  # it goes stale on its own
        log.warning("cannot remove the lock %s: %s", key, exc)


def _owner(key: str, kind: str) -> str | None:
    """The run a lock of ``kind`` belongs to; None for any other object."""
    name = key.removeprefix(FOLDER)
    if not (name.startswith(f"{kind}-") and name.endswith(".json")):
        return None
    parts = name.removesuffix(".json").split("-")
    if len(parts) != 3:
        return None
    try:
        _name_time(parts[1])
    except ValueError:
        return None
    return parts[2]


def _name_time(stamp: str) -> datetime:
    """The time of a lock's name: seconds, then three digits of milliseconds."""
    if len(stamp) != 18 or not stamp[15:].isdigit():
        raise ValueError(stamp)
    when = datetime.strptime(stamp[:15], _NAME).replace(tzinfo=UTC)
    return when + timedelta(milliseconds=int(stamp[15:]))


def _written(obj: ObjectInfo) -> datetime:
    """When a lock was last written: the storage's time, else its name's."""
    if obj.modified is not None:
        return obj.modified.astimezone(UTC)
    return _name_time(obj.key.removeprefix(FOLDER).split("-")[1])


def _stale(obj: ObjectInfo, now: datetime) -> bool:
    return now - _written(obj) > STALE + CLOCK_TOLERANCE
