"""A fast fake MongoDB server over a pre-generated BSON corpus, for client-side ceilings.

    .venv/bin/python benchmarks/fakewire.py --collections 4 --documents 250000 --size 1024

prints ``PORT <n>`` once it listens on 127.0.0.1 and serves until killed. It
speaks just enough of the wire protocol for a dump: the legacy OP_QUERY hello
of the handshake, then OP_MSG ``hello``/``ping``/``buildInfo``,
``listDatabases``, ``listCollections``, ``listIndexes``, ``find``,
``getMore``, ``killCursors``, ``count`` (mongodump asks) and
``endSessions``. One database, ``bench``.

With ``--writable`` it is instead an empty in-memory server a restore can
write to (``WritableServer``): ``create`` (time-series collections too, whose
buckets live in ``system.buckets.NAME`` and which cannot be renamed, as on
MongoDB), ``insert``, ``update``/``delete`` by equality, ``find``,
``listCollections``, ``listIndexes``, ``createIndexes``, ``drop``,
``renameCollection``. It stands in for a server with features FerretDB lacks.

Every batch reply is encoded once, the first time it is asked for, and then
only written, so the server does nearly no work per byte: a client that reads
from it measures its own ceiling, not the server's. Run it in its own process
(``FakeServer.spawn``) so it does not share the client's interpreter lock.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import struct
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bson
from bson.binary import Binary

OP_REPLY, OP_QUERY, OP_MSG = 1, 2004, 2013
DATABASE = "bench"
HEADER = struct.Struct("<iiii")
DEFAULT_BATCH = 101


def make_document(i: int, size: int, rng: random.Random) -> bytes:
    """One document of about ``size`` bytes: some structure, some text, some noise."""
    pad = max(0, size - 120)
    body = {
        "_id": bson.ObjectId(rng.randbytes(12)),
        "i": i,
        "name": f"app-{i}",
        "score": rng.random(),
        "tags": ["a", "b"],
        "blob": Binary(rng.randbytes(pad // 4)),
        "text": "tsuru " * ((pad - pad // 4) // 6),
    }
    return bson.encode(body)


@dataclass
class Corpus:
    """Collections of pre-encoded documents, all in memory."""

    collections: dict[str, list[bytes]] = field(default_factory=dict)

    @classmethod
    def generate(cls, collections: int, documents: int, size: int, seed: int = 1) -> Corpus:
        rng = random.Random(seed)
        corpus = cls()
        for c in range(collections):
            corpus.collections[f"c{c:05d}"] = [
                make_document(i, size, rng) for i in range(documents)
            ]
        return corpus

    @property
    def bytes(self) -> int:
        return sum(len(d) for docs in self.collections.values() for d in docs)


def _array(key: str, documents: list[bytes]) -> bytes:
    """A BSON array element of embedded documents, built by concatenation."""
    items = b"".join(b"\x03" + str(n).encode() + b"\0" + d for n, d in enumerate(documents))
    inner = struct.pack("<i", len(items) + 5) + items + b"\0"
    return b"\x04" + key.encode() + b"\0" + inner


def _reply_document(cursor_key: str, documents: list[bytes], cursor_id: int, ns: str) -> bytes:
    """``{cursor: {<key>: [...], id, ns}, ok: 1}`` encoded by hand (the batch is raw)."""
    tail = bson.encode({"id": bson.Int64(cursor_id), "ns": ns})[4:-1]
    cursor = _array(cursor_key, documents) + tail
    cursor_doc = struct.pack("<i", len(cursor) + 5) + cursor + b"\0"
    body = b"\x03cursor\0" + cursor_doc + b"\x01ok\0" + struct.pack("<d", 1.0)
    return struct.pack("<i", len(body) + 5) + body + b"\0"


class Server:
    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus
        self.cursors: dict[int, tuple[str, int, int]] = {}  # id: (collection, position, batch)
        self.ids = itertools.count(1000)
        self.replies: dict[tuple[str, int, int, str], bytes] = {}
        self.uuids = {name: uuid.uuid4().bytes for name in corpus.collections}

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(16)
                length, request_id, _, opcode = HEADER.unpack(header)
                payload = await reader.readexactly(length - 16)
                if opcode == OP_QUERY:
                    writer.write(self._op_reply(request_id, self._query(payload)))
                elif opcode == OP_MSG:
                    writer.write(self._op_msg(request_id, self._msg(payload)))
                else:
                    return
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    # -- framing

    @staticmethod
    def _op_reply(request_id: int, document: bytes) -> bytes:
        body = struct.pack("<iqii", 0, 0, 0, 1) + document
        return HEADER.pack(16 + len(body), 0, request_id, OP_REPLY) + body

    @staticmethod
    def _op_msg(request_id: int, document: bytes) -> bytes:
        body = struct.pack("<I", 0) + b"\0" + document
        return HEADER.pack(16 + len(body), 0, request_id, OP_MSG) + body

    def _query(self, payload: bytes) -> bytes:
        end = payload.index(b"\0", 4)
        query = bson.decode(
            payload[end + 9 :][: int.from_bytes(payload[end + 9 : end + 13], "little")]
        )
        return self._command(query)

    def _msg(self, payload: bytes) -> bytes:
        at = 4
        command: dict[str, Any] = {}
        while at < len(payload):
            kind = payload[at]
            at += 1
            size = int.from_bytes(payload[at : at + 4], "little")
            if kind == 0:
                command = bson.decode(payload[at : at + size])
            at += size
        return self._command(command)

    # -- commands

    def _command(self, command: dict[str, Any]) -> bytes:
        name = next(iter(command))
        handler = getattr(self, f"_cmd_{name.lower()}", None)
        if handler is None:
            return bson.encode({"ok": 0.0, "errmsg": f"no such command: {name}", "code": 59})
        result: bytes | dict[str, Any] = handler(command)
        return result if isinstance(result, bytes) else bson.encode({**result, "ok": 1.0})

    def _cmd_hello(self, _: dict[str, Any]) -> dict[str, Any]:
        return {
            "isWritablePrimary": True,
            "ismaster": True,
            "helloOk": True,
            "maxBsonObjectSize": 16 * 1024 * 1024,
            "maxMessageSizeBytes": 48_000_000,
            "maxWriteBatchSize": 100_000,
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": 1,
            "minWireVersion": 0,
            "maxWireVersion": 21,
            "readOnly": False,
        }

    _cmd_ismaster = _cmd_hello

    def _cmd_ping(self, _: dict[str, Any]) -> dict[str, Any]:
        return {}

    def _cmd_endsessions(self, _: dict[str, Any]) -> dict[str, Any]:
        return {}

    def _cmd_buildinfo(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"version": "7.0.0-fakewire", "versionArray": [7, 0, 0, 0]}

    def _cmd_listdatabases(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"databases": [{"name": DATABASE, "sizeOnDisk": self.corpus.bytes, "empty": False}]}

    def _cmd_listcollections(self, command: dict[str, Any]) -> dict[str, Any]:
        wanted = (command.get("filter") or {}).get("name")
        if isinstance(wanted, dict):  # {"$in": [...]}, the only operator a dump sends
            wanted = set(wanted["$in"])
        elif wanted is not None:
            wanted = {wanted}
        batch = [
            {
                "name": name,
                "type": "collection",
                "options": {},
                "info": {"readOnly": False, "uuid": Binary(self.uuids[name], 4)},
                "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"},
            }
            for name in self.corpus.collections
            if wanted is None or name in wanted
        ]
        if command.get("nameOnly"):
            batch = [{"name": b["name"], "type": "collection"} for b in batch]
        return {"cursor": {"firstBatch": batch, "id": bson.Int64(0), "ns": f"{DATABASE}.$cmd"}}

    def _cmd_listindexes(self, command: dict[str, Any]) -> dict[str, Any]:
        index = {"v": 2, "key": {"_id": 1}, "name": "_id_"}
        ns = f"{DATABASE}.{command['listIndexes']}"
        return {"cursor": {"firstBatch": [index], "id": bson.Int64(0), "ns": ns}}

    def _cmd_count(self, command: dict[str, Any]) -> dict[str, Any]:
        return {"n": len(self.corpus.collections.get(command["count"], []))}

    def _cmd_find(self, command: dict[str, Any]) -> bytes:
        name = command["find"]
        batch = int(command.get("batchSize") or DEFAULT_BATCH)
        return self._batch(name, 0, batch, "firstBatch")

    def _cmd_getmore(self, command: dict[str, Any]) -> bytes:
        name, position, batch = self.cursors.pop(int(command["getMore"]))
        return self._batch(name, position, int(command.get("batchSize") or batch), "nextBatch")

    def _cmd_killcursors(self, command: dict[str, Any]) -> dict[str, Any]:
        for cursor_id in command.get("cursors", []):
            self.cursors.pop(int(cursor_id), None)
        return {"cursorsKilled": command.get("cursors", [])}

    def _batch(self, name: str, position: int, size: int, key: str) -> bytes:
        documents = self.corpus.collections.get(name, [])
        end = min(position + size, len(documents))
        cursor_id = 0
        if end < len(documents):
            cursor_id = next(self.ids)
            self.cursors[cursor_id] = (name, end, size)
        cached = (name, position, size, key)
        if cached not in self.replies:
            # The cursor id is part of the reply: keep a template with a zero id
            # and patch the 8 bytes in; the offset is fixed for a given batch.
            self.replies[cached] = _reply_document(
                key, documents[position:end], 0, f"{DATABASE}.{name}"
            )
        return _with_cursor_id(self.replies[cached], cursor_id)


@dataclass
class _Collection:
    options: dict[str, Any]
    type: str = "collection"
    documents: list[bytes] = field(default_factory=list)
    indexes: list[dict[str, Any]] = field(default_factory=list)
    uuid: bytes = field(default_factory=lambda: uuid.uuid4().bytes)


def _error(code: int, message: str) -> dict[str, Any]:
    return {"ok": 0.0, "errmsg": message, "code": code}


def _matches(document: bytes, query: dict[str, Any]) -> bool:
    """Equality on top-level fields, or ``{"$in": [...]}`` (as a run's leases are
    deleted and renewed together)."""
    decoded = bson.decode(document)
    return all(
        decoded.get(k) in v["$in"] if isinstance(v, dict) and "$in" in v else decoded.get(k) == v
        for k, v in query.items()
    )


class WritableServer(Server):
    """An empty server that keeps what it is sent, in memory (see the module doc)."""

    def __init__(self) -> None:
        super().__init__(Corpus())
        self.sequences: dict[str, list[bytes]] = {}
        self.namespaces: dict[tuple[str, str], _Collection] = {}

    def _msg(self, payload: bytes) -> bytes:
        at = 4
        command: dict[str, Any] = {}
        sequences: dict[str, list[bytes]] = {}
        while at < len(payload) - (4 if payload[0] & 1 else 0):
            kind = payload[at]
            at += 1
            size = int.from_bytes(payload[at : at + 4], "little")
            if kind == 0:
                command = bson.decode(payload[at : at + size])
            else:
                section = payload[at + 4 : at + size]
                end = section.index(b"\0")
                sequences[section[:end].decode()] = list(iter_documents(section[end + 1 :]))
            at += size
        self.sequences = sequences  # kept raw: inserted documents are stored as sent
        command |= {key: [bson.decode(d) for d in docs] for key, docs in sequences.items()}
        return self._command(command)

    def _command(self, command: dict[str, Any]) -> bytes:
        name = next(iter(command))
        handler = getattr(self, f"_cmd_{name.lower()}", None)
        if handler is None:
            return bson.encode(_error(59, f"no such command: {name}"))
        result: bytes | dict[str, Any] = handler(command)
        return result if isinstance(result, bytes) else bson.encode({"ok": 1.0, **result})

    def _get(self, db: str, name: str) -> _Collection | None:
        return self.namespaces.get((db, name))

    def _cmd_create(self, command: dict[str, Any]) -> dict[str, Any]:
        db, name = command["$db"], command["create"]
        if (db, name) in self.namespaces:
            return _error(48, f"Collection {db}.{name} already exists.")
        options = {k: v for k, v in command.items() if k not in ("create", "$db", "lsid")}
        options = {k: v for k, v in options.items() if not k.startswith("$")}
        if "timeseries" in options:
            self.namespaces[(db, name)] = _Collection(options, "timeseries")
            self.namespaces[(db, f"system.buckets.{name}")] = _Collection({})
        else:
            self.namespaces[(db, name)] = _Collection(options)
        return {}

    def _cmd_insert(self, command: dict[str, Any]) -> dict[str, Any]:
        db, name = command["$db"], command["insert"]
        documents = self.sequences.get("documents") or [
            bson.encode(d) for d in command.get("documents", [])
        ]
        target = self.namespaces.setdefault((db, name), _Collection({}))
        if target.type == "timeseries":
            return _error(72, "this fake does not bucket measurements: insert the buckets")
        ids = {bson.decode(d).get("_id") for d in target.documents}
        errors = []
        for i, document in enumerate(documents):
            key = bson.decode(document).get("_id")
            if key in ids:
                errors.append({"index": i, "code": 11000, "errmsg": "E11000 duplicate key"})
                break
            ids.add(key)
            target.documents.append(document)
        n = len(documents) if not errors else errors[0]["index"]
        return {"n": n, "writeErrors": errors} if errors else {"n": n}

    def _cmd_update(self, command: dict[str, Any]) -> dict[str, Any]:
        target = self._get(command["$db"], command["update"])
        n = 0
        for update in command["updates"]:
            for i, document in enumerate(target.documents if target else []):
                if _matches(document, update["q"]):
                    decoded = bson.decode(document) | update["u"].get("$set", {})
                    target.documents[i] = bson.encode(decoded)  # type: ignore[union-attr]
                    n += 1
                    if not update.get("multi"):
                        break
        return {"n": n, "nModified": n}

    def _cmd_delete(self, command: dict[str, Any]) -> dict[str, Any]:
        target = self._get(command["$db"], command["delete"])
        n = 0
        for delete in command["deletes"]:
            if target is None:
                break
            kept = [d for d in target.documents if not _matches(d, delete["q"])]
            n += len(target.documents) - len(kept)
            target.documents = kept
        return {"n": n}

    def _cmd_find(self, command: dict[str, Any]) -> bytes:
        db, name = command["$db"], command["find"]
        target = self._get(db, name)
        documents = [
            d
            for d in (target.documents if target else [])
            if _matches(d, command.get("filter", {}))
        ]
        if command.get("limit"):
            documents = documents[: command["limit"]]
        return _reply_document("firstBatch", documents, 0, f"{db}.{name}")

    def _cmd_listcollections(self, command: dict[str, Any]) -> dict[str, Any]:
        db = command["$db"]
        wanted = (command.get("filter") or {}).get("name")
        names = wanted.get("$in") if isinstance(wanted, dict) else None
        batch = []
        for (in_db, name), coll in sorted(self.namespaces.items()):
            if in_db != db or (wanted is not None and name != wanted and name not in (names or ())):
                continue
            entry = {"name": name, "type": coll.type, "options": coll.options}
            entry["info"] = {"readOnly": False, "uuid": Binary(coll.uuid, 4)}
            batch.append({"name": name, "type": coll.type} if command.get("nameOnly") else entry)
        return {"cursor": {"firstBatch": batch, "id": bson.Int64(0), "ns": f"{db}.$cmd"}}

    def _cmd_listindexes(self, command: dict[str, Any]) -> dict[str, Any]:
        db, name = command["$db"], command["listIndexes"]
        target = self._get(db, name)
        if target is None:
            return _error(26, f"ns does not exist: {db}.{name}")
        indexes = (
            [{"v": 2, "key": {"_id": 1}, "name": "_id_"}] if target.type != "timeseries" else []
        )
        batch = indexes + target.indexes
        return {"cursor": {"firstBatch": batch, "id": bson.Int64(0), "ns": f"{db}.{name}"}}

    def _cmd_createindexes(self, command: dict[str, Any]) -> dict[str, Any]:
        target = self.namespaces.setdefault(
            (command["$db"], command["createIndexes"]), _Collection({})
        )
        target.indexes.extend(command["indexes"])
        return {"numIndexesAfter": len(target.indexes) + 1}

    def _cmd_drop(self, command: dict[str, Any]) -> dict[str, Any]:
        db, name = command["$db"], command["drop"]
        coll = self.namespaces.pop((db, name), None)
        if coll is None:
            return _error(26, "ns not found")
        if coll.type == "timeseries":
            self.namespaces.pop((db, f"system.buckets.{name}"), None)
        return {}

    def _cmd_dropdatabase(self, command: dict[str, Any]) -> dict[str, Any]:
        for key in [k for k in self.namespaces if k[0] == command["$db"]]:
            del self.namespaces[key]
        return {}

    def _cmd_renamecollection(self, command: dict[str, Any]) -> dict[str, Any]:
        source = tuple(command["renameCollection"].split(".", 1))
        target = tuple(command["to"].split(".", 1))
        coll = self.namespaces.get(source)
        if coll is None:
            return _error(26, "source namespace does not exist")
        if coll.type == "timeseries":
            return _error(20, "cannot rename a time-series collection")
        if target in self.namespaces and not command.get("dropTarget"):
            return _error(48, "target namespace exists")
        self.namespaces[target] = self.namespaces.pop(source)
        return {}


def _with_cursor_id(reply: bytes, cursor_id: int) -> bytes:
    marker = b"\x12id\0"
    at = reply.rindex(marker) + len(marker)
    return reply[:at] + struct.pack("<q", cursor_id) + reply[at + 8 :]


class FakeServer:
    """A fakewire process: ``with FakeServer.spawn(...) as server: server.uri``."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"

    @classmethod
    def spawn(
        cls, collections: int = 0, documents: int = 0, size: int = 0, *, writable: bool = False
    ) -> FakeServer:
        args = [sys.executable, str(Path(__file__).resolve()), "--collections", str(collections)]
        args += ["--documents", str(documents), "--size", str(size)]
        args += ["--writable"] if writable else []
        process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("PORT "):
            process.kill()
            raise RuntimeError(f"fakewire did not start: {line!r}")
        return cls(process, int(line.split()[1]))

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(10)


def iter_documents(batch: bytes) -> Iterator[bytes]:
    at = 0
    while at < len(batch):
        size = int.from_bytes(batch[at : at + 4], "little")
        yield batch[at : at + size]
        at += size


async def _main(args: argparse.Namespace) -> None:
    if args.writable:
        server: Server = WritableServer()
    else:
        server = Server(Corpus.generate(args.collections, args.documents, args.size, args.seed))
    listener = await asyncio.start_server(server.serve, "127.0.0.1", args.port)
    print(f"PORT {listener.sockets[0].getsockname()[1]}", flush=True)
    async with listener:
        await listener.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collections", type=int, default=1)
    parser.add_argument("--documents", type=int, default=10_000, help="per collection")
    parser.add_argument("--size", type=int, default=1024, help="bytes per document, about")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--writable", action="store_true", help="an empty server that keeps writes")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
