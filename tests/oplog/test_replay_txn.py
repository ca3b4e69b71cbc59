"""Transactions in the oplog: applied at their commit, whole, or not at all."""

from __future__ import annotations

import pytest
from bson import Int64
from replay_support import (
    NULL_OPTIME,
    cmd,
    documents,
    ins,
    nested,
    optime,
    run,
    session,
    snapshot,
    txn,
)

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


# MongoDB 8.0 vectored inserts of a retryable write: applyOps entries with the
# session's lsid/txnNumber, chained by prevOpTime, marked multiOpType 1 (the
# server's kApplyOpsAppliedSeparately) and carrying no partialTxn. Shape from
# mongodb/mongo's oplog_entry.idl and its OplogEntry::applyOpsIsLinkedTransactionally.


def vectored(n: int, ns: str, ids: list[int], lsid: dict[str, object], prev: int | None) -> bytes:
    inner = [{**nested("i", ns, {"_id": i}), "o2": {"_id": i}, "stmtId": i} for i in ids]
    return cmd(
        n,
        "admin",
        {"applyOps": inner},
        txnNumber=Int64(7),
        prevOpTime=optime(prev) if prev is not None else NULL_OPTIME,
        multiOpType=1,
        **lsid,
    )


async def test_linked_vectored_inserts_apply_each_entry(mongo_uri: str, new_database: str) -> None:
    ns, lsid = f"{new_database}.v", session()
    entries = [
        vectored(1, ns, [1, 2], lsid, None),
        vectored(2, ns, [3], lsid, 1),
        vectored(3, ns, [4, 5], lsid, 2),
    ]
    report = await run(mongo_uri, entries)
    assert documents(mongo_uri, new_database, "v") == [{"_id": i} for i in range(1, 6)]
    assert report.applied == {"i": 5, "applyOps": 3}
    assert report.pending_transactions == 0
    first = snapshot(mongo_uri, new_database)
    await run(mongo_uri, entries)
    assert snapshot(mongo_uri, new_database) == first


async def test_vectored_insert_whose_chain_starts_before_the_range_applies(
    mongo_uri: str, new_database: str
) -> None:
    """Each entry stands alone: one whose predecessor is not replayed still applies,
    whereas a transaction's commit in that position stops the replay (above)."""
    ns = f"{new_database}.v"
    report = await run(mongo_uri, [vectored(5, ns, [3, 4], session(), 4)])
    assert documents(mongo_uri, new_database, "v") == [{"_id": 3}, {"_id": 4}]
    assert report.applied == {"i": 2, "applyOps": 1}


async def test_refused_vectored_insert_is_undone_alone(mongo_uri: str, new_database: str) -> None:
    """A write the server refuses undoes its own entry, never the entries before it."""
    ns, lsid = f"{new_database}.v", session()
    refused = cmd(
        3,
        "admin",
        {"applyOps": [nested("i", ns, {"_id": 3}), nested("i", ns, {"_id": 4, "g": [[1]]})]},
        txnNumber=Int64(7),
        prevOpTime=optime(2),
        multiOpType=1,
        **lsid,
    )
    entries = [vectored(1, ns, [1], lsid, None), vectored(2, ns, [2], lsid, 1), refused]
    with pytest.raises(ReplayError, match=r"ts=1700000003:1 op='i'.*refused the write"):
        await run(mongo_uri, entries)
    assert documents(mongo_uri, new_database, "v") == [{"_id": 1}, {"_id": 2}]
