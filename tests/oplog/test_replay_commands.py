"""Replay of ``c`` entries (commands, applyOps) onto FerretDB, and what stops a replay."""

from __future__ import annotations

import pytest
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
