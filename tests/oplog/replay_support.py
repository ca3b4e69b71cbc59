"""Hand-built oplog entries (MongoDB's shapes) and a byte-level view of a database."""

from __future__ import annotations

import uuid
from typing import Any

import bson
from bson import Int64
from bson.binary import Binary
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp
from pymongo import MongoClient

from mongosnap.oplog import ReplayReport, replay

NULL_OPTIME = {"ts": Timestamp(0, 0), "t": Int64(-1)}


def ts(n: int) -> Timestamp:
    return Timestamp(1_700_000_000 + n, 1)


def ins(n: int, ns: str, doc: dict[str, Any]) -> bytes:
    """An insert entry as the raw bytes a server's oplog holds."""
    return bson.encode({"ts": ts(n), "t": Int64(1), "v": 2, "op": "i", "ns": ns, "o": doc})


def upd(n: int, ns: str, doc_id: Any, o: dict[str, Any]) -> bytes:
    entry = {"ts": ts(n), "t": Int64(1), "v": 2, "op": "u", "ns": ns, "o": o, "o2": {"_id": doc_id}}
    return bson.encode(entry)


def diff(n: int, ns: str, doc_id: Any, d: dict[str, Any]) -> bytes:
    return upd(n, ns, doc_id, {"$v": 2, "diff": d})


def dele(n: int, ns: str, doc_id: Any) -> bytes:
    return bson.encode({"ts": ts(n), "op": "d", "ns": ns, "o": {"_id": doc_id}})


def cmd(n: int, database: str, o: dict[str, Any], **extra: Any) -> bytes:
    return bson.encode({"ts": ts(n), "op": "c", "ns": f"{database}.$cmd", "o": o, **extra})


def noop(n: int) -> bytes:
    return bson.encode({"ts": ts(n), "op": "n", "ns": "", "o": {"msg": "periodic noop"}})


def nested(op: str, ns: str, o: dict[str, Any], o2: dict[str, Any] | None = None) -> dict[str, Any]:
    """An operation inside applyOps (no ts of its own)."""
    entry: dict[str, Any] = {"op": op, "ns": ns, "o": o}
    if o2 is not None:
        entry["o2"] = o2
    return entry


def session() -> dict[str, Any]:
    return {"lsid": {"id": Binary(uuid.uuid4().bytes, 4), "uid": b"\x00" * 32}}


def txn(
    n: int,
    ops: list[dict[str, Any]],
    lsid: dict[str, Any],
    number: int = 1,
    prev: dict[str, Any] | None = None,
    **flags: Any,
) -> bytes:
    """An applyOps entry of a transaction; flags go into ``o`` (partialTxn, prepare)."""
    return cmd(
        n,
        "admin",
        {"applyOps": ops, **flags},
        txnNumber=Int64(number),
        prevOpTime=prev or NULL_OPTIME,
        **lsid,
    )


def optime(n: int) -> dict[str, Any]:
    return {"ts": ts(n), "t": Int64(1)}


async def run(uri: str, entries: list[Any], **options: Any) -> ReplayReport:
    return await replay(uri, entries, **options)


def snapshot(uri: str, database: str) -> dict[str, Any]:
    """Every collection: raw documents sorted by _id, and index specs."""
    with MongoClient(uri, document_class=RawBSONDocument) as client:
        db = client[database]
        out: dict[str, Any] = {}
        for name in sorted(db.list_collection_names()):
            docs = [bytes(d.raw) for d in db[name].find().sort("_id", 1)]
            indexes = sorted((str(ix["name"]), bson.encode(ix)) for ix in db[name].list_indexes())
            out[name] = {"docs": docs, "indexes": indexes}
        return out


def documents(uri: str, database: str, collection: str) -> list[dict[str, Any]]:
    with MongoClient(uri) as client:
        return list(client[database][collection].find().sort("_id", 1))
