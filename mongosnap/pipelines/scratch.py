"""The scratch database a restore drill restores into, and what a killed drill left.

A drill claims its scratch database by taking the lease ``mongosnap_drill``
in it (lease.py: a document in ``mongosnap_leases``, renewed while the drill
runs); inserting that lease is what creates the database. The drill drops
the database at its end, however it ends. A drill that was killed (SIGKILL,
a lost host) stops renewing; the next drill of the same source database
drops every database named ``<db>__drill_<time>`` whose lease has expired
or is gone. A database of
another name is dropped only when it holds an expired drill lease (a
``--scratch-db`` taken again): anything else is someone's data, never touched.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from .._errors import CollectionBusy, CollectionExists, MongosnapError, UsageError
from ..source import Source
from .lease import LEASES, Leases

log = logging.getLogger("mongosnap.drill")

DRILL_LEASE = "mongosnap_drill"
SUFFIX = "__drill_"
_TIME = "%Y%m%dT%H%M%S"
_SCRATCH = re.compile(rf"^(.+){SUFFIX}\d{{8}}T\d{{6}}$", re.DOTALL)
MAX_NAME = 63
DROP_SECONDS = 30.0


@dataclass
class ScratchState:
    """The scratch database of one drill: what an interrupted drill says it left."""

    name: str | None = None
    claimed: bool = False
    problem: str | None = None
    """Why it could not be dropped; None while it was not, or once it was."""

    def statement(self) -> str:
        if self.claimed:
            return f"the scratch database {self.name} is being dropped"
        if self.problem is not None:
            return (
                f"left behind: the scratch database {self.name} ({self.problem}; "
                "the next drill or heal of its database drops it once its lease expires)"
            )
        return "nothing was left behind"


def default_name(database: str, now: datetime) -> str:
    name = f"{database}{SUFFIX}{now.astimezone(UTC).strftime(_TIME)}"
    if len(name.encode()) > MAX_NAME:
        raise UsageError(
            f"the scratch database name {name} is longer than {MAX_NAME} bytes: "
            "choose one with --scratch-db"
        )
    return name


def drill_of(name: str) -> str | None:
    """The source database whose drill a default scratch name belongs to, or None."""
    found = _SCRATCH.match(name)
    return found.group(1) if found else None


async def lease_state(source: Source, name: str, now: datetime) -> str:
    """``live``, ``expired`` or ``none`` (no drill lease in database ``name``)."""
    reply = await source.raw_command(
        name, {"find": LEASES, "filter": {"_id": DRILL_LEASE}, "limit": 1}
    )
    batch = reply["cursor"]["firstBatch"]
    if not batch:
        return "none"
    expires = batch[0].get("expires")
    if not isinstance(expires, datetime):
        return "expired"
    expires = expires.replace(tzinfo=UTC) if expires.tzinfo is None else expires
    return "live" if expires > now else "expired"


async def sweep(source: Source, database: str | None = None) -> list[str]:
    """Drop what killed drills (of ``database``, or any) left; the names dropped."""
    found = [
        name
        for name in await source.database_names()
        if (owner := drill_of(name)) is not None and database in (None, owner)
    ]
    if not found:
        return []
    now = await source.server_time() or datetime.now(UTC)
    dropped = []
    for name in found:
        if await lease_state(source, name, now) == "live":
            continue
        log.warning("dropping %s, the scratch database of a drill that stopped", name)
        await source.drop_database(name)
        dropped.append(name)
    return dropped


class Scratch:
    """One drill's hold on its scratch database: claimed, then released (dropped)."""

    def __init__(self, source: Source, name: str) -> None:
        self.source = source
        self.name = name
        self.leases = Leases(source, name)
        self._sent = False
        """The lease insert was sent: the database may be ours from then on."""
        self._held = False

    async def claim(self) -> None:
        """Take ``name``: its lease held and renewed.

        A database of that name left by a stopped drill is dropped first; one
        in use by a running drill is CollectionBusy; any other is CollectionExists.
        """
        if await self.source.collection_names(self.name):  # it exists (and holds something)
            now = await self.source.server_time() or datetime.now(UTC)
            state = await lease_state(self.source, self.name, now)
            if state == "live":
                raise CollectionBusy(f"another drill is using the scratch database {self.name}")
            if state == "none" and drill_of(self.name) is None:
                raise CollectionExists(
                    f"database {self.name} exists and is no drill's scratch database: "
                    "choose another --scratch-db"
                )
            await self.source.drop_database(self.name)
        self._sent = True
        if not await self.leases.acquire(DRILL_LEASE):
            self._sent = False
            raise CollectionBusy(f"another drill is using the scratch database {self.name}")
        self._held = True

    async def release(self) -> str | None:
        """Stop renewing, then drop the database if it is ours; None when done, else why not.

        A claim cut short while its lease insert was in flight leaves the
        database ours only if the lease there is ours: it is looked up."""
        if not self._sent:
            return None
        try:
            async with asyncio.timeout(DROP_SECONDS):
                ours = self._held or await self._ours()
                await self.leases.close()
                if ours:
                    await self.source.drop_database(self.name)
        except (MongosnapError, TimeoutError) as exc:
            log.warning("could not drop the scratch database %s: %s", self.name, exc)
            return f"{type(exc).__name__}: {exc}"
        return None

    async def _ours(self) -> bool:
        reply = await self.source.raw_command(
            self.name,
            {"find": LEASES, "filter": {"_id": DRILL_LEASE, "owner": self.leases.owner}},
        )
        return bool(reply["cursor"]["firstBatch"])
