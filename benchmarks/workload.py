"""The data a benchmark case runs on: layouts, seeding, and fingerprints that verify restores.

Every case has a ``heal`` collection holding about 10 % of its bytes (the one
the heal contenders restore) and, beside it:

- ``1k`` / ``200b``: 4 collections of documents of about 1 KB / 200 B;
- ``big``: one collection of ``big_bytes`` and 3 sharing the rest (1 KB documents);
- ``many``: ``collections - 1`` small collections sharing the rest (1 KB documents).

Documents are half text (compressible), a quarter random bytes, some structure,
and no secondary indexes: FerretDB 1.x refuses the ``ns`` index option that
mongorestore sends, so every contender restores the same thing (``_id`` only)
with its default flags.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import bson
from pymongo import MongoClient
from pymongo.database import Database

HEAL = "heal"
CASES = ("1k", "200b", "many", "big")
WORDS = "tsuru app unit deploy router pool team service plan quota node docker image".split()  # noqa: SIM905
ID_ELEMENT = 17  # bytes an ObjectId ``_id`` element adds to each document
MODULUS = 1 << 256
SEED_BATCH = 5000
POOL = 1000  # distinct document bodies per size; ``i`` makes every document unique


@dataclass(frozen=True)
class Collection:
    name: str
    documents: int
    doc_bytes: int


def layout(case: str, *, total_bytes: int, big_bytes: int, collections: int) -> list[Collection]:
    """The collections of ``case``, the ``heal`` one first."""
    heal = total_bytes // 10
    rest = total_bytes - heal
    doc = 200 if case == "200b" else 1024
    if case == "many":
        if collections < 2:
            raise ValueError("the many case needs at least 2 collections")
        share = rest // (collections - 1)
        others = [(f"c{n:04d}", share) for n in range(collections - 1)]
    elif case == "big":
        if big_bytes >= rest:
            raise ValueError("--big-mb must stay under 90 % of the case's size")
        others = [("big", big_bytes)] + [(f"coll{n}", (rest - big_bytes) // 3) for n in range(3)]
    else:
        others = [(f"coll{n}", rest // 4) for n in range(4)]
    return [Collection(name, max(1, size // doc), doc) for name, size in [(HEAL, heal), *others]]


def document(i: int, size: int, rng: random.Random) -> dict[str, Any]:
    """About ``size`` bytes of BSON once the server adds an ObjectId ``_id``.

    What the structure leaves is 60 % text, 25 % random bytes, the rest padding.
    """
    body = size - ID_ELEMENT
    doc: dict[str, Any] = {
        "i": i,
        "name": "",
        "score": rng.random(),
        "blob": b"",
        "tags": [rng.choice(WORDS) for _ in range(3)],
        "meta": {"owner": rng.choice(WORDS), "units": rng.randrange(100)},
    }
    spare = body - len(bson.encode(doc))
    text = " ".join(rng.choice(WORDS) for _ in range(spare // 4 + 1))
    doc["name"] = text[: spare * 60 // 100]
    doc["blob"] = rng.randbytes(spare // 4)
    pad = body - len(bson.encode(doc)) - 8  # a string element: type, "p\0", length, NUL
    if pad > 0:
        doc["p"] = "y" * pad
    return doc


def seed(client: MongoClient[dict[str, Any]], database: str, plan: list[Collection]) -> None:
    """Fill ``database`` (expected empty) with the collections of ``plan``."""
    rng = random.Random(7)
    pools: dict[int, list[dict[str, Any]]] = {}
    db = client[database]
    for coll in plan:
        if coll.doc_bytes not in pools:
            pools[coll.doc_bytes] = [document(i, coll.doc_bytes, rng) for i in range(POOL)]
        pool = pools[coll.doc_bytes]
        for start in range(0, coll.documents, SEED_BATCH):
            count = min(SEED_BATCH, coll.documents - start)
            batch = [dict(pool[(start + j) % POOL], i=start + j) for j in range(count)]
            db[coll.name].insert_many(batch, ordered=False)


def split_documents(data: bytes | memoryview) -> Iterator[memoryview]:
    """The documents of concatenated BSON, by their length prefixes, without copying."""
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        size = int.from_bytes(view[offset : offset + 4], "little")
        if size < 5 or offset + size > len(view):
            raise ValueError(f"truncated BSON at offset {offset}")
        yield view[offset : offset + size]
        offset += size


@dataclass(frozen=True)
class Fingerprint:
    """Count, bytes and an order-independent digest of a collection's raw documents.

    The digest is the sum modulo 2**256 of each document's SHA-256: equal for
    the same documents byte for byte in any order, so no sort is needed (a sort
    by ``_id`` of a 400 MB collection is a full in-memory sort on FerretDB).
    """

    documents: int
    bytes: int
    digest: str

    def to_json(self) -> dict[str, Any]:
        return {"documents": self.documents, "bytes": self.bytes, "digest": self.digest}


def fingerprint(db: Database[dict[str, Any]], name: str) -> Fingerprint:
    """Read every document of ``db[name]`` as raw BSON and fingerprint it."""
    documents = size = total = 0
    for batch in db[name].find_raw_batches(batch_size=1000):
        for doc in split_documents(cast(bytes, batch)):
            total += int.from_bytes(hashlib.sha256(doc).digest(), "big")
            documents += 1
            size += len(doc)
    return Fingerprint(documents, size, f"{total % MODULUS:064x}")


def fingerprints(
    db: Database[dict[str, Any]], names: list[str] | None = None
) -> dict[str, Fingerprint]:
    """The named collections of ``db`` (all when None), by name; 4 read at once, so a
    check between two contenders takes less of the run (it is not measured)."""
    chosen = sorted(db.list_collection_names()) if names is None else names
    with ThreadPoolExecutor(4) as pool:
        return dict(zip(chosen, pool.map(lambda name: fingerprint(db, name), chosen), strict=True))


def combined(prints: dict[str, Fingerprint]) -> dict[str, Any]:
    """One fingerprint for several collections: totals, and a digest of each one's."""
    lines = "".join(f"{name}\0{fp.documents}\0{fp.digest}\n" for name, fp in sorted(prints.items()))
    return {
        "collections": len(prints),
        "documents": sum(fp.documents for fp in prints.values()),
        "bytes": sum(fp.bytes for fp in prints.values()),
        "digest": hashlib.sha256(lines.encode()).hexdigest(),
    }
