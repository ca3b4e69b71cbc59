"""Where a replay stops: a timestamp (inclusive), or just before a namespace is lost."""

from __future__ import annotations

from replay_support import cmd, documents, ins, nested, run, session, snapshot, ts, txn

from mongosnap.oplog import format_ts, parse_ts


async def test_until_is_inclusive(mongo_uri: str, new_database: str) -> None:
    ns = f"{new_database}.c"
    entries = [ins(i, ns, {"_id": i}) for i in range(1, 6)]
    report = await run(mongo_uri, entries, until=ts(3))
    assert documents(mongo_uri, new_database, "c") == [{"_id": 1}, {"_id": 2}, {"_id": 3}]
    assert report.stop == "until" and report.last_ts == ts(3) and report.entries == 3


async def test_until_leaves_a_later_commit_out(mongo_uri: str, new_database: str) -> None:
    ns = f"{new_database}.c"
    entries = [ins(1, ns, {"_id": 1}), txn(2, [nested("i", ns, {"_id": 2})], session())]
    await run(mongo_uri, entries, until=ts(1))
    assert documents(mongo_uri, new_database, "c") == [{"_id": 1}]


async def test_before_loss_stops_before_drop(mongo_uri: str, new_database: str) -> None:
    ns = f"{new_database}.c"
    entries = [
        ins(1, ns, {"_id": 1}),
        ins(2, ns, {"_id": 2}),
        cmd(3, new_database, {"drop": "c"}),
        ins(4, ns, {"_id": "recreated later"}),
    ]
    report = await run(mongo_uri, entries, namespaces={ns}, before_loss=True)
    assert documents(mongo_uri, new_database, "c") == [{"_id": 1}, {"_id": 2}]
    assert report.stop == "loss" and report.lost == {ns: ts(3)} and report.last_ts == ts(2)


async def test_before_loss_stops_before_rename_away(mongo_uri: str, new_database: str) -> None:
    ns = f"{new_database}.c"
    away = {"renameCollection": ns, "to": f"{new_database}.archived"}
    entries = [ins(1, ns, {"_id": 1}), cmd(2, new_database, away)]
    report = await run(mongo_uri, entries, namespaces={ns}, before_loss=True)
    assert set(snapshot(mongo_uri, new_database)) == {"c"}
    assert report.lost == {ns: ts(2)}


async def test_before_loss_stops_before_drop_database(mongo_uri: str, new_database: str) -> None:
    ns = f"{new_database}.c"
    entries = [ins(1, ns, {"_id": 1}), cmd(2, new_database, {"dropDatabase": 1})]
    report = await run(mongo_uri, entries, namespaces={ns}, before_loss=True)
    assert documents(mongo_uri, new_database, "c") == [{"_id": 1}]
    assert report.stop == "loss" and report.lost == {f"{new_database}.*": ts(2)}


async def test_before_loss_freezes_only_the_lost_namespace(
    mongo_uri: str, new_database: str
) -> None:
    a, b = f"{new_database}.a", f"{new_database}.b"
    entries = [
        ins(1, a, {"_id": 1}),
        cmd(2, new_database, {"drop": "a"}),
        ins(3, a, {"_id": "after loss"}),
        ins(4, b, {"_id": 1}),
    ]
    report = await run(mongo_uri, entries, namespaces={a, b}, before_loss=True)
    assert documents(mongo_uri, new_database, "a") == [{"_id": 1}]
    assert documents(mongo_uri, new_database, "b") == [{"_id": 1}]
    assert report.stop == "end" and report.skipped == {"loss": 1, "after loss": 1}


async def test_before_loss_ignores_commands_on_a_recreated_namespace(
    mongo_uri: str, new_database: str
) -> None:
    ns = f"{new_database}.c"
    entries = [
        ins(1, ns, {"_id": 1}),
        cmd(2, new_database, {"drop": "c"}),
        cmd(3, new_database, {"create": "c"}),
        cmd(4, new_database, {"createIndexes": "c", "v": 2, "key": {"k": 1}, "name": "k_1"}),
        ins(5, ns, {"_id": "new life"}),
        ins(6, f"{new_database}.other", {"_id": 1}),
    ]
    report = await run(mongo_uri, entries, namespaces=lambda n: True, before_loss=True)
    state = snapshot(mongo_uri, new_database)
    assert [name for name, _ in state["c"]["indexes"]] == ["_id_"]
    assert documents(mongo_uri, new_database, "c") == [{"_id": 1}]
    assert report.skipped == {"loss": 1, "after loss": 3} and report.applied == {"i": 2}


async def test_a_single_namespace_string_is_a_selection(mongo_uri: str, new_database: str) -> None:
    ns = f"{new_database}.c"
    entries = [ins(1, ns, {"_id": 1}), ins(2, f"{new_database}.d", {"_id": 1})]
    await run(mongo_uri, entries, namespaces=ns)
    assert set(snapshot(mongo_uri, new_database)) == {"c"}


async def test_without_before_loss_the_drop_is_applied(mongo_uri: str, new_database: str) -> None:
    ns = f"{new_database}.c"
    await run(mongo_uri, [ins(1, ns, {"_id": 1}), cmd(2, new_database, {"drop": "c"})])
    assert snapshot(mongo_uri, new_database) == {}


def test_report_as_json_and_timestamps() -> None:
    assert parse_ts("1700000003:1") == ts(3)
    assert format_ts(ts(3)) == "1700000003:1"


async def test_report_to_dict(mongo_uri: str, new_database: str) -> None:
    ns = f"{new_database}.c"
    report = await run(
        mongo_uri,
        [ins(1, ns, {"_id": 1}), cmd(2, new_database, {"drop": "c"})],
        namespaces={ns},
        before_loss=True,
    )
    assert report.to_dict() == {
        "applied": {"i": 1},
        "skipped": {"loss": 1},
        "namespaces": [ns],
        "entries": 2,
        "last_ts": "1700000001:1",
        "stop": "loss",
        "lost": {ns: "1700000002:1"},
        "pending_transactions": 0,
        "stopped": {},
    }
