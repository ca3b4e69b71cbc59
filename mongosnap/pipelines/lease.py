"""Leases: one run at a time restores a given collection.

Two heals of one collection at once (a cron heal and a ``--interval`` watch,
two replicas of a service) must not undo each other's staging copy: a run
that dropped the other's live copy as "stale" made that run's later inserts
re-create a remnant, which its count checks could not tell from the whole
and which was published (docs/heal.md, concurrent runs).

So a run takes the collection's lease before it touches anything of that
name (stale staging copies, its own), renews it while it loads, and gives it
back once the collection is published or discarded. A lease is a document in
``mongosnap_leases`` of the target database::

    {_id: <collection name>, owner: <run token>, holder: "host:pid", expires: <server time>}

A run that finds another run's unexpired lease leaves the collection alone
(Status.BUSY). A holder that died (SIGKILL, a lost host) stops renewing; once
its lease has expired the next run takes it over, and only then drops that
holder's staging copies. Times are the server's (hello's ``localTime``, taken
once per run as an offset from the local clock), so every run compares with
the same clock. Only inserts, updates and deletes by ``_id`` are used: no
transaction, which FerretDB 1.x lacks. The collection is dropped when a run
ends and no lease is left in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from .._errors import CollectionBusy, MongosnapError, SourceError, UsageError
from ..source import Source

log = logging.getLogger("mongosnap.restore")

LEASES = "mongosnap_leases"
LEASE_SECONDS = 60.0
"""How long a lease lasts without renewal; renewed every third of it. A run
that was killed keeps its collection for this long. ``MONGOSNAP_LEASE_SECONDS``
overrides it (tests use a short one; every run must use the same)."""
CLEANUP_SECONDS = 5.0
"""How long giving a lease back may take (the server may be gone): it then expires."""
_DUPLICATE_KEY = 11000
_HOLDER = f"{socket.gethostname()}:{os.getpid()}"


def lease_seconds() -> float:
    """LEASE_SECONDS, or ``MONGOSNAP_LEASE_SECONDS`` when set."""
    text = os.environ.get("MONGOSNAP_LEASE_SECONDS")
    if text is None:
        return LEASE_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 < seconds <= 86400):
        raise UsageError("MONGOSNAP_LEASE_SECONDS must be seconds, more than 0, at most 86400")
    return seconds


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # BSON dates come back naive UTC


class Leases:
    """The leases one run holds on collections of one database."""

    def __init__(self, target: Source, database: str, seconds: float | None = None) -> None:
        self.target = target
        self.database = database
        self.seconds = lease_seconds() if seconds is None else seconds
        self.owner = secrets.token_hex(8)
        self.held: set[str] = set()
        self._unsure: set[str] = set()
        """Leases whose taking was cut short: perhaps ours on the server."""
        self._offset: timedelta | None = None
        self._clock = asyncio.Lock()
        self._beat: asyncio.Task[None] | None = None

    async def acquire(self, name: str) -> bool:
        """Take ``name``'s lease: True if ours now, False if another run holds it."""
        now = await self._now()
        try:
            if not await self._insert(name, now):
                taken = await self._update({"_id": name, "expires": {"$lt": now}}, name, now)
                if not taken:
                    return False
                log.warning(
                    "%s.%s: took over the expired lease of a run that stopped", *self._ns(name)
                )
        except BaseException:
            self._unsure.add(name)  # sent, maybe executed: release() deletes it if ours
            raise
        self.held.add(name)
        if self._beat is None or self._beat.done():
            self._beat = asyncio.ensure_future(self._heartbeat())
        return True

    async def confirm(self, name: str) -> None:
        """Renew ``name``'s lease now; CollectionBusy if another run took it over.

        Called right before publishing: a run that was stalled past its
        lease's expiry must not publish over the run that took over.
        """
        if name not in self.held or not await self._renew(name):
            raise CollectionBusy(
                f"{'.'.join(self._ns(name))}: this run's lease expired and another run "
                "took the collection over; not published"
            )

    async def release(self, name: str) -> None:
        """Give ``name`` back (nothing if not held); a failure leaves it to expire."""
        if name not in self.held and name not in self._unsure:
            return
        self.held.discard(name)
        self._unsure.discard(name)
        with contextlib.suppress(MongosnapError, TimeoutError):
            async with asyncio.timeout(CLEANUP_SECONDS):
                await self._delete(name)

    async def _delete(self, name: str) -> None:
        await self.target.raw_command(
            self.database,
            {
                "delete": LEASES,
                "deletes": [{"q": {"_id": name, "owner": self.owner}, "limit": 1}],
            },
        )

    async def close(self) -> None:
        """Release every lease, stop renewing, drop the lease collection if empty."""
        for name in self.held | self._unsure:
            await self.release(name)
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._beat
            self._beat = None
        if self._offset is None:
            return  # never took a lease: never looked at the collection
        with contextlib.suppress(MongosnapError, TimeoutError):
            async with asyncio.timeout(CLEANUP_SECONDS):
                await self._drop_if_empty()

    async def _drop_if_empty(self) -> None:
        reply = await self.target.raw_command(
            self.database, {"find": LEASES, "limit": 1, "projection": {"_id": 1}}
        )
        if not reply["cursor"]["firstBatch"]:
            # Another run inserting its lease now loses it with the
            # collection; it notices when renewing and takes it again.
            await self.target.drop(self.database, LEASES)

    async def _heartbeat(self) -> None:
        while self.held:
            await asyncio.sleep(self.seconds / 3)
            for name in list(self.held):
                if name not in self.held:
                    continue
                try:
                    if not await self._renew(name):
                        log.warning("%s.%s: lease taken over by another run", *self._ns(name))
                except MongosnapError as exc:
                    log.warning("%s.%s: could not renew the lease: %s", *self._ns(name), exc)

    async def _renew(self, name: str) -> bool:
        now = await self._now()
        if await self._update({"_id": name, "owner": self.owner}, name, now):
            return True
        if name not in self.held:
            return False  # released meanwhile: never insert it again
        # Gone (its collection dropped by a run that found it empty): take it
        # again, unless another run holds it now.
        if await self._insert(name, now):
            return True
        self.held.discard(name)
        return False

    async def _now(self) -> datetime:
        """The server's time, from one hello per run and the local clock since."""
        async with self._clock:  # collections loaded together ask once
            if self._offset is None:
                reply = await self.target.raw_command("admin", {"hello": 1})
                server = reply.get("localTime")
                self._offset = server - _utcnow() if isinstance(server, datetime) else timedelta()
        return _utcnow() + self._offset

    def _fields(self, now: datetime) -> dict[str, Any]:
        expires = now + timedelta(seconds=self.seconds)
        return {"owner": self.owner, "holder": _HOLDER, "expires": expires}

    async def _insert(self, name: str, now: datetime) -> bool:
        """Insert the lease; False if one exists for ``name``."""
        document = {"_id": name, **self._fields(now)}
        reply = await self.target.raw_command(
            self.database, {"insert": LEASES, "documents": [document]}
        )
        errors = reply.get("writeErrors") or []
        if not errors:
            return True
        if all(e.get("code") == _DUPLICATE_KEY for e in errors):
            return False
        raise SourceError(f"{self.database}.{LEASES}: {errors[0].get('errmsg', 'insert failed')}")

    async def _update(self, query: dict[str, Any], name: str, now: datetime) -> bool:
        """Set our lease fields on the lease ``query`` matches; False if none does."""
        update = {"q": query, "u": {"$set": self._fields(now)}}
        reply = await self.target.raw_command(
            self.database, {"update": LEASES, "updates": [update]}
        )
        return bool(reply.get("n"))

    def _ns(self, name: str) -> tuple[str, str]:
        return self.database, name
