"""What an ``undo --apply`` has written, kept in the database it writes to.

An apply runs in batches. Before a batch is written its ``_id``s are recorded
(``pending``); after it, each one's outcome (``done``). A run that is killed
mid-batch leaves the batch ``pending``: the next run of the same undo reads
the ledger, takes the window's end from it (so its own writes, archived
since, never join the window), and settles each pending document by looking
at it: one that holds its pre-image was written. So every document an
interrupted run changed is reported by the run that resumes it. Documents in
``mongosnap_undo`` of the target database::

    {_id: RUN, ns, from, to, archive, state: "running" | "done"}
    {_id: "RUN/N", run: RUN, keys: [<_id>...], state: "pending" | "done",
     outcomes: {<outcome>: [<_id>...]}}

Only inserts and updates by ``_id``: no transaction, which FerretDB 1.x lacks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import bson
from bson import json_util
from bson.binary import Binary

from ..oplog.position import Ts
from .undo_images import IdKey
from .undo_target import UndoTarget

COLLECTION = "mongosnap_undo"
FINAL = ("restored", "removed", "already")


def run_id(ns: str, first: Ts, last: Ts | None) -> str:
    """The same undo asked again (same collection, same window) has the same id."""
    text = f"{ns}|{first}|{'' if last is None else last}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:20]


@dataclass
class Resumed:
    """What earlier runs of the same undo recorded."""

    last: Ts | None = None
    archive: str | None = None
    outcomes: dict[str, list[IdKey]] = field(default_factory=dict)
    pending: set[IdKey] = field(default_factory=set)
    batches: int = 0

    @property
    def settled(self) -> set[IdKey]:
        """Documents written (or found at their pre-image): never looked at again.
        Conflicts and kept inserts are, so that ``--force`` or
        ``--remove-inserted`` on a rerun can still undo them."""
        return {k for name in FINAL for k in self.outcomes.get(name, [])}


class UndoLedger:
    def __init__(self, target: UndoTarget, database: str, run: str) -> None:
        self.coll = target.handle(database, COLLECTION)
        self.run = run
        self.next = 0

    async def resume(self) -> Resumed:
        """The earlier runs' record (empty for a first run)."""
        found = Resumed()
        header = await self.coll.find_one({"_id": self.run})
        if header is None:
            return found
        found.last = Ts(*header["to"])
        found.archive = header.get("archive")
        async for batch in self.coll.find({"run": self.run}):
            found.batches += 1
            self.next = max(self.next, int(batch["n"]) + 1)
            keys = [bytes(k) for k in batch["keys"]]
            if batch["state"] == "pending":
                found.pending.update(keys)
                continue
            for outcome, done in batch["outcomes"].items():
                found.outcomes.setdefault(outcome, []).extend(bytes(k) for k in done)
        return found

    async def start(self, ns: str, first: Ts, last: Ts, archive: str) -> None:
        header = {"ns": ns, "from": [first.t, first.i], "to": [last.t, last.i], "archive": archive}
        await self.coll.update_one(
            {"_id": self.run}, {"$set": {**header, "state": "running"}}, upsert=True
        )

    async def begin(self, keys: list[IdKey]) -> int:
        """Record a batch before any of it is written; its number."""
        number, self.next = self.next, self.next + 1
        await self.coll.insert_one(
            {
                "_id": f"{self.run}/{number}",
                "run": self.run,
                "n": number,
                "keys": [Binary(k) for k in keys],
                "state": "pending",
            }
        )
        return number

    async def done(self, number: int, outcomes: dict[str, list[IdKey]]) -> None:
        stored = {name: [Binary(k) for k in keys] for name, keys in outcomes.items()}
        await self.coll.update_one(
            {"_id": f"{self.run}/{number}"}, {"$set": {"state": "done", "outcomes": stored}}
        )

    async def finish(self) -> None:
        await self.coll.update_one({"_id": self.run}, {"$set": {"state": "done"}})


def describe(key: IdKey) -> str:
    """An ``_id`` for the report: relaxed Extended JSON (``4``, ``"a"``, ``{"$oid": ...}``)."""
    return json_util.dumps(bson.decode(key)["_id"], json_options=json_util.RELAXED_JSON_OPTIONS)
