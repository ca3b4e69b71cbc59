"""The writes replay needs beyond what ``Source`` offers: documents by ``_id``, commands.

A ``Source`` subclass, so connection handling, error translation and the
PyMongo/Motor smoothing stay in one place.
"""

from __future__ import annotations

from typing import Any

from bson.raw_bson import RawBSONDocument
from pymongo import DeleteOne, ReplaceOne

from .._errors import SourceError
from ..source import Source
from .entry import RAW

NAMESPACE_NOT_FOUND = 26
INDEX_NOT_FOUND = 27
NAMESPACE_EXISTS = 48

Write = ReplaceOne[Any] | DeleteOne


def error_code(exc: SourceError) -> int | None:
    """The server's error code behind a translated error, if any."""
    code = getattr(exc.__cause__, "code", None)
    return code if isinstance(code, int) else None


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

    async def write(self, database: str, collection: str, writes: list[Write]) -> None:
        """Ordered replaces and deletes; the first failure stops the rest."""
        with self._translate(database):
            try:
                await self._client[database][collection].bulk_write(writes, ordered=True)
            except KeyError as exc:
                # FerretDB 1.x answers a failed update without "nModified",
                # which PyMongo's result merging cannot read.
                raise SourceError(
                    f"MongoDB error on {self.hosts}: a write failed and the reply "
                    f"lacks the field {exc}"
                ) from exc

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
