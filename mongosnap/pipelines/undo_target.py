"""The writes undo makes to a live collection: each one conditional on what it expects.

A write must not overwrite what the application wrote between undo's check
and its write, so every write names the state it expects:

- a replacement or a delete matches the whole expected document. On MongoDB
  that is ``$expr: {$eq: ["$$ROOT", expected]}``; FerretDB 1.x has no ``$eq``
  expression, so there the filter is ``_id`` plus equality on every top-level
  field (a concurrent write that only *adds* a field is not seen there:
  docs/undo.md, limits);
- a deleted document comes back with an insert, which a document of the same
  ``_id`` written meanwhile makes fail (duplicate key).

FerretDB 1.24 runs an update or delete as a query, then a write by ``_id``:
a write landing between the two is lost whatever the filter, so there only
the insert is safe against a concurrent writer (docs/undo.md, limits).
"""

from __future__ import annotations

from typing import Any

import bson
from bson.raw_bson import RawBSONDocument
from pymongo.errors import DuplicateKeyError, OperationFailure

from ..oplog.entry import PLAIN, RAW
from ..source import NOT_IMPLEMENTED, Source
from .undo_images import IdKey, id_key

_EXPRESSION_REFUSED = (NOT_IMPLEMENTED, 2, 9, 168)
"""Codes a server answers a ``$expr`` it cannot evaluate with (NotImplemented,
BadValue, FailedToParse, InvalidPipelineOperator)."""


class UndoTarget(Source):
    """The live database an undo reads and conditionally writes."""

    exact: bool | None = None
    """Whether the server evaluates the whole-document filter; learnt on first use."""

    @classmethod
    def of(cls, source: Source) -> UndoTarget:
        """The same connection as ``source``, which stays its owner."""
        return cls(source._client, source.hosts, owned=False)

    def handle(self, database: str, name: str) -> Any:
        """The driver's collection object (not ``Source.collection``, which describes one)."""
        return self._client[database][name]

    async def current(self, database: str, name: str, keys: list[IdKey]) -> dict[IdKey, bytes]:
        """The live documents with these ``_id``s, raw, by key (absent ones left out).

        One ``$in`` query per batch. (FerretDB 1.24 answers it, and a point read
        by ``_id`` too, with a scan of the whole collection: one scan per batch
        is the cheaper; measured in docs/undo.md.)
        """
        coll = self.handle(database, name).with_options(codec_options=RAW)
        ids = [bson.decode(k, PLAIN)["_id"] for k in keys]
        found: dict[IdKey, bytes] = {}
        with self._translate(database):
            async for doc in coll.find({"_id": {"$in": ids}}):
                found[id_key(bson.decode(doc.raw, PLAIN)["_id"])] = bytes(doc.raw)
        return found

    async def replace_if(self, database: str, name: str, expected: bytes, new: bytes) -> bool:
        """Replace the document if it is still ``expected``; whether it was."""
        coll = self.handle(database, name)
        replacement = RawBSONDocument(new, RAW)

        async def write(query: dict[str, Any]) -> bool:
            result = await coll.replace_one(query, replacement)
            return bool(result.matched_count)

        return await self._conditional(database, expected, write)

    async def delete_if(self, database: str, name: str, expected: bytes) -> bool:
        """Delete the document if it is still ``expected``; whether it was."""
        coll = self.handle(database, name)

        async def write(query: dict[str, Any]) -> bool:
            result = await coll.delete_one(query)
            return bool(result.deleted_count)

        return await self._conditional(database, expected, write)

    async def insert_new(self, database: str, name: str, document: bytes) -> bool:
        """Insert the document unless one of its ``_id`` exists; whether it was inserted."""
        coll = self.handle(database, name)
        with self._translate(database):
            try:
                await coll.insert_one(RawBSONDocument(document, RAW))
            except DuplicateKeyError:
                return False
        return True

    async def _conditional(self, database: str, expected: bytes, write: Any) -> bool:
        document = bson.decode(expected, PLAIN)
        with self._translate(database):
            if self.exact is not False:
                try:
                    done = bool(await write(_whole(document)))
                except OperationFailure as exc:
                    if exc.code not in _EXPRESSION_REFUSED:
                        raise
                    self.exact = False
                else:
                    self.exact = True
                    return done
            return bool(await write(_fields(document)))


def _whole(document: dict[str, Any]) -> dict[str, Any]:
    return {"_id": document["_id"], "$expr": {"$eq": ["$$ROOT", {"$literal": document}]}}


def _fields(document: dict[str, Any]) -> dict[str, Any]:
    return {"$and": [{name: {"$eq": value}} for name, value in document.items()]}
