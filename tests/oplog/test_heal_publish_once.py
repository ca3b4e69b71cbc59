"""Heal with an oplog replay publishes each collection once, at the instant before
its loss: a reader polling the name all through the heal sees it absent, then
final, never the archive's state nor a state half replayed.

The archive is a real ``backup --oplog`` of the oplog FerretDB; the chunk after
its consistent point is written by hand in MongoDB's entry shapes (FerretDB logs
no commands), ending with the drop that took the collection away and writes to
the name recreated after it. The reader is a real client of the same server.
Exposure is made certain by design, not left to timing: the chunk is served by
the real local storage only once the reader has polled from start to end while
the replay waits for it, i.e. after the archive's own oplog member was applied
and before the chunk's entries are; a heal that published before replaying is
caught at that poll.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import Int64
from bson.timestamp import Timestamp
from helpers import split_bson
from oplog_support import WAIT, wait_for
from pymongo import MongoClient

import mongosnap
from mongosnap.archive.manifest import Manifest
from mongosnap.codecs import get_codec
from mongosnap.oplog import chunks
from mongosnap.oplog.chunks import ChunkInfo
from mongosnap.oplog.position import Ts
from mongosnap.pipelines.staging import TEMP_PREFIX
from mongosnap.storage.local import LocalStorage

GZIP = get_codec("gzip")
SEEDED = 200
ABSENT = "absent"


def seeded(i: int) -> dict[str, Any]:
    return {"_id": i, "n": i, "s": "x" * 40}


@dataclass(frozen=True)
class Archived:
    uri: str
    dest: Path
    database: str
    start: Ts


@pytest.fixture(scope="module")
def _archived(mongo_oplog_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archived]:
    """One backup --oplog of SEEDED documents; each test heals a copy into its own database."""
    database = f"once_{uuid.uuid4().hex[:10]}"
    dest = tmp_path_factory.mktemp("once") / "dest"
    with MongoClient(mongo_oplog_uri) as client:
        client[database]["events"].insert_many([seeded(i) for i in range(SEEDED)])
    done = asyncio.run(mongosnap.backup(mongo_oplog_uri, str(dest), database=database, oplog=True))
    manifest = Manifest.from_json((dest / done.manifest_key).read_bytes())
    assert manifest.oplog is not None
    yield Archived(mongo_oplog_uri, dest, database, Ts(*manifest.oplog.last_ts))
    with MongoClient(mongo_oplog_uri) as client:
        client.drop_database(database)


@pytest.fixture
def archived(_archived: Archived, tmp_path: Path) -> Iterator[Archived]:
    """The archive in a destination of the test's own; the collection dropped."""
    shutil.copytree(_archived.dest, tmp_path / "dest")
    with MongoClient(_archived.uri) as client:
        client[_archived.database].drop_collection("events")
    yield Archived(_archived.uri, tmp_path / "dest", _archived.database, _archived.start)
    with MongoClient(_archived.uri) as client:
        client[_archived.database].drop_collection("events")


class History:
    """Entries after the consistent point (MongoDB's shapes) and what they make of the seed."""

    def __init__(self, archived: Archived) -> None:
        self.archived = archived
        self.database = archived.database
        self.ns = f"{archived.database}.events"
        self.second = archived.start.t + 1
        self.entries: list[bytes] = []
        self.docs = {i: seeded(i) for i in range(SEEDED)}
        self.chunk_key = ""

    def ts(self) -> Timestamp:
        return Timestamp(self.second, len(self.entries) + 1)

    def add(self, op: str, o: dict[str, Any], ns: str = "", **extra: Any) -> Timestamp:
        ts = self.ts()
        entry = {"ts": ts, "t": Int64(1), "v": 2, "op": op, "ns": ns or self.ns, "o": o, **extra}
        self.entries.append(bson.encode(entry))
        return ts

    def set_n(self, i: int, n: int) -> None:
        self.add("u", {"$v": 2, "diff": {"u": {"n": n}}}, o2={"_id": i})
        self.docs[i]["n"] = n

    def insert(self, i: int) -> None:
        self.docs[i] = seeded(i)
        self.add("i", seeded(i))

    def delete(self, i: int) -> None:
        self.add("d", {"_id": i})
        del self.docs[i]

    def command(self, o: dict[str, Any]) -> Timestamp:
        return self.add("c", o, ns=f"{self.database}.$cmd")

    def expected(self) -> tuple[bytes, ...]:
        return tuple(bson.encode(self.docs[i]) for i in sorted(self.docs))

    def write_chunk(self) -> None:
        """One chunk from the consistent point to the second after the entries."""
        start, end = self.archived.start, Ts(self.second + 1, 1)
        stream = [_noop(start), *self.entries, _noop(end)]
        raw, packed, digest = chunks.encode_chunk(stream, GZIP)
        key = chunks.chunk_key(start, end, GZIP)
        info = ChunkInfo(
            *(key.removeprefix("oplog/"), "gzip", start, end, None, len(stream)),
            *(len(raw), digest, len(packed), "h:1", datetime.now(UTC)),
            key=chunks.sidecar_key(key),
        )
        (self.archived.dest / "oplog").mkdir(exist_ok=True)
        (self.archived.dest / key).write_bytes(packed)
        (self.archived.dest / info.key).write_bytes(info.to_json())
        self.chunk_key = key


def _noop(ts: Ts) -> bytes:
    return bson.encode({"ts": ts.to_bson(), "op": "n", "ns": "", "o": {"msg": "periodic noop"}})


def _lost_history(archived: Archived) -> tuple[History, Timestamp]:
    """Updates, inserts, deletes and an index build, then the drop that lost the
    collection, then writes to the name recreated after it (never replayed)."""
    history = History(archived)
    for i in range(SEEDED):
        history.set_n(i, 1000 + i)
    for i in range(SEEDED, SEEDED + 50):
        history.insert(i)
    for i in range(0, SEEDED, 7):
        history.delete(i)
    history.command({"createIndexes": "events", "v": 2, "key": {"n": 1}, "name": "n_1"})
    history.set_n(1, 5)
    drop = history.command({"drop": "events"})
    history.command({"create": "events"})
    history.add("i", {"_id": "recreated"})
    history.write_chunk()
    return history, drop


class Reader(threading.Thread):
    """Polls ``database.events`` from its own connection: absent, or every document."""

    def __init__(self, uri: str, database: str) -> None:
        super().__init__(daemon=True)
        self.client: MongoClient[dict[str, Any]] = MongoClient(uri)
        self.db = self.client[database]
        self.polls = 0
        self.seen: dict[str | tuple[bytes, ...], int] = {}
        self._halt = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                state = self.poll()
                self.seen[state] = self.seen.get(state, 0) + 1
                self.polls += 1
        except BaseException as exc:  # reported by stop()
            self.failure = exc

    def poll(self) -> str | tuple[bytes, ...]:
        if "events" not in self.db.list_collection_names():
            return ABSENT
        raw = b"".join(self.db["events"].find_raw_batches({}))
        return tuple(sorted(split_bson(raw), key=lambda d: repr(bson.decode(d)["_id"])))

    def wait_full_poll(self) -> None:
        """Until a poll has run from start to end after this call."""
        wanted = self.polls + 2
        wait_for(lambda: self.polls >= wanted or not self.is_alive(), "a reader's poll")

    def stop(self) -> dict[str | tuple[bytes, ...], int]:
        self._halt.set()
        self.join(timeout=WAIT)
        self.client.close()
        if self.failure is not None:
            raise self.failure
        return self.seen


class HeldChunks(LocalStorage):
    """The destination's real storage; a chunk is served once the reader has
    polled while the heal waits for it (the moment an old heal had published
    the archive's state and not yet replayed the chunk)."""

    def __init__(self, root: Path, reader: Reader, chunk_key: str) -> None:
        super().__init__(root)
        self.reader = reader
        self.chunk_key = chunk_key
        self.held = 0
        self.seen_while_held: list[str | tuple[bytes, ...]] = []

    async def read_bytes(self, key: str, *, limit: int) -> bytes:
        if key == self.chunk_key:
            await asyncio.to_thread(self.reader.wait_full_poll)
            self.held += 1
            self.seen_while_held.append(await asyncio.to_thread(self.reader.poll))
        return await super().read_bytes(key, limit=limit)


def _described(seen: dict[str | tuple[bytes, ...], int], final: tuple[bytes, ...]) -> str:
    """What the reader saw, for a failure message."""
    parts = []
    for state, polls in seen.items():
        what = (
            state
            if isinstance(state, str)
            else "final"
            if state == final
            else f"{len(state)} documents, not final"
        )
        parts.append(f"{polls} polls: {what}")
    return "the reader saw " + "; ".join(parts)


def _sorted(docs: tuple[bytes, ...]) -> tuple[bytes, ...]:
    return tuple(sorted(docs, key=lambda d: repr(bson.decode(d)["_id"])))


async def test_a_reader_sees_the_healed_collection_once_at_the_instant_before_loss(
    archived: Archived,
) -> None:
    history, drop = _lost_history(archived)
    final = _sorted(history.expected())
    reader = Reader(archived.uri, archived.database)
    storage = HeldChunks(archived.dest, reader, history.chunk_key)
    reader.start()
    try:
        report = await mongosnap.heal(
            archived.uri, storage, database=archived.database, collections=["events"]
        )
        await asyncio.to_thread(reader.wait_full_poll)  # one more, after the heal
    finally:
        seen = reader.stop()
        await storage.aclose()

    assert report.ok, report.to_dict()
    [replayed] = report.replays
    assert replayed.restored_to == {"events": f"before {drop.time}:{drop.inc}"}
    assert storage.held == 1
    [while_held] = storage.seen_while_held  # the replay is waiting for the chunk
    assert while_held == ABSENT, _described({while_held: 1}, final)
    assert set(seen) == {ABSENT, final}, _described(seen, final)
    with MongoClient(archived.uri) as client:
        db = client[archived.database]
        assert sorted(db["events"].index_information()) == ["_id_", "n_1"]
        assert [c for c in db.list_collection_names() if c.startswith(TEMP_PREFIX)] == []


REPLAYED_LONG = 20_000
"""Inserts after the marker: seconds of replay, so a signal lands inside it."""


def _staged_or_published(client: MongoClient[dict[str, Any]], database: str) -> list[str]:
    names = client[database].list_collection_names()
    return [n for n in names if n.startswith(TEMP_PREFIX) or n == "events"]


def test_a_signal_during_the_replay_leaves_nothing_visible(archived: Archived) -> None:
    """SIGTERM while the chunk is being replayed into the staging copy: exit 143,
    the staging copy dropped, and the collection never published."""
    history = History(archived)
    history.add("i", {"_id": "marker"})
    history.command({"createIndexes": "events", "v": 2, "key": {"n": 1}, "name": "n_1"})
    for i in range(SEEDED, SEEDED + REPLAYED_LONG):
        history.insert(i)
    history.write_chunk()
    command = [sys.executable, "-m", "mongosnap", "heal", str(archived.dest), "--uri"]
    proc = subprocess.Popen(
        [*command, archived.uri, archived.database, "events"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    with MongoClient(archived.uri) as client:
        deadline = time.monotonic() + WAIT
        while not any(
            client[archived.database][name].find_one({"_id": "marker"})
            for name in _staged_or_published(client, archived.database)
        ):
            assert proc.poll() is None, f"heal ended before the replay: {proc.communicate()}"
            assert time.monotonic() < deadline, "the replay never began"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=WAIT)
        left = _staged_or_published(client, archived.database)

    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert left == [], err
    assert "nothing was left behind" in err  # true: checked just above
