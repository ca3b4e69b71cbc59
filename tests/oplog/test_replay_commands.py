"""Replay of ``c`` entries (commands, applyOps) onto FerretDB, and what stops a replay."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pymongo import MongoClient
from replay_support import cmd, documents, ins, nested, run, snapshot, ts, upd

from mongosnap import ReplayError


def index_names(uri: str, database: str, collection: str) -> list[str]:
    return sorted(n for n, _ in snapshot(uri, database)[collection]["indexes"])


async def test_create_with_options_then_insert_twice(mongo_uri: str, new_database: str) -> None:
    entries = [
        cmd(1, new_database, {"create": "capped", "capped": True, "size": 4096}),
        ins(2, f"{new_database}.capped", {"_id": 1}),
    ]
    report = await run(mongo_uri, entries)
    first = snapshot(mongo_uri, new_database)
    await run(mongo_uri, entries)
    assert snapshot(mongo_uri, new_database) == first
    assert report.applied == {"create": 1, "i": 1}


async def test_drop_collection(mongo_uri: str, new_database: str) -> None:
    ns = f"{new_database}.c"
    entries = [ins(1, ns, {"_id": 1}), cmd(2, new_database, {"drop": "c"})]
    report = await run(mongo_uri, entries)
    await run(mongo_uri, entries)
    assert snapshot(mongo_uri, new_database) == {}
    assert report.applied == {"i": 1, "drop": 1}


async def test_rename_collection_moves_documents_and_is_idempotent(
    mongo_uri: str, new_database: str
) -> None:
    entries = [
        ins(1, f"{new_database}.old", {"_id": 1}),
        cmd(
            2,
            new_database,
            {"renameCollection": f"{new_database}.old", "to": f"{new_database}.new"},
        ),
        upd(3, f"{new_database}.new", 1, {"$v": 1, "$set": {"moved": True}}),
    ]
    await run(mongo_uri, entries)
    first = snapshot(mongo_uri, new_database)
    second = await run(mongo_uri, entries)
    assert snapshot(mongo_uri, new_database) == first
    assert documents(mongo_uri, new_database, "new") == [{"_id": 1, "moved": True}]
    assert "old" not in first and second.applied["renameCollection"] == 1
    again = await run(mongo_uri, entries[1:2])  # source gone: already applied
    assert again.skipped == {"already applied": 1}
    assert snapshot(mongo_uri, new_database) == first


async def test_rename_with_drop_target_replaces(mongo_uri: str, new_database: str) -> None:
    entries = [
        ins(1, f"{new_database}.a", {"_id": "from a"}),
        ins(2, f"{new_database}.b", {"_id": "from b"}),
        cmd(
            3,
            new_database,
            {
                "renameCollection": f"{new_database}.a",
                "to": f"{new_database}.b",
                "dropTarget": True,
            },
        ),
    ]
    await run(mongo_uri, entries)
    assert set(snapshot(mongo_uri, new_database)) == {"b"}
    assert documents(mongo_uri, new_database, "b") == [{"_id": "from a"}]


async def test_rename_out_of_selection_drops_source(mongo_uri: str, new_database: str) -> None:
    entries = [
        ins(1, f"{new_database}.a", {"_id": 1}),
        cmd(2, new_database, {"renameCollection": f"{new_database}.a", "to": f"{new_database}.z"}),
    ]
    await run(mongo_uri, entries, namespaces={f"{new_database}.a"})
    assert snapshot(mongo_uri, new_database) == {}


async def test_rename_from_unselected_into_selected_stops(
    mongo_uri: str, new_database: str
) -> None:
    entry = cmd(
        5, new_database, {"renameCollection": f"{new_database}.z", "to": f"{new_database}.a"}
    )
    with pytest.raises(ReplayError, match=r"ts=1700000005:1 op='c'.*unselected"):
        await run(mongo_uri, [entry], namespaces={f"{new_database}.a"})


async def test_create_and_drop_indexes_in_every_form(mongo_uri: str, new_database: str) -> None:
    ns = f"{new_database}.c"
    specs = [("x_1", {"x": 1}), ("y_-1", {"y": -1}), ("z_1", {"z": 1}), ("w_1", {"w": 1})]
    created = [
        cmd(i, new_database, {"createIndexes": "c", "v": 2, "key": key, "name": name})
        for i, (name, key) in enumerate(specs, start=2)
    ]
    await run(mongo_uri, [ins(1, ns, {"_id": 1}), *created, *created])
    assert index_names(mongo_uri, new_database, "c") == ["_id_", "w_1", "x_1", "y_-1", "z_1"]
    await run(mongo_uri, [cmd(10, new_database, {"dropIndexes": "c", "index": "x_1"})])
    await run(mongo_uri, [cmd(11, new_database, {"dropIndexes": "c", "index": {"y": -1}})])
    await run(mongo_uri, [cmd(12, new_database, {"dropIndexes": "c", "index": ["z_1"]})])
    assert index_names(mongo_uri, new_database, "c") == ["_id_", "w_1"]
    drop_all = cmd(13, new_database, {"dropIndexes": "c", "index": "*"})
    await run(
        mongo_uri, [drop_all, drop_all, cmd(14, new_database, {"dropIndexes": "c", "index": "x_1"})]
    )
    assert index_names(mongo_uri, new_database, "c") == ["_id_"]


async def test_commit_index_build_creates_indexes(mongo_uri: str, new_database: str) -> None:
    spec = {"v": 2, "key": {"k": 1}, "name": "k_1", "unique": True}
    entries = [
        ins(1, f"{new_database}.c", {"_id": 1}),
        cmd(2, new_database, {"startIndexBuild": "c", "indexes": [spec]}),
        cmd(3, new_database, {"commitIndexBuild": "c", "indexes": [spec]}),
    ]
    report = await run(mongo_uri, entries)
    assert index_names(mongo_uri, new_database, "c") == ["_id_", "k_1"]
    assert report.skipped == {"index build marker": 1}


async def test_drop_database_drops_only_selected(mongo_uri: str, new_database: str) -> None:
    entries = [
        ins(1, f"{new_database}.keep", {"_id": 1}),
        ins(2, f"{new_database}.gone", {"_id": 1}),
        cmd(3, new_database, {"dropDatabase": 1}),
    ]
    await run(mongo_uri, entries[:2])
    await run(mongo_uri, entries[2:], namespaces={f"{new_database}.gone"})
    assert set(snapshot(mongo_uri, new_database)) == {"keep"}
    await run(mongo_uri, entries[2:])
    assert snapshot(mongo_uri, new_database) == {}


async def test_apply_ops_nested_entries_recursively(mongo_uri: str, new_database: str) -> None:
    ns = f"{new_database}.c"
    inner = cmd(1, "admin", {"applyOps": [nested("i", ns, {"_id": 2})]})
    outer = {
        "applyOps": [
            nested("i", ns, {"_id": 1, "a": 1}),
            nested("u", ns, {"$v": 2, "diff": {"u": {"a": 2}}}, {"_id": 1}),
            nested("c", f"{new_database}.$cmd", {"applyOps": [nested("d", ns, {"_id": 2})]}),
        ]
    }
    report = await run(mongo_uri, [inner, cmd(2, "admin", outer)])
    assert documents(mongo_uri, new_database, "c") == [{"_id": 1, "a": 2}]
    assert report.applied == {"applyOps": 3, "i": 2, "u": 1, "d": 1}


async def test_collmod_unknown_option_stops(mongo_uri: str, new_database: str) -> None:
    entry = cmd(4, new_database, {"collMod": "c", "recordPreImages": True})
    with pytest.raises(ReplayError, match=r"ts=1700000004:1 op='c'.*recordPreImages"):
        await run(mongo_uri, [entry])


async def test_collmod_refused_by_server_stops_with_entry_named(
    mongo_uri: str, new_database: str
) -> None:
    """FerretDB 1.x has no collMod: the replay stops there and says which entry."""
    entries = [
        ins(1, f"{new_database}.c", {"_id": 1}),
        cmd(2, new_database, {"collMod": "c", "index": {"name": "t_1", "expireAfterSeconds": 5}}),
    ]
    with pytest.raises(ReplayError, match=r"ts=1700000002:1 op='c'.*refused collMod"):
        await run(mongo_uri, entries)
    assert documents(mongo_uri, new_database, "c") == [{"_id": 1}]  # written before it


async def test_unknown_op_stops_with_entry_named(mongo_uri: str, new_database: str) -> None:
    import bson

    entry = bson.encode({"ts": ts(7), "op": "x", "ns": f"{new_database}.c", "o": {}})
    with pytest.raises(ReplayError, match=rf"ts=1700000007:1 op='x' ns='{new_database}.c'"):
        await run(mongo_uri, [entry])


async def test_unknown_command_stops_with_entry_named(mongo_uri: str, new_database: str) -> None:
    entry = cmd(8, new_database, {"convertToCapped": "c", "size": 100})
    with pytest.raises(ReplayError, match=r"ts=1700000008:1 op='c'.*convertToCapped"):
        await run(mongo_uri, [entry])


# -- a namespace map: heal replays into a staging copy under another name


def _mapped_history() -> list[bytes]:
    """Entries logged for src.a and src.b: documents, an index built and dropped."""
    return [
        cmd(1, "src", {"create": "a"}),
        ins(2, "src.a", {"_id": 1, "n": 1}),
        ins(3, "src.a", {"_id": 2, "n": 2}),
        ins(4, "src.b", {"_id": 1}),
        cmd(5, "src", {"createIndexes": "a", "v": 2, "key": {"n": 1}, "name": "n_1"}),
        cmd(6, "src", {"createIndexes": "a", "v": 2, "key": {"m": 1}, "name": "m_1"}),
        upd(7, "src.a", 1, {"$v": 2, "diff": {"u": {"n": 10}}}),
        cmd(8, "src", {"dropIndexes": "a", "index": {"m": 1}}),
        cmd(
            9,
            "src",
            {"commitIndexBuild": "a", "indexes": [{"v": 2, "key": {"k": 1}, "name": "k_1"}]},
        ),
    ]


@pytest.fixture
def other_database(mongo_uri: str) -> Iterator[str]:
    name = f"mapped_{uuid.uuid4().hex[:10]}"
    yield name
    with MongoClient(mongo_uri) as client:
        client.drop_database(name)


async def test_namespace_map_lands_entries_and_commands_in_the_mapped_collection(
    mongo_uri: str, new_database: str, other_database: str
) -> None:
    """The same entries, replayed as logged and through the map, give the mapped
    collection exactly the documents and indexes the logged name gets."""
    history = _mapped_history()
    plain = await run(mongo_uri, history, databases={"src": new_database})
    staged = "mongosnap_tmp_0123456789abcdef_abcdef"
    mapped = await run(
        mongo_uri,
        history,
        databases={"src": other_database},
        collections={"src.a": staged},
    )
    mapped_again = await run(
        mongo_uri, history, databases={"src": other_database}, collections={"src.a": staged}
    )

    logged, landed = snapshot(mongo_uri, new_database), snapshot(mongo_uri, other_database)
    assert set(logged) == {"a", "b"} and set(landed) == {staged, "b"}  # never under "a"
    assert landed[staged] == logged["a"] and landed["b"] == logged["b"]
    assert index_names(mongo_uri, other_database, staged) == ["_id_", "k_1", "n_1"]
    assert mapped.applied == plain.applied == mapped_again.applied
    assert mapped.namespaces == {f"{other_database}.a", f"{other_database}.b"}  # as published


async def test_namespace_map_holds_back_the_loss_of_the_mapped_collection(
    mongo_uri: str, new_database: str
) -> None:
    """With before_loss a drop, a rename away and a dropDatabase never touch the
    mapped collection; without it, a dropDatabase drops it and spares a
    collection that merely bears the logged name."""
    staged = "mongosnap_tmp_0123456789abcdef_abcdef"
    for loss in (
        {"drop": "a"},
        {"renameCollection": "src.a", "to": "src.c"},
        {"dropDatabase": 1},
    ):
        entries = [ins(1, "src.a", {"_id": 1}), cmd(2, "src", loss), ins(3, "src.a", {"_id": 2})]
        report = await run(
            mongo_uri,
            entries,
            namespaces={"src.a"},
            databases={"src": new_database},
            collections={"src.a": staged},
            before_loss=True,
        )
        assert report.skipped["loss"] == 1 and report.stop == "loss", loss
        assert documents(mongo_uri, new_database, staged) == [{"_id": 1}], loss
        assert set(snapshot(mongo_uri, new_database)) == {staged}, loss

    await run(mongo_uri, [ins(1, "src.a", {"_id": 9})], databases={"src": new_database})
    dropped = await run(
        mongo_uri,
        [cmd(4, "src", {"dropDatabase": 1})],
        namespaces={"src.a"},
        databases={"src": new_database},
        collections={"src.a": staged},
    )
    assert dropped.applied == {"dropDatabase": 1}
    assert set(snapshot(mongo_uri, new_database)) == {"a"}  # not the replay's "a"
