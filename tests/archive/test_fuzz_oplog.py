"""Bounded, deterministic fuzzing of what a point-in-time restore reads from ``oplog/``:
chunk objects (down to replaying their entries), chunk sidecars and gap objects.

Same rule as test_fuzz.py: every case parses (and replays) or raises one of
mongosnap's own errors; seeds are fixed, so a failure replays. Entries that pass
the chunk's checks are replayed onto an in-memory target (a dict per collection
that decodes what it is given, as a server would); the replay's server side is
tested on FerretDB in tests/oplog.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import bson
import pytest
from bson import Int64
from bson.binary import Binary
from bson.timestamp import Timestamp
from test_fuzz import mutate, random_json, run_cases, structural

from mongosnap import CorruptArchive, MemoryStorage, SourceError
from mongosnap.catalog import ArchiveInfo
from mongosnap.codecs import get_codec
from mongosnap.oplog import chunks
from mongosnap.oplog.chunks import ChunkInfo, GapInfo
from mongosnap.oplog.position import Ts
from mongosnap.oplog.replay import replay
from mongosnap.oplog.target import ReplayTarget
from mongosnap.pipelines import pitr

NS = "app.users"


def _ts(n: int) -> Timestamp:
    return Timestamp(1_800_000_000 + n, 1)


def _entry(n: int, op: str, o: dict[str, Any], **extra: Any) -> bytes:
    return bson.encode({"ts": _ts(n), "t": Int64(1), "op": op, "ns": NS, "o": o, **extra})


def sample_entries() -> list[bytes]:
    """MongoDB's entry shapes: CRUD in both update formats, commands, applyOps, a transaction."""
    lsid = {"lsid": {"id": Binary(uuid.UUID(int=7).bytes, 4)}, "txnNumber": Int64(1)}
    doc = {"_id": 1, "a": {"b": [1, 2, {"c": "x"}]}, "s": "text", "n": Int64(5), "f": 1.5}
    return [
        bson.encode({"ts": _ts(0), "op": "n", "ns": "", "o": {"msg": "periodic noop"}}),
        _entry(1, "i", doc),
        _entry(2, "i", {"_id": 2, "arr": [1, 2, 3]}),
        _entry(
            3,
            "u",
            {"$v": 1, "$set": {"a.b.2.c": "y", "z.0": 1}, "$unset": {"s": ""}},
            o2={"_id": 1},
        ),
        _entry(
            4,
            "u",
            {
                "$v": 2,
                "diff": {
                    "u": {"n": 6},
                    "i": {"new": True},
                    "sa": {"sb": {"a": True, "l": 4, "u3": 9, "s2": {"u": {"c": "z"}}}},
                },
            },
            o2={"_id": 1},
        ),
        _entry(5, "u", {"$v": 2, "diff": {"sarr": {"a": True, "u5": 7}}}, o2={"_id": 2}),
        _entry(6, "u", {"_id": 2, "replaced": 1}, o2={"_id": 2}),
        _entry(7, "d", {"_id": 2}),
        bson.encode({"ts": _ts(8), "op": "c", "ns": "app.$cmd", "o": {"create": "other"}}),
        bson.encode(
            {
                "ts": _ts(9),
                "op": "c",
                "ns": "app.$cmd",
                "o": {"createIndexes": "users", "v": 2, "key": {"s": 1}, "name": "s_1"},
            }
        ),
        bson.encode(
            {
                "ts": _ts(10),
                "op": "c",
                "ns": "admin.$cmd",
                "o": {
                    "applyOps": [
                        {"op": "i", "ns": NS, "o": {"_id": 3}},
                        {
                            "op": "u",
                            "ns": NS,
                            "o": {"$v": 2, "diff": {"d": {"a": False}}},
                            "o2": {"_id": 1},
                        },
                    ]
                },
            }
        ),
        bson.encode(
            {
                "ts": _ts(11),
                "op": "c",
                "ns": "admin.$cmd",
                "o": {"applyOps": [{"op": "d", "ns": NS, "o": {"_id": 3}}]},
                "prevOpTime": {"ts": Timestamp(0, 0), "t": Int64(-1)},
                **lsid,
            }
        ),
        bson.encode(
            {
                "ts": _ts(12),
                "op": "c",
                "ns": "app.$cmd",
                "o": {"renameCollection": "app.other", "to": "app.third"},
            }
        ),
        bson.encode({"ts": _ts(13), "op": "c", "ns": "app.$cmd", "o": {"drop": "third"}}),
    ]


ENTRIES = sample_entries()
DOCS = [bson.encode({"_id": i, "a": {"b": [1, 2, {"c": "x"}]}, "arr": [i]}) for i in range(4)]


class MemoryTarget(ReplayTarget):
    """Collections as dicts of raw documents by _id; refuses what does not decode."""

    def __init__(self) -> None:  # no client: nothing here reaches a server
        self.colls: dict[tuple[str, str], dict[bytes, bytes]] = {}

    def _coll(self, database: str, name: str) -> dict[bytes, bytes]:
        return self.colls.setdefault((database, name), {})

    async def find_raw(self, database: str, collection: str, doc_id: Any) -> bytes | None:
        return self._coll(database, collection).get(bson.encode({"_id": doc_id}))

    async def find_many_raw(self, database: str, collection: str, ids: list[Any]) -> list[bytes]:
        coll = self._coll(database, collection)
        keys = [bson.encode({"_id": i}) for i in ids]
        return [coll[k] for k in keys if k in coll]

    async def put(
        self, database: str, collection: str, ids: list[Any], documents: list[bytes]
    ) -> None:
        coll = self._coll(database, collection)
        for doc_id in ids:
            coll.pop(bson.encode({"_id": doc_id}), None)
        for raw in documents:
            try:
                key = bson.encode({"_id": bson.decode(raw)["_id"]})
            except (bson.errors.BSONError, KeyError, RecursionError) as exc:
                raise SourceError(f"refused: {exc!r}") from None
            if key in coll:
                raise SourceError("duplicate key")
            coll[key] = raw

    async def command(self, database: str, command: dict[str, Any]) -> Any:
        bson.encode(command)  # what a server would be sent
        return {"ok": 1}

    async def collection_names(self, database: str) -> set[str]:
        return {name for (db, name) in self.colls if db == database}

    async def drop(self, database: str, name: str) -> None:
        self.colls.pop((database, name), None)

    async def rename(self, database: str, source: str, target: str, *, replace: bool) -> bool:
        if (database, source) not in self.colls:
            return False
        self.colls[(database, target)] = self.colls.pop((database, source))
        return True

    async def create_indexes(self, database: str, name: str, specs: list[dict[str, Any]]) -> None:
        bson.encode({"indexes": specs})

    async def indexes(self, database: str, collection: str) -> list[dict[str, Any]]:
        return [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]

    async def drop_indexes(self, database: str, collection: str, names: list[str]) -> None:
        return None


def _target() -> MemoryTarget:
    target = MemoryTarget()
    target.colls[("app", "users")] = {bson.encode({"_id": bson.decode(d)["_id"]}): d for d in DOCS}
    return target


def _sidecar(raw: bytes, packed: bytes, count: int, codec: str) -> ChunkInfo:
    first, last = Ts(_ts(0).time, 1), Ts(_ts(14).time, 1)
    key = chunks.chunk_key(first, last, get_codec(codec))
    digest = chunks.encode_chunk([raw], get_codec(codec))[2]
    return ChunkInfo(
        *(key.removeprefix("oplog/"), codec, first, last, None, count, len(raw), digest),
        *(len(packed), "h:1", datetime(2026, 12, 1, tzinfo=UTC)),
        key=chunks.sidecar_key(key),
    )


async def restore_chunk(packed: bytes, info: ChunkInfo) -> None:
    """What a point-in-time restore does with one chunk: check, split, replay."""
    storage = MemoryStorage()
    await storage.put(info.object_key, packed)
    await replay_from(storage, Ts(0, 0), info.last_ts, [info])


async def replay_from(storage: MemoryStorage, start: Ts, end: Ts, found: list[ChunkInfo]) -> None:
    plan = pitr.PitrPlan(ArchiveInfo.__new__(ArchiveInfo), start, end, found)
    await replay(_target(), pitr.chunk_entries(storage, plan))


async def plan_and_replay(objects: dict[str, bytes]) -> None:
    """What restore --to-ts does with oplog/: read the coverage, plan, replay."""
    storage = MemoryStorage()
    for key, data in objects.items():
        await storage.put(key, data)
    coverage = await chunks.read_coverage(storage)
    coverage.to_dict()  # what list --json prints
    start, end = Ts(_ts(0).time, 1), Ts(_ts(14).time, 1)
    await replay_from(storage, start, end, pitr._covering(coverage, start, end))


def _mutated_entry(rng: random.Random) -> bytes:
    """One sample entry with a value somewhere replaced (a structural mutation)."""
    entry = bson.decode(rng.choice(ENTRIES))
    changed = structural(rng, entry)
    if isinstance(changed, dict) and "ts" not in changed:
        changed["ts"] = _ts(rng.randrange(15))
    try:
        return bson.encode(changed if isinstance(changed, dict) else {"v": changed})
    except (bson.errors.BSONError, OverflowError, ValueError):
        return rng.choice(ENTRIES)


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_fuzz_oplog_chunk_bytes(codec: str) -> None:
    """The stored object, the BSON inside it (with a sidecar that matches it) and
    single entries, mutated; all of it checked, split and replayed."""
    compressor = get_codec(codec)
    raw = b"".join(ENTRIES)
    packed = compressor.compress(raw)
    valid = _sidecar(raw, packed, len(ENTRIES), codec)
    asyncio.run(restore_chunk(packed, valid))  # the unmutated chunk replays

    def make(rng: random.Random) -> bytes:
        choice = rng.randrange(4)
        if choice == 0:
            return b"P" + mutate(rng, packed, [packed, raw])  # the object as stored
        if choice == 1:
            return b"R" + mutate(rng, raw, [raw, *ENTRIES])  # the BSON inside
        picked = rng.sample(ENTRIES, rng.randint(1, 6))
        picked.insert(rng.randrange(len(picked) + 1), _mutated_entry(rng))
        if choice == 2:
            picked[rng.randrange(len(picked))] = mutate(rng, rng.choice(ENTRIES), ENTRIES)
        return b"R" + b"".join(picked)

    def check(data: bytes) -> None:
        if data[:1] == b"P":
            asyncio.run(restore_chunk(data[1:], valid))
            return
        body = data[1:]
        try:
            count = len(chunks.split_entries(body))
        except CorruptArchive:
            count = len(ENTRIES)
        squeezed = compressor.compress(body)
        asyncio.run(restore_chunk(squeezed, _sidecar(body, squeezed, max(count, 1), codec)))

    assert run_cases(11 + len(codec), make, check) > 0


def json_case(rng: random.Random, text: bytes, parsed: Any, third: Callable[[], Any]) -> bytes:
    """One of three cases for a JSON object's reader: its text mutated, its
    structure changed, or what ``third`` makes."""
    choice = rng.randrange(3)
    if choice == 0:
        return mutate(rng, text, [text])
    if choice == 1:
        return json.dumps(structural(rng, parsed)).encode()
    return json.dumps(third()).encode()


def test_fuzz_oplog_chunk_sidecar_json() -> None:
    raw = b"".join(ENTRIES)
    valid = _sidecar(raw, get_codec("gzip").compress(raw), len(ENTRIES), "gzip")
    text = valid.to_json()
    parsed = json.loads(text)

    def make(rng: random.Random) -> bytes:
        return json_case(
            rng, text, parsed, lambda: {**parsed, rng.choice(list(parsed)): random_json(rng)}
        )

    packed = get_codec("gzip").compress(raw)

    def check(data: bytes) -> None:
        info = ChunkInfo.from_json(data, valid.key)
        assert info.count >= 1 and info.first_ts <= info.last_ts
        assert info.object_key == valid.object_key
        asyncio.run(plan_and_replay({valid.object_key: packed, valid.key: data}))

    assert run_cases(13, make, check) > 0


def test_fuzz_oplog_gap_json() -> None:
    gap = GapInfo(Ts(1_800_000_020, 1), Ts(1_800_000_030, 2), datetime.now(UTC), "rolled over")
    key = chunks.gap_key(gap.after, gap.before)
    text = gap.to_json()
    parsed = json.loads(text)

    def make(rng: random.Random) -> bytes:
        return json_case(rng, text, parsed, lambda: random_json(rng))

    raw = b"".join(ENTRIES)
    packed = get_codec("gzip").compress(raw)
    chunk = _sidecar(raw, packed, len(ENTRIES), "gzip")

    def check(data: bytes) -> None:
        found = GapInfo.from_json(data, key)
        assert isinstance(found.after, Ts) and isinstance(found.before, Ts)
        objects = {chunk.object_key: packed, chunk.key: chunk.to_json(), key: data}
        asyncio.run(plan_and_replay(objects))

    assert run_cases(14, make, check) > 0
