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

A run restoring many collections does not pay three writes per collection
(about 30 ms on FerretDB, more than a small collection's data): the leases
of the names it will claim next (``plan``) are taken GROUP at a time with
one unordered ``insert``, all held leases are renewed with one ``update``
(read back only when it did not match them all), and given-back leases are
deleted GROUP at a time and at the end. Before publishing, a lease is
renewed on its own only when its last renewal is older than a third of the
lease: one that recent still has two thirds of its time left, as much as a
heartbeat guarantees, and nobody can take an unexpired lease over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Iterable
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
GROUP = 64
"""Leases taken, or given back, with one command."""
_RENEW_CHUNK = 1000
"""Names per renewal command (its ``$in`` list and read-back stay small)."""
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


def _stamp() -> tuple[float, float]:
    """When a command was sent, by two clocks: a suspended machine stops the
    monotonic one, a clock being set moves the other."""
    return time.monotonic(), time.time()


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
        self._planned: list[str] = []
        """Names this run will claim, in order: their leases are taken by groups."""
        self._tried: set[str] = set()
        """Names whose lease was asked for (held now or not)."""
        self._renewed: dict[str, tuple[float, float]] = {}
        """When the last command that set a held lease's expiry was sent (_stamp)."""
        self._returned: list[str] = []
        """Leases given back and not deleted yet."""
        self._offset: timedelta | None = None
        self._clock = asyncio.Lock()
        self._taking = asyncio.Lock()
        self._beat: asyncio.Task[None] | None = None

    def plan(self, names: Iterable[str]) -> None:
        """The names this run will claim, in that order: each acquire() then
        takes the leases of the next GROUP together."""
        self._planned = [n for n in dict.fromkeys(names) if n not in self._tried]

    async def acquire(self, name: str) -> bool:
        """Take ``name``'s lease: True if ours now, False if another run holds it."""
        async with self._taking:
            if name not in self._tried:
                await self._take(self._group(name))
        if self.held and (self._beat is None or self._beat.done()):
            self._beat = asyncio.ensure_future(self._heartbeat())  # for the group's too
        return name in self.held

    def _group(self, name: str) -> list[str]:
        """``name`` and the next planned names not tried yet, GROUP at most."""
        group = [name]
        for other in self._planned:
            if len(group) >= GROUP:
                break
            if other != name and other not in self._tried:
                group.append(other)
        return group

    async def _take(self, names: list[str]) -> None:
        sent = _stamp()  # before the expiry is computed: a lease is never thought younger
        now = await self._now()
        retried = self._unsure.intersection(names)  # a taking cut short: maybe ours
        self._unsure.update(names)  # sent, maybe executed: release() deletes them if ours
        busy = await self._insert_many(names, now)
        for name in names:
            if name not in busy:
                self._hold(name, sent)
        for name in busy:
            await self._take_over(name, now, sent, mine=name in retried)
        self._tried.update(names)
        self._unsure.difference_update(names)

    async def _take_over(
        self, name: str, now: datetime, sent: tuple[float, float], *, mine: bool
    ) -> None:
        """Take ``name``'s lease if it has expired (its holder stopped); with
        ``mine`` (an earlier taking was cut short) also if it is our own."""
        query: dict[str, Any] = {"_id": name, "expires": {"$lt": now}}
        if mine:
            query = {"_id": name, "$or": [{"expires": {"$lt": now}}, {"owner": self.owner}]}
        if not await self._update(query, now):
            return
        self._hold(name, sent)
        if not mine:
            log.warning("%s.%s: took over the expired lease of a run that stopped", *self._ns(name))

    def _hold(self, name: str, sent: tuple[float, float]) -> None:
        self.held.add(name)
        self._renewed[name] = sent

    async def confirm(self, name: str) -> None:
        """Make sure ``name``'s lease is ours for two thirds of its time at least;
        CollectionBusy if another run took it over.

        Called right before publishing: a run that was stalled past its
        lease's expiry must not publish over the run that took over.
        """
        if name in self.held and self._fresh(name):
            return
        if name not in self.held or not await self._renew(name):
            raise CollectionBusy(
                f"{'.'.join(self._ns(name))}: this run's lease expired and another run "
                "took the collection over; not published"
            )

    def _fresh(self, name: str) -> bool:
        """Whether ``name``'s lease was renewed less than a third of it ago."""
        then = self._renewed.get(name)
        if then is None:
            return False
        now = _stamp()
        ages = (now[0] - then[0], now[1] - then[1])
        return all(0 <= age < self.seconds / 3 for age in ages)

    async def release(self, name: str) -> None:
        """Give ``name`` back (nothing if not held); deleted with the next
        GROUP given back, or at close(). A failure leaves them to expire."""
        if name not in self.held and name not in self._unsure:
            return
        self.held.discard(name)
        self._unsure.discard(name)
        self._tried.discard(name)  # a later acquire() takes it anew
        self._renewed.pop(name, None)
        self._returned.append(name)
        if len(self._returned) >= GROUP or not (self.held or self._unsure):
            await self._give_back()

    async def _give_back(self) -> None:
        names, self._returned = self._returned, []
        if not names:
            return
        with contextlib.suppress(MongosnapError, TimeoutError):
            async with asyncio.timeout(CLEANUP_SECONDS):
                await self._delete(names)

    async def _delete(self, names: list[str]) -> None:
        query: dict[str, Any] = {"_id": names[0] if len(names) == 1 else {"$in": names}}
        await self.target.raw_command(
            self.database,
            {
                "delete": LEASES,
                "deletes": [{"q": {**query, "owner": self.owner}, "limit": 0}],
            },
        )

    async def close(self) -> None:
        """Release every lease, stop renewing, drop the lease collection if empty."""
        self._returned.extend(self.held | self._unsure)
        self.held.clear()
        self._unsure.clear()
        self._renewed.clear()
        await self._give_back()
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
            names = sorted(self.held)
            for start in range(0, len(names), _RENEW_CHUNK):
                try:
                    await self._renew_all(names[start : start + _RENEW_CHUNK])
                except MongosnapError as exc:
                    log.warning("%s: could not renew the leases: %s", self.database, exc)

    async def _renew_all(self, names: list[str]) -> None:
        """Renew the leases of ``names`` with one update; read back which are
        still ours only when it did not match them all."""
        sent = _stamp()
        now = await self._now()
        query = {"_id": {"$in": names}, "owner": self.owner}
        if await self._update(query, now, multi=True) == len(names):
            owned = set(names)
        else:
            reply = await self.target.raw_command(
                self.database,
                {
                    "find": LEASES,
                    "filter": query,
                    "projection": {"_id": 1},
                    "batchSize": len(names),
                },
            )
            owned = {document["_id"] for document in reply["cursor"]["firstBatch"]}
        for name in names:
            if name not in self.held:
                continue  # released meanwhile
            if name in owned:
                self._renewed[name] = sent
            elif not await self._renew(name):
                log.warning("%s.%s: lease taken over by another run", *self._ns(name))

    async def _renew(self, name: str) -> bool:
        sent = _stamp()
        now = await self._now()
        if await self._update({"_id": name, "owner": self.owner}, now):
            self._renewed[name] = sent
            return True
        if name not in self.held:
            return False  # released meanwhile: never insert it again
        # Gone (its collection dropped by a run that found it empty): take it
        # again, unless another run holds it now.
        if await self._insert(name, now):
            self._renewed[name] = sent
            return True
        self.held.discard(name)
        self._tried.discard(name)
        self._renewed.pop(name, None)
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

    async def _insert_many(self, names: list[str], now: datetime) -> set[str]:
        """Insert the leases of ``names`` in one unordered command; the names
        another run holds (duplicates)."""
        documents = [{"_id": name, **self._fields(now)} for name in names]
        reply = await self.target.raw_command(
            self.database, {"insert": LEASES, "documents": documents, "ordered": False}
        )
        errors = reply.get("writeErrors") or []
        other = [e for e in errors if e.get("code") != _DUPLICATE_KEY]
        if other:
            raise SourceError(
                f"{self.database}.{LEASES}: {other[0].get('errmsg', 'insert failed')}"
            )
        return {names[e["index"]] for e in errors}

    async def _update(self, query: dict[str, Any], now: datetime, *, multi: bool = False) -> int:
        """Set our lease fields on the leases ``query`` matches; how many it matched."""
        update = {"q": query, "u": {"$set": self._fields(now)}, "multi": multi}
        reply = await self.target.raw_command(
            self.database, {"update": LEASES, "updates": [update]}
        )
        return int(reply.get("n") or 0)

    def _ns(self, name: str) -> tuple[str, str]:
        return self.database, name
