"""The writes replay needs beyond what ``Source`` offers: documents by ``_id``, commands.

A ``Source`` subclass, so connection handling, error translation and the
PyMongo/Motor smoothing stay in one place.
"""

from __future__ import annotations

from typing import Any

from bson.raw_bson import RawBSONDocument

from .._errors import SourceError
from ..source import NAMESPACE_NOT_FOUND, Source, error_code
from .entry import RAW

INDEX_NOT_FOUND = 27


class ReplayTarget(Source):
    """A MongoDB deployment oplog entries are replayed onto."""

    @classmethod
    def of(cls, source: Source) -> ReplayTarget:
        """The same connection as ``source``, which stays its owner."""
        return cls(source._client, source.hosts, owned=False)

    async def find_raw(self, database: str, collection: str, doc_id: Any) -> bytes | None:
        """The stored bytes of one document, None when there is none."""
        coll = self._client[database][collection].with_options(codec_options=RAW)
        with self._translate(database):
            found = await coll.find_one({"_id": doc_id})
        return bytes(found.raw) if isinstance(found, RawBSONDocument) else None

    async def find_many_raw(self, database: str, collection: str, ids: list[Any]) -> list[bytes]:
        """The stored bytes of the documents with these _ids (those that exist)."""
        coll = self._client[database][collection].with_options(codec_options=RAW)
        found: list[bytes] = []
        with self._translate(database):
            async for doc in coll.find({"_id": {"$in": ids}}):
                found.append(bytes(doc.raw))
        return found

    async def put(
        self, database: str, collection: str, ids: list[Any], documents: list[bytes]
    ) -> None:
        """Delete the documents with these _ids, then insert these (raw, ordered).

        Two commands for a whole batch; updates by ``_id`` would cost one scan
        each on servers that do not use the ``_id`` index for writes (FerretDB).
        """
        coll = self._client[database][collection]
        with self._translate(database):
            if ids:
                await coll.delete_many({"_id": {"$in": ids}})
            if documents:
                raw = [RawBSONDocument(d, RAW) for d in documents]
                await coll.insert_many(raw, ordered=True)

    async def command(self, database: str, command: dict[str, Any]) -> Any:
        return await self._command(database, command)

    async def drop_indexes(self, database: str, collection: str, names: list[str]) -> None:
        """Drop indexes by name; one already gone is not an error."""
        for name in names:
            try:
                await self.command(database, {"dropIndexes": collection, "index": name})
            except SourceError as exc:
                if error_code(exc) not in (INDEX_NOT_FOUND, NAMESPACE_NOT_FOUND):
                    raise
