"""Throughput of BSON validators over a stream of documents (MB/s, 10**6 bytes).

    .venv/bin/python tests/archive/bench_bson_validate.py [MB]

Candidates, on the same 200 B, 1 KB and 16 KB documents fed in 256 KiB chunks:

- split only: BsonSplitter(validate=False), the floor (no validation);
- splitter: BsonSplitter() as shipped (C decoder, explicit depth walk when needed);
- decode_all: PyMongo's C ``bson.decode_all`` over each chunk's documents;
- decode each: ``bson.decode`` once per document;
- walker: the pure-Python element walker of bsonstream (_walk) per document;
- raw only: ``decode_all`` into RawBSONDocument (checks lengths only: not a
  full validation, listed for comparison).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import bson
from bson import Binary, Int64, ObjectId
from bson.raw_bson import RawBSONDocument

from mongosnap.archive import bsonstream
from mongosnap.archive.bsonstream import BsonSplitter

PIECE = 256 * 1024


def document(i: int, size: int) -> bytes:
    doc = {
        "_id": ObjectId(),
        "n": i,
        "big": Int64(2**40 + i),
        "f": i / 7,
        "name": f"user {i}",
        "mail": f"user{i}@example.com",
        "tags": ["a", "b", "c"],
        "nested": {"x": i, "y": [1, 2, 3], "z": {"w": "v"}},
        "bin": Binary(bytes(16)),
    }
    body = bson.encode(doc)
    doc["pad"] = "x" * max(0, size - len(body) - 12)
    return bson.encode(doc)


def stream(size: int, total: int) -> tuple[bytes, int]:
    docs = [document(i, size) for i in range(max(1, total // size))]
    return b"".join(docs), len(docs)


def chunks(data: bytes) -> list[bytes]:
    return [data[i : i + PIECE] for i in range(0, len(data), PIECE)]


def run_splitter(validate: bool) -> Callable[[bytes], None]:
    def go(data: bytes) -> None:
        splitter = BsonSplitter(validate=validate)
        for chunk in chunks(data):
            splitter.feed(chunk)
        splitter.close()

    return go


def run_decode_all(data: bytes) -> None:
    for chunk in _whole_chunks(data):
        bson.decode_all(chunk, bsonstream._DECODE)


def run_decode_each(data: bytes) -> None:
    for doc in _documents(data):
        bson.decode(doc, bsonstream._DECODE)


def run_walker(data: bytes) -> None:
    for doc in _documents(data):
        bsonstream._walk(doc, 0, len(doc), 1, "doc")


def run_raw(data: bytes) -> None:
    options = bson.CodecOptions(document_class=RawBSONDocument)
    for chunk in _whole_chunks(data):
        bson.decode_all(chunk, options)


def _documents(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "little")
        out.append(data[pos : pos + size])
        pos += size
    return out


def _whole_chunks(data: bytes) -> list[bytes]:
    """Runs of whole documents of about PIECE bytes, as the splitter would validate."""
    out, start, pos = [], 0, 0
    while pos < len(data):
        pos += int.from_bytes(data[pos : pos + 4], "little")
        if pos - start >= PIECE:
            out.append(data[start:pos])
            start = pos
    if start < pos:
        out.append(data[start:pos])
    return out


def measure(fn: Callable[[bytes], None], data: bytes) -> float:
    best = float("inf")
    for _ in range(3):
        clock = time.perf_counter()
        fn(data)
        best = min(best, time.perf_counter() - clock)
    return len(data) / best / 1e6


def main() -> None:
    total = int(float(sys.argv[1]) * 1e6) if len(sys.argv) > 1 else 32_000_000
    candidates: dict[str, Callable[[bytes], None]] = {
        "split only (no validation)": run_splitter(False),
        "BsonSplitter() as shipped": run_splitter(True),
        "bson.decode_all per chunk": run_decode_all,
        "bson.decode per document": run_decode_each,
        "Python walker per document": run_walker,
        "decode_all RawBSONDocument (partial)": run_raw,
    }
    sizes = (200, 1024, 16384)
    data = {size: stream(size, total) for size in sizes}
    print(f"{total / 1e6:.0f} MB per size; MB/s, best of 3")
    print(f"| candidate | {' | '.join(f'{s} B' for s in sizes)} |")
    print(f"|---|{'---:|' * len(sizes)}")
    for name, fn in candidates.items():
        rates = [measure(fn, data[size][0]) for size in sizes]
        print(f"| {name} | {' | '.join(f'{r:.0f}' for r in rates)} |")


if __name__ == "__main__":
    main()
