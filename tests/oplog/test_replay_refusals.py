"""An entry that cannot be applied, or whose write the server refuses, takes nothing
else with it: heal and ``restore --to-ts``/``--to-time`` leave the collection as the
archive plus every entry before that one, compared byte for byte.

The archive is a real ``backup --oplog`` of the oplog FerretDB; the chunk after its
consistent point is written by hand with MongoDB's entry shapes, among them one
FerretDB refuses (nested arrays) and hostile ones no server logs.
"""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import Int64
from bson.binary import Binary
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp
from helpers import run_cli, server_documents
from pymongo import MongoClient
from replay_support import cmd, dele, diff, ins, nested, session, txn, upd

import mongosnap
from mongosnap import ReplayError
from mongosnap.archive.manifest import Manifest
from mongosnap.codecs import get_codec
from mongosnap.oplog import chunks, replay
from mongosnap.oplog.chunks import ChunkInfo
from mongosnap.oplog.position import Ts

GZIP = get_codec("gzip")
SEEDED = 50
OTHERS = 3  # documents of a second collection, which goes on when "events" stops


def seeded(i: int) -> dict[str, Any]:
    return {"_id": i, "n": i, "arr": [i, i + 1], "s": "x" * 20}


@dataclass(frozen=True)
class Archived:
    """A backup --oplog of SEEDED documents, and where its chunk starts."""

    uri: str
    dest: Path
    database: str
    key: str
    start: Ts


def _archive(uri: str, dest: Path) -> Archived:
    database = f"refuse_{uuid.uuid4().hex[:10]}"
    with MongoClient(uri) as client:
        client[database]["events"].insert_many([seeded(i) for i in range(SEEDED)])
        client[database]["other"].insert_many([{"_id": i, "n": 0} for i in range(OTHERS)])
    done = asyncio.run(mongosnap.backup(uri, str(dest), database=database, oplog=True))
    manifest = Manifest.from_json((dest / done.manifest_key).read_bytes())
    assert manifest.oplog is not None
    return Archived(uri, dest, database, done.archive_key, Ts(*manifest.oplog.last_ts))


@pytest.fixture(scope="module")
def _archived(mongo_oplog_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archived]:
    found = _archive(mongo_oplog_uri, tmp_path_factory.mktemp("refusals") / "dest")
    yield found
    with MongoClient(mongo_oplog_uri) as client:
        client.drop_database(found.database)


@pytest.fixture
def archived(_archived: Archived, tmp_path: Path) -> Archived:
    """The archive in a destination of the test's own, which gets its own chunk."""
    shutil.copytree(_archived.dest, tmp_path / "dest")
    return replace(_archived, dest=tmp_path / "dest")


@pytest.fixture
def target_database(mongo_uri: str) -> Iterator[str]:
    name = f"restored_{uuid.uuid4().hex[:10]}"
    yield name
    with MongoClient(mongo_uri) as client:
        client.drop_database(name)


class History:
    """Entries after the consistent point, and the collection they make of the seed."""

    def __init__(self, archived: Archived) -> None:
        self.ns = f"{archived.database}.events"
        self.second = archived.start.t + 1
        self.entries: list[bytes] = []
        self.docs = {i: seeded(i) for i in range(SEEDED)}
        self.frozen: dict[int, dict[str, Any]] | None = None

    def _ts(self) -> Timestamp:
        return Timestamp(self.second, len(self.entries) + 1)

    def _add(self, op: str, o: dict[str, Any], o2: dict[str, Any] | None = None) -> None:
        entry = {"ts": self._ts(), "t": Int64(1), "v": 2, "op": op, "ns": self.ns, "o": o}
        if o2 is not None:
            entry["o2"] = o2
        self.entries.append(bson.encode(entry))

    def set_n(self, i: int, n: int) -> None:
        self._add("u", {"$v": 2, "diff": {"u": {"n": n}}}, {"_id": i})
        self.docs[i]["n"] = n

    def insert(self, i: int) -> None:
        self.docs[i] = seeded(i)
        self._add("i", seeded(i))

    def delete(self, i: int) -> None:
        self._add("d", {"_id": i})
        del self.docs[i]

    def hostile(self, i: int, make: Hostile) -> Timestamp:
        """An update the replay must stop on: the expected state is the one before it."""
        ts = self._ts()
        entry = {"ts": ts, "t": Int64(1), "v": 2, "op": "u", "ns": self.ns, "o2": {"_id": i}}
        self.entries.append(make(entry))
        self.frozen = copy.deepcopy(self.docs)
        return ts

    def expected(self) -> list[bytes]:
        docs = self.docs if self.frozen is None else self.frozen
        return [bson.encode(docs[i]) for i in sorted(docs)]

    def write_chunk(self, archived: Archived) -> Ts:
        """One chunk from the consistent point to the second after the entries (no-ops
        at both ends); the ts of the last entry."""
        start, end = archived.start, Ts(self.second + 1, 1)
        stream = [_noop(start), *self.entries, _noop(end)]
        raw, packed, digest = chunks.encode_chunk(stream, GZIP)
        key = chunks.chunk_key(start, end, GZIP)
        info = ChunkInfo(
            *(key.removeprefix("oplog/"), "gzip", start, end, None, len(stream)),
            *(len(raw), digest, len(packed), "h:1", datetime.now(UTC)),
            key=chunks.sidecar_key(key),
        )
        (archived.dest / "oplog").mkdir(exist_ok=True)
        (archived.dest / key).write_bytes(packed)
        (archived.dest / info.key).write_bytes(info.to_json())
        return Ts(self.second, len(self.entries))


def _noop(ts: Ts) -> bytes:
    return bson.encode({"ts": ts.to_bson(), "op": "n", "ns": "", "o": {"msg": "periodic noop"}})


Hostile = Callable[[dict[str, Any]], bytes]
"""The raw bytes of an update entry, given its other fields."""


def update(o: dict[str, Any]) -> Hostile:
    return lambda entry: bson.encode({**entry, "o": o})


def _deep_diff(entry: dict[str, Any]) -> bytes:
    diff = bson.encode({"u": {"n": 1}})
    for _ in range(3000):  # built as raw bytes: encoding 3,000 dicts would recurse
        diff = bson.encode({"sarr": RawBSONDocument(diff)})
    return bson.encode({**entry, "o": {"$v": 2, "diff": RawBSONDocument(diff)}})


def _bad_utf8(field: str) -> Hostile:
    """An entry whose ``field`` (``ns``, or the string set in ``o``) is not UTF-8."""

    def make(entry: dict[str, Any]) -> bytes:
        marked = {**entry, "o": {"$v": 2, "diff": {"u": {"s": "\x01MARK\x01"}}}}
        if field == "ns":
            marked["ns"] = entry["ns"] + "\x01MARK\x01"
        raw = bson.encode(marked)
        assert raw.count(b"\x01MARK\x01") == 1 + (field == "ns")
        cut = raw.rindex(b"\x01MARK\x01") if field == "o" else raw.index(b"\x01MARK\x01")
        return raw[:cut] + b"\xff\xfe\xfd\xfc\xfb\xfa" + raw[cut + 6 :]

    return make


REFUSED = update({"$v": 2, "diff": {"i": {"grid": [[1, 2], [3]]}}})  # FerretDB: nested arrays
PADDED = update({"$v": 2, "diff": {"sarr": {"a": True, "u2000000": 1}}})  # past the server's pad
HOSTILE = {
    "refused": REFUSED,
    "padded": PADDED,
    "padded-1e8": update({"$v": 2, "diff": {"sarr": {"a": True, "u100000000": 1}}}),
    "long-path": update({"$v": 1, "$set": {".".join(["a"] * 3000): 1}}),
    "deep-diff": _deep_diff,
    "utf8-ns": _bad_utf8("ns"),
    "utf8-value": _bad_utf8("o"),
}


def seeded_bytes(i: int) -> bytes:
    return bson.encode(seeded(i))


def _history(
    archived: Archived, hostile: Hostile, *, chunk: bool = True
) -> tuple[History, Timestamp, Ts]:
    """Writes on both sides of one hostile entry, all in one replay batch."""
    history = History(archived)
    for i in range(10):
        history.set_n(i, 1000 + i)
    for i in range(SEEDED, SEEDED + 3):
        history.insert(i)
    history.delete(10)
    stop = history.hostile(11, hostile)
    for i in (*range(10), *range(11, 21)):
        history.set_n(i, 2000 + i)
    for i in range(SEEDED + 3, SEEDED + 6):
        history.insert(i)
    history.delete(12)
    return history, stop, history.write_chunk(archived) if chunk else Ts(0, 0)


def _collection(uri: str, database: str) -> list[bytes]:
    return sorted(server_documents(uri, database, "events"), key=lambda d: bson.decode(d)["_id"])


@pytest.mark.parametrize("kind", ["refused", "padded", "binary"])
async def test_heal_stops_before_the_entry_and_keeps_every_document(
    archived: Archived, kind: str
) -> None:
    hostile = {"refused": REFUSED, "padded": PADDED, "binary": update(BINARY)}[kind]
    history, stop, _ = _history(archived, hostile)
    with MongoClient(archived.uri) as client:
        client[archived.database].drop_collection("events")
    warnings: list[str] = []

    report = await mongosnap.heal(
        archived.uri,
        str(archived.dest),
        database=archived.database,
        collections=["events"],
        warn=warnings.append,
    )

    assert report.ok, report.to_dict()
    assert _collection(archived.uri, archived.database) == history.expected()
    [warning] = warnings
    assert f"ts={stop.time}:{stop.inc} op='u'" in warning, warning
    assert "oplog replay stopped" in warning and "entries before it are applied" in warning
    if kind == "binary":  # that collection alone stopped
        assert "events restored from" in warning and "other collections went on" in warning
        assert "binary ('b') section" in warning


@pytest.mark.parametrize(
    ("kind", "flag"),
    [
        *((kind, "--to-ts") for kind in HOSTILE),
        ("refused", "--to-time"),
        ("padded", "--to-time"),
    ],
)
def test_restore_to_a_point_stops_before_the_entry_and_keeps_every_document(
    archived: Archived, mongo_uri: str, target_database: str, kind: str, flag: str
) -> None:
    history, stop, last = _history(archived, HOSTILE[kind])
    when = str(last) if flag == "--to-ts" else f"{datetime.fromtimestamp(last.t, UTC):%FT%TZ}"
    done = run_cli(
        *("restore", "latest", str(archived.dest), mongo_uri, archived.database),
        *("--to-database", target_database, flag, when, "--json"),
    )
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    if kind == "deep-diff":  # the chunk's BSON check refuses it whole, before any entry
        assert done.returncode == 31 and "nests deeper than 200 levels" in done.stderr
        assert _collection(mongo_uri, target_database) == [seeded_bytes(i) for i in range(SEEDED)]
        return
    assert done.returncode == 50, done.stderr
    assert f"ts={stop.time}:{stop.inc}" in done.stderr
    assert _collection(mongo_uri, target_database) == history.expected()


@pytest.mark.parametrize("kind", sorted(HOSTILE))
async def test_replay_stops_on_each_hostile_entry_with_it_named(
    mongo_uri: str, new_database: str, kind: str
) -> None:
    """Straight into replay() (no chunk check on the way): a typed error naming the
    entry, the entries before it applied, nothing after."""
    archived = Archived(mongo_uri, Path(), new_database, "", Ts(1_700_000_000, 1))
    with MongoClient(mongo_uri) as client:
        client[new_database]["events"].insert_many([seeded(i) for i in range(SEEDED)])
    history, stop, _ = _history(archived, HOSTILE[kind], chunk=False)
    with pytest.raises(ReplayError) as raised:
        await replay(mongo_uri, history.entries)
    assert f"ts={stop.time}:{stop.inc}" in str(raised.value) or kind == "utf8-ns"
    assert _collection(mongo_uri, new_database) == history.expected()


def test_restore_stops_the_collection_of_a_binary_diff_and_finishes_the_others(
    archived: Archived, mongo_uri: str, target_database: str
) -> None:
    history = History(archived)
    other = f"{archived.database}.other"
    for i in range(OTHERS):
        history.set_n(i, 1000 + i)
        history.entries.append(
            bson.encode(
                {"ts": history._ts(), "op": "u", "ns": other, "o2": {"_id": i}}
                | {"o": {"$v": 2, "diff": {"u": {"n": 10 + i}}}}
            )
        )
        if i == 1:
            stop = history.hostile(5, update(BINARY))
    last = history.write_chunk(archived)
    done = run_cli(
        *("restore", "latest", str(archived.dest), mongo_uri, archived.database),
        *("--to-database", target_database, "--to-ts", str(last), "--json"),
    )
    assert done.returncode == 42, done.stderr
    assert "Traceback" not in done.stderr
    assert "events" in done.stderr and f"ts={stop.time}:{stop.inc}" in done.stderr
    assert "binary ('b') section" in done.stderr
    report = json.loads(done.stdout.splitlines()[0])  # an error object follows it
    assert {c["name"]: c["status"] for c in report["collections"]} == {
        "events": "failed",
        "other": "restored",
    }
    assert list(report["replay"]["stopped"]) == [f"{archived.database}.events"]
    assert _collection(mongo_uri, target_database) == history.expected()
    others = [bson.encode({"_id": i, "n": 10 + i}) for i in range(OTHERS)]
    assert sorted(server_documents(mongo_uri, target_database, "other")) == sorted(others)


def test_restore_report_without_the_hostile_entry_reaches_the_target(
    archived: Archived, mongo_uri: str, target_database: str
) -> None:
    """The same history without the hostile entry restores all of it (exit 0)."""
    history = History(archived)
    for i in range(10):
        history.set_n(i, 1000 + i)
    history.delete(10)
    last = history.write_chunk(archived)
    done = run_cli(
        *("restore", "latest", str(archived.dest), mongo_uri, archived.database),
        *("--to-database", target_database, "--to-ts", str(last), "--json"),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["restored_to"] == str(last)
    assert _collection(mongo_uri, target_database) == history.expected()


# -- straight into replay(): what a refusal undoes, and what it does not


def _raw(uri: str, database: str, name: str) -> list[bytes]:
    return sorted(server_documents(uri, database, name), key=lambda d: bson.decode(d)["_id"])


async def test_an_update_past_16_mib_is_refused_before_anything_is_written(
    mongo_uri: str, new_database: str
) -> None:
    ns = f"{new_database}.c"
    big = {"_id": 1, "s": "x" * (9 << 20)}
    entries = [ins(1, ns, big), ins(2, ns, {"_id": 2}), upd(3, ns, 2, {"$set": {"n": 1}})]
    entries.append(diff(4, ns, 1, {"i": {"t": "y" * (9 << 20)}}))  # 18 MiB
    entries.append(ins(5, ns, {"_id": 3}))
    with pytest.raises(ReplayError, match=r"ts=1700000004:1 op='u'.*over the server's 16,777,216"):
        await replay(mongo_uri, entries)
    assert _raw(mongo_uri, new_database, "c") == [
        bson.encode(big),
        bson.encode({"_id": 2, "n": 1}),
    ]


async def test_a_diff_naming_a_field_twice_stops_before_it(
    mongo_uri: str, new_database: str
) -> None:
    """``u: {n: 1, n: 2}``, as the oplog's raw bytes hold it: the server refuses
    it (duplicate field name in diff); decoded, it would silently set n to 2."""
    ns = f"{new_database}.c"
    twice = b"\x10n\x00\x01\x00\x00\x00" + b"\x10n\x00\x02\x00\x00\x00"  # int32 n: 1, n: 2
    section = (len(twice) + 5).to_bytes(4, "little") + twice + b"\x00"
    body = b"\x03u\x00" + section
    raw_diff = RawBSONDocument((len(body) + 5).to_bytes(4, "little") + body + b"\x00")
    entries = [
        ins(1, ns, {"_id": 1, "n": 0}),
        upd(2, ns, 1, {"$v": 2, "diff": {"u": {"m": 1}}}),
        upd(3, ns, 1, {"$v": 2, "diff": raw_diff}),
        ins(4, ns, {"_id": 2}),
    ]
    pattern = rf"ts=1700000003:1 op='u' ns='{ns}'.*field 'n' appears twice.*4728000"
    with pytest.raises(ReplayError, match=pattern):
        await replay(mongo_uri, entries)
    assert _raw(mongo_uri, new_database, "c") == [bson.encode({"_id": 1, "n": 0, "m": 1})]


# A MongoDB 8 time series bucket update: a ``b`` section of BinData patches.
# Replay refuses it; that collection stops there and the others go on.
BINARY = {"$v": 2, "diff": {"b": {"data": {"o": 0, "d": Binary(b"\x01\x02", 0)}}}}


async def test_a_binary_diff_stops_its_collection_and_the_others_go_on(
    mongo_uri: str, new_database: str
) -> None:
    a, b = f"{new_database}.a", f"{new_database}.b"
    entries = [
        ins(1, a, {"_id": 1, "n": 0}),
        ins(2, b, {"_id": 1, "n": 0}),
        diff(3, a, 1, {"u": {"n": 1}}),
        upd(4, a, 1, BINARY),
        diff(5, b, 1, {"u": {"n": 5}}),
        ins(6, a, {"_id": 2}),  # after the stop: skipped
        txn(7, [nested("i", b, {"_id": 2}), nested("u", a, BINARY, {"_id": 1})], session()),
        ins(8, b, {"_id": 3}),
        cmd(9, new_database, {"createIndexes": "a", "key": {"n": 1}, "name": "n_1"}),
    ]
    report = await replay(mongo_uri, entries)
    assert report.stop == "end" and report.entries == len(entries)
    assert list(report.stopped) == [a]
    assert f"ts=1700000004:1 op='u' ns='{a}'" in report.stopped[a]
    assert "binary ('b') section" in report.stopped[a]
    assert report.skipped["after stop"] == 3  # the insert, the transaction's update, the index
    assert _raw(mongo_uri, new_database, "a") == [bson.encode({"_id": 1, "n": 1})]
    expected = [{"_id": 1, "n": 5}, {"_id": 2}, {"_id": 3}]
    assert _raw(mongo_uri, new_database, "b") == [bson.encode(d) for d in expected]
    assert report.to_dict()["stopped"] == {a: report.stopped[a]}


async def test_a_binary_diff_in_a_transaction_on_two_collections_stops_the_replay(
    mongo_uri: str, new_database: str
) -> None:
    """Stopping one collection would apply part of the transaction: the whole
    replay stops before it, as for any entry it cannot apply."""
    a, b = f"{new_database}.a", f"{new_database}.b"
    ops = [nested("u", a, BINARY, {"_id": 1}), nested("i", b, {"_id": 2})]
    entries = [ins(1, a, {"_id": 1}), ins(2, b, {"_id": 1}), txn(3, ops, session())]
    with pytest.raises(ReplayError, match=r"ts=1700000003:1 op='u'.*binary.*other namespaces"):
        await replay(mongo_uri, entries)
    assert _raw(mongo_uri, new_database, "a") == [bson.encode({"_id": 1})]
    assert _raw(mongo_uri, new_database, "b") == [bson.encode({"_id": 1})]


async def test_a_refused_write_undoes_its_whole_transaction(
    mongo_uri: str, new_database: str
) -> None:
    ns = f"{new_database}.c"
    ops = [
        nested("u", ns, {"$v": 2, "diff": {"u": {"n": 5}}}, {"_id": 1}),
        nested("i", ns, {"_id": 9, "grid": [[1], [2]]}),  # FerretDB refuses nested arrays
        nested("d", ns, {"_id": 2}),
    ]
    entries = [ins(1, ns, {"_id": 1, "n": 0}), ins(2, ns, {"_id": 2}), ins(3, ns, {"_id": 3})]
    entries += [txn(4, ops, session()), dele(5, ns, 3)]
    with pytest.raises(ReplayError, match=r"ts=1700000004:1 op='i'.*refused the write"):
        await replay(mongo_uri, entries)
    expected = [{"_id": 1, "n": 0}, {"_id": 2}, {"_id": 3}]
    assert _raw(mongo_uri, new_database, "c") == [bson.encode(d) for d in expected]


async def test_a_batch_refused_as_a_whole_goes_through_entry_by_entry(
    mongo_uri: str, new_database: str
) -> None:
    """A unique value moving from a deleted document to an inserted one: refused
    when the batch inserts before it deletes, accepted in oplog order."""
    ns = f"{new_database}.c"
    with MongoClient(mongo_uri) as client:
        client[new_database]["c"].create_index("u", unique=True)
        client[new_database]["c"].insert_one({"_id": 1, "u": 1})
    entries = [dele(1, ns, 1), ins(2, ns, {"_id": 2, "u": 1}), ins(3, ns, {"_id": 3, "u": 3})]
    report = await replay(mongo_uri, entries)
    assert report.stop == "end" and report.applied == {"d": 1, "i": 2}
    expected = [{"_id": 2, "u": 1}, {"_id": 3, "u": 3}]
    assert _raw(mongo_uri, new_database, "c") == [bson.encode(d) for d in expected]
