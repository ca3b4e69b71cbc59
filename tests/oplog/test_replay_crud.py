"""Replay of i/u/d entries onto FerretDB: whole-document upserts, updates read-modify-write."""

from __future__ import annotations

from typing import Any

import bson
import pytest
from bson import Int64
from bson.datetime_ms import DatetimeMS
from bson.raw_bson import RawBSONDocument
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import AsyncMongoClient, MongoClient
from replay_support import cmd, dele, diff, documents, ins, noop, run, snapshot, upd

from mongosnap import ReplayError
from mongosnap.oplog import replay
from mongosnap.source import Source

FAR_PAST = DatetimeMS(-(2**62))
NESTED = {"sv": {"u": {"deep": 2}}}


def history(ns: str) -> list[bytes]:
    """Inserts, both update formats, a delete: a small life of a collection."""
    return [
        ins(1, ns, {"_id": 1, "name": "a", "n": Int64(1), "tags": ["x", "y", "z"]}),
        ins(2, ns, {"_id": 2, "name": "b", "meta": {"k": 1, "v": {"deep": 1}}}),
        ins(3, ns, {"_id": 3, "name": "c"}),
        upd(4, ns, 1, {"$v": 1, "$set": {"n": Int64(2), "extra.flag": True}}),
        diff(5, ns, 2, {"u": {"name": "B"}, "i": {"added": 1}, "smeta": NESTED}),
        diff(6, ns, 1, {"stags": {"a": True, "l": 2, "u1": "Y"}}),
        upd(7, ns, 3, {"$v": 1, "$unset": {"name": True}}),
        dele(8, ns, 3),
        noop(9),
    ]


EXPECTED = [
    {"_id": 1, "name": "a", "n": Int64(2), "tags": ["x", "Y"], "extra": {"flag": True}},
    {"_id": 2, "name": "B", "meta": {"k": 1, "v": {"deep": 2}}, "added": 1},
]


async def test_history_lands_on_documented_result(mongo_uri: str, new_database: str) -> None:
    report = await run(mongo_uri, history(f"{new_database}.c"))
    got = documents(mongo_uri, new_database, "c")
    assert [bson.encode(d) for d in got] == [bson.encode(d) for d in EXPECTED]
    assert report.applied == {"i": 3, "u": 4, "d": 1}
    assert report.skipped == {"n": 1}
    assert report.namespaces == {f"{new_database}.c"}
    assert report.last_ts is not None and report.last_ts.time == 1_700_000_009
    assert report.stop == "end"


async def test_replaying_many_inserts_again_completes(mongo_uri: str, new_database: str) -> None:
    """The second run rewrites 150 existing documents; FerretDB 1.24 stalls on an update
    command that changes 100 or more, which replay never sends."""
    entries = [ins(i, f"{new_database}.c", {"_id": i, "v": i}) for i in range(150)]
    uri = f"{mongo_uri}?socketTimeoutMS=30000"  # a stalled server fails the test, not the suite
    await run(uri, entries)
    first = snapshot(mongo_uri, new_database)
    report = await run(uri, entries)
    assert snapshot(mongo_uri, new_database) == first
    assert report.applied == {"i": 150}


@pytest.mark.parametrize("batch_size", [1, 3, 1000])
async def test_replay_twice_changes_nothing(
    mongo_uri: str, new_database: str, batch_size: int
) -> None:
    entries = history(f"{new_database}.c")
    await run(mongo_uri, entries, batch_size=batch_size)
    first = snapshot(mongo_uri, new_database)
    await run(mongo_uri, entries, batch_size=batch_size)
    assert snapshot(mongo_uri, new_database) == first


async def test_every_prefix_replayed_again_from_start_converges(
    mongo_uri: str, new_database: str
) -> None:
    """A crash after any entry, then a replay from the start, ends on the same bytes."""
    entries = history(f"{new_database}.c")
    await run(mongo_uri, entries)
    final = snapshot(mongo_uri, new_database)
    for cut in range(1, len(entries)):
        with MongoClient(mongo_uri) as client:
            client.drop_database(new_database)
        await run(mongo_uri, entries[:cut])
        await run(mongo_uri, entries)
        assert snapshot(mongo_uri, new_database) == final, cut


async def test_insert_keeps_the_logged_bytes(mongo_uri: str, new_database: str) -> None:
    doc = {"_id": Int64(5), "small": Int64(1), "when": bson.datetime_ms.DatetimeMS(-(2**62))}
    entry = ins(1, f"{new_database}.c", doc)
    await run(mongo_uri, [entry])
    assert snapshot(mongo_uri, new_database)["c"]["docs"] == [bson.encode(doc)]


async def test_insert_over_existing_document_replaces_it(mongo_uri: str, new_database: str) -> None:
    ns = f"{new_database}.c"
    await run(mongo_uri, [ins(1, ns, {"_id": 1, "old": True, "z": 1})])
    await run(mongo_uri, [ins(2, ns, {"_id": 1, "new": True})])
    assert documents(mongo_uri, new_database, "c") == [{"_id": 1, "new": True}]


async def test_update_of_missing_document_is_counted_not_created(
    mongo_uri: str, new_database: str
) -> None:
    ns = f"{new_database}.c"
    report = await run(mongo_uri, [diff(1, ns, 9, {"u": {"a": 1}}), dele(2, ns, 8)])
    assert documents(mongo_uri, new_database, "c") == []
    assert report.skipped == {"missing": 1}
    assert report.applied == {"d": 1}


async def test_full_image_update_removes_fields_like_ferretdb_did(
    mongo_uri: str, new_database: str
) -> None:
    """FerretDB logs each update as $set of the whole new document (_id included)."""
    ns = f"{new_database}.c"
    entries = [
        ins(1, ns, {"_id": 1, "a": 1, "gone": 2}),
        upd(2, ns, 1, {"$v": 1, "$set": {"_id": 1, "c": 3, "a": 2}}),
    ]
    await run(mongo_uri, entries)
    got = documents(mongo_uri, new_database, "c")
    assert [bson.encode(d) for d in got] == [bson.encode({"_id": 1, "c": 3, "a": 2})]


async def test_namespace_selection_and_database_rename(mongo_uri: str, new_database: str) -> None:
    source = "appdb"
    entries = [
        ins(1, f"{source}.keep", {"_id": 1}),
        ins(2, f"{source}.skip", {"_id": 1}),
        ins(3, "otherdb.keep", {"_id": 1}),
        ins(4, "admin.system.users", {"_id": 1}),
    ]
    report = await run(
        mongo_uri, entries, namespaces={f"{source}.keep"}, databases={source: new_database}
    )
    assert set(snapshot(mongo_uri, new_database)) == {"keep"}
    assert report.skipped == {"unselected": 3}
    assert report.namespaces == {f"{new_database}.keep"}


async def test_predicate_selection(mongo_uri: str, new_database: str) -> None:
    entries = [ins(1, f"{new_database}.a1", {"_id": 1}), ins(2, f"{new_database}.b1", {"_id": 1})]
    await run(mongo_uri, entries, namespaces=lambda ns: ns.endswith(".a1"))
    assert set(snapshot(mongo_uri, new_database)) == {"a1"}


@pytest.mark.parametrize("kind", ["pymongo", "motor"])
async def test_user_client_is_used_and_left_open(
    mongo_uri: str, new_database: str, kind: str
) -> None:
    maker: Any = AsyncMongoClient if kind == "pymongo" else AsyncIOMotorClient
    client = maker(mongo_uri)
    try:
        await replay(client, history(f"{new_database}.c"))
        await client.admin.command("ping")  # still open: replay does not own it
    finally:
        close = client.close()
        if close is not None:
            await close
    got = documents(mongo_uri, new_database, "c")
    assert [bson.encode(d) for d in got] == [bson.encode(d) for d in EXPECTED]


async def test_async_iterable_of_entries(mongo_uri: str, new_database: str) -> None:
    async def stream() -> Any:
        for entry in history(f"{new_database}.c"):
            yield entry

    report = await replay(mongo_uri, stream())
    assert report.entries == 9


async def test_raw_bson_document_entries_and_a_source_target(
    mongo_uri: str, new_database: str
) -> None:
    entries = [RawBSONDocument(e) for e in history(f"{new_database}.c")]
    entries.append(RawBSONDocument(ins(10, f"{new_database}.c", {"_id": 3, "d": FAR_PAST})))
    async with await Source.connect(mongo_uri) as source:
        await replay(source, entries)
        await source.ping()  # the caller's Source stays open
    got = snapshot(mongo_uri, new_database)["c"]["docs"]
    assert got == [bson.encode(d) for d in EXPECTED] + [bson.encode({"_id": 3, "d": FAR_PAST})]


async def test_dict_entries_are_accepted(mongo_uri: str, new_database: str) -> None:
    entries = [bson.decode(e) for e in history(f"{new_database}.c")]
    await run(mongo_uri, entries)
    got = documents(mongo_uri, new_database, "c")
    assert [bson.encode(d) for d in got] == [bson.encode(d) for d in EXPECTED]


async def test_bad_update_stops_with_entry_named(mongo_uri: str, new_database: str) -> None:
    ns = f"{new_database}.c"
    entries = [ins(1, ns, {"_id": 1}), upd(2, ns, 1, {"$inc": {"a": 1}})]
    with pytest.raises(ReplayError, match=r"ts=1700000002:1 op='u' ns='.*\.c'.*\$inc"):
        await run(mongo_uri, entries)


async def test_write_refused_by_server_names_the_entry(mongo_uri: str, new_database: str) -> None:
    ns = f"{new_database}.c"
    with MongoClient(mongo_uri) as client:
        client[new_database]["c"].create_index("u", unique=True)
    entries = [ins(1, ns, {"_id": 1, "u": 1}), ins(2, ns, {"_id": 2})]
    entries.append(ins(3, ns, {"_id": 3, "u": 1}))
    with pytest.raises(ReplayError, match=r"ts=1700000003:1 op='i'.*refused the write"):
        await run(mongo_uri, entries)


async def test_entry_without_id_stops(mongo_uri: str, new_database: str) -> None:
    entry = {"ts": bson.Timestamp(1, 1), "op": "d", "ns": f"{new_database}.c", "o": {}}
    with pytest.raises(ReplayError, match="no _id"):
        await run(mongo_uri, [bson.encode(entry)])


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
async def test_updates_of_stored_documents_across_windows(
    mongo_uri: str, new_database: str, batch_size: int
) -> None:
    """Updates read documents written by an earlier replay, by earlier windows, or dropped."""
    ns = f"{new_database}.c"
    await run(mongo_uri, [ins(0, ns, {"_id": i, "n": 0}) for i in range(3)])
    entries = [
        upd(1, ns, 0, {"$v": 1, "$set": {"n": 1}}),
        upd(2, ns, 1, {"$v": 1, "$set": {"n": 1}}),
        upd(3, ns, 0, {"$v": 1, "$set": {"m": 1}}),
        dele(4, ns, 1),
        upd(5, ns, 1, {"$v": 1, "$set": {"n": 2}}),
        diff(6, ns, 2, {"u": {"n": 3}}),
        cmd(7, new_database, {"drop": "c"}),
        upd(8, ns, 2, {"$v": 1, "$set": {"n": 4}}),
        ins(9, ns, {"_id": 2, "n": 5}),
        diff(10, ns, 2, {"i": {"k": 1}}),
    ]
    report = await run(mongo_uri, entries, batch_size=batch_size)
    assert documents(mongo_uri, new_database, "c") == [{"_id": 2, "n": 5, "k": 1}]
    assert report.skipped == {"missing": 2}
    await run(mongo_uri, [ins(0, ns, {"_id": i, "n": 0}) for i in range(3)] + entries[:6])
    assert documents(mongo_uri, new_database, "c") == [
        {"_id": 0, "n": 1, "m": 1},
        {"_id": 2, "n": 3},
    ]
