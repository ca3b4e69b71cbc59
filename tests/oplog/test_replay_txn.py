"""Transactions in the oplog: applied at their commit, whole, or not at all."""

from __future__ import annotations

import pytest
from replay_support import cmd, documents, ins, nested, optime, run, session, snapshot, txn

from mongosnap import ReplayError


def ops(ns: str, *ids: int) -> list[dict[str, object]]:
    return [nested("i", ns, {"_id": i}) for i in ids]


async def test_txn_commit_applies_all_ops(mongo_uri: str, new_database: str) -> None:
    a, b = f"{new_database}.a", f"{new_database}.b"
    entry = txn(
        1,
        [*ops(a, 1, 2), nested("u", b, {"$v": 2, "diff": {"i": {"x": 1}}}, {"_id": 9})],
        session(),
    )
    report = await run(mongo_uri, [ins(0, b, {"_id": 9}), entry])
    assert documents(mongo_uri, new_database, "a") == [{"_id": 1}, {"_id": 2}]
    assert documents(mongo_uri, new_database, "b") == [{"_id": 9, "x": 1}]
    assert report.applied == {"i": 3, "u": 1, "transaction": 1}
    first = snapshot(mongo_uri, new_database)
    await run(mongo_uri, [ins(0, b, {"_id": 9}), entry])
    assert snapshot(mongo_uri, new_database) == first


async def test_partial_txn_accumulates_until_commit(mongo_uri: str, new_database: str) -> None:
    ns, lsid = f"{new_database}.c", session()
    entries = [
        txn(1, ops(ns, 1), lsid, partialTxn=True),
        ins(2, f"{new_database}.other", {"_id": "meanwhile"}),
        txn(3, ops(ns, 2), lsid, prev=optime(1), partialTxn=True),
        txn(4, ops(ns, 3), lsid, prev=optime(3), count=3),
    ]
    held = await run(mongo_uri, entries[:3])
    assert documents(mongo_uri, new_database, "c") == []
    assert held.pending_transactions == 1
    done = await run(mongo_uri, entries)
    assert documents(mongo_uri, new_database, "c") == [{"_id": 1}, {"_id": 2}, {"_id": 3}]
    assert done.pending_transactions == 0 and done.applied["transaction"] == 1


async def test_prepared_txn_applies_on_commit_transaction(
    mongo_uri: str, new_database: str
) -> None:
    ns, lsid = f"{new_database}.c", session()
    entries = [
        txn(1, ops(ns, 1, 2), lsid, prepare=True),
        cmd(
            2,
            "admin",
            {"commitTransaction": 1, "commitTimestamp": optime(1)["ts"]},
            txnNumber=1,
            prevOpTime=optime(1),
            **lsid,
        ),
    ]
    await run(mongo_uri, entries)
    assert documents(mongo_uri, new_database, "c") == [{"_id": 1}, {"_id": 2}]


async def test_aborted_txn_applies_nothing(mongo_uri: str, new_database: str) -> None:
    ns, lsid = f"{new_database}.c", session()
    entries = [
        txn(1, ops(ns, 1, 2), lsid, prepare=True),
        cmd(2, "admin", {"abortTransaction": 1}, txnNumber=1, prevOpTime=optime(1), **lsid),
    ]
    report = await run(mongo_uri, entries)
    assert documents(mongo_uri, new_database, "c") == []
    assert report.skipped == {"aborted": 2} and report.pending_transactions == 0


async def test_other_session_does_not_commit_a_txn(mongo_uri: str, new_database: str) -> None:
    ns = f"{new_database}.c"
    entries = [txn(1, ops(ns, 1), session(), partialTxn=True), txn(2, ops(ns, 2), session())]
    report = await run(mongo_uri, entries)
    assert documents(mongo_uri, new_database, "c") == [{"_id": 2}]
    assert report.pending_transactions == 1


async def test_commit_of_txn_started_before_range_stops(mongo_uri: str, new_database: str) -> None:
    ns = f"{new_database}.c"
    entry = txn(5, ops(ns, 3), session(), prev=optime(4))
    with pytest.raises(ReplayError, match=r"ts=1700000005:1 op='c'.*precede the replayed range"):
        await run(mongo_uri, [entry])
    assert documents(mongo_uri, new_database, "c") == []


async def test_commit_transaction_without_prepare_stops(mongo_uri: str, new_database: str) -> None:
    entry = cmd(
        6, "admin", {"commitTransaction": 1}, txnNumber=1, prevOpTime=optime(5), **session()
    )
    with pytest.raises(ReplayError, match=r"ts=1700000006:1.*prepared transaction"):
        await run(mongo_uri, [entry])
