"""What mongosnap accepts as a MongoDB source or target, as types.

A URI, the legacy scripts' ``host[:port]``, or a client the caller already
has: PyMongo's ``AsyncMongoClient`` or a Motor client. The protocol names only
what ``source.Source`` calls on a caller's client (its owned clients are made
here), so both fit without an adapter. It imports nothing heavy: the API's
signatures use it and ``mongosnap --help`` must stay fast.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol, TypeAlias, runtime_checkable


@runtime_checkable
class AsyncMongoClientLike(Protocol):
    """An asynchronous MongoDB client: PyMongo's ``AsyncMongoClient`` or Motor's.

    ``client[name]`` gives a database whose ``command`` and collection methods
    are awaited; ``list_database_names`` answers (awaited) the database names.
    A synchronous ``MongoClient`` would block the event loop: its
    ``list_database_names`` returns a list, not an awaitable, so mypy rejects
    it here, and ``Source.connect`` refuses it with a TypeError.
    """

    def __getitem__(self, name: str, /) -> Any: ...

    # Any arguments: PyMongo and Motor declare them differently; none are passed.
    # Awaitable: what tells an asynchronous client from a synchronous one.
    def list_database_names(self, *args: Any, **kwargs: Any) -> Awaitable[Any]: ...


MongoSource: TypeAlias = str | AsyncMongoClientLike
"""A MongoDB URI, ``host[:port]``, or an asynchronous client (PyMongo or Motor)."""
