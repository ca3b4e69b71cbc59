"""The floor of a Python reader: find/getMore over one plain socket, nothing else.

    .venv/bin/python benchmarks/raw_drain.py URI [--batch-size 1000]

prints the number of BSON bytes read from every collection of ``bench``. One
asyncio stream to the URI's first host (no TLS, no auth, no compression, no
sessions, no server selection, no retries): the OP_MSG request is built by
hand, each reply is read straight into a buffer of its size (as PyMongo's
asyncio reader does), the reply's top two levels are walked as mongosnap's raw batch cursor
walks them (``mongosnap._rawcursor``) and the batch array becomes a document
stream with the same C routine. What is left is what any Python dump must
pay per byte and per getMore; ``bench_client.py`` runs it as ``raw-drain``
beside PyMongo's drain and mongodump's. A measuring stick, not a client.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import struct
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import bson
from bson import _array_of_documents_to_buffer

from mongosnap._rawcursor import _elements

HEADER = struct.Struct("<iiii")
OP_MSG = 2013
DATABASE = "bench"


BODY = 5  # a reply's document starts after its flag bits and section kind


class Replies(asyncio.BufferedProtocol):
    """Reads each message straight into a buffer of its size: one copy, no joins."""

    def __init__(self) -> None:
        self.header = bytearray(16)
        self.message: bytearray | None = None
        self.filled = 0
        self.waiter: asyncio.Future[bytearray] | None = None

    def get_buffer(self, sizehint: int) -> memoryview:
        target = self.header if self.message is None else self.message
        return memoryview(target)[self.filled :]

    def buffer_updated(self, nbytes: int) -> None:
        self.filled += nbytes
        if self.message is None and self.filled == 16:
            self.message, self.filled = bytearray(HEADER.unpack(self.header)[0] - 16), 0
        elif self.message is not None and self.filled == len(self.message):
            assert self.waiter is not None
            self.waiter.set_result(self.message)
            self.message, self.filled = None, 0

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionError("connection closed"))


class Connection:
    """One socket, one request in flight."""

    def __init__(self, transport: asyncio.Transport, replies: Replies) -> None:
        self.transport, self.replies = transport, replies
        self.ids = itertools.count(1)

    async def command(self, command: dict[str, object]) -> bytearray:
        """The reply message after its header; its document starts at BODY."""
        body = b"\0\0\0\0\0" + bson.encode(command)  # flagBits 0, one kind-0 section
        self.replies.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(HEADER.pack(16 + len(body), next(self.ids), 0, OP_MSG) + body)
        return await self.replies.waiter


def document(message: bytearray) -> dict[str, object]:
    return bson.decode(bytes(message[BODY:]))


def cursor_batch(reply: bytearray) -> tuple[int, bytes]:
    """(cursor id, the batch as concatenated documents) of a find/getMore reply."""
    top = _elements(reply, BODY, len(reply))  # type: ignore[arg-type]  # bytes-like
    cursor = next((e for e in top if e[0] == b"cursor"), None)
    if cursor is None:
        raise RuntimeError(f"not a cursor reply: {document(reply)}")
    cursor_id, stream = 0, b""
    inner = _elements(reply, cursor[2] + len(b"cursor") + 2, cursor[3])  # type: ignore[arg-type]
    for key, _, start, end in inner:
        value = start + len(key) + 2
        if key == b"id":
            cursor_id = struct.unpack_from("<q", reply, value)[0]
        elif key in (b"firstBatch", b"nextBatch"):
            stream = _array_of_documents_to_buffer(memoryview(reply)[value:end])
    return cursor_id, stream


async def batches(connection: Connection, name: str, size: int) -> AsyncIterator[bytes]:
    reply = await connection.command({"find": name, "batchSize": size, "$db": DATABASE})
    cursor_id, stream = cursor_batch(reply)
    yield stream
    while cursor_id:
        more = {"getMore": bson.Int64(cursor_id), "collection": name, "batchSize": size}
        cursor_id, stream = cursor_batch(await connection.command({**more, "$db": DATABASE}))
        yield stream


async def connect(uri: str) -> Connection:
    host = urlsplit(uri).netloc.split(",")[0]
    name, _, port = host.rpartition(":")
    loop = asyncio.get_running_loop()
    transport, replies = await loop.create_connection(Replies, name or host, int(port or 27017))
    return Connection(transport, replies)


async def drain(uri: str, size: int) -> dict[str, bytes]:
    """Every collection of ``bench``: name -> its documents, concatenated."""
    connection = await connect(uri)
    try:
        listed = await connection.command({"listCollections": 1, "nameOnly": True, "$db": DATABASE})
        names = [c["name"] for c in document(listed)["cursor"]["firstBatch"]]  # type: ignore[index]
        found = {}
        for name in names:
            found[name] = b"".join([batch async for batch in batches(connection, name, size)])
        return found
    finally:
        connection.transport.close()


async def count(uri: str, size: int, collections: int | None = None) -> int:
    """Bytes of every collection (or the first ``collections``), no batch kept."""
    connection = await connect(uri)
    listed = await connection.command({"listCollections": 1, "nameOnly": True, "$db": DATABASE})
    total = 0
    for entry in document(listed)["cursor"]["firstBatch"][:collections]:  # type: ignore[index]
        async for batch in batches(connection, entry["name"], size):
            total += len(batch)
    connection.transport.close()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("uri")
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    print(asyncio.run(count(args.uri, args.batch_size)))


if __name__ == "__main__":
    main()
