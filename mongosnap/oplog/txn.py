"""Multi-document transactions in the oplog: hold their operations until the commit.

A transaction is logged as ``c`` entries on ``admin.$cmd`` carrying ``lsid``
and ``txnNumber``:

- small and unprepared: one ``applyOps`` entry, committed by being written;
- large (4.2+): ``applyOps`` entries with ``partialTxn: true``, chained by
  ``prevOpTime``, then a last ``applyOps`` without it, which commits;
- prepared: ``applyOps`` with ``prepare: true`` (after any partial ones),
  then ``commitTransaction`` or ``abortTransaction``.

Not a transaction although it carries ``lsid``, ``txnNumber`` and
``prevOpTime``: an ``applyOps`` with ``multiOpType: 1`` (MongoDB 8.0's
vectored inserts of a retryable write, one entry per storage transaction);
its operations apply on their own, each entry when it comes.

Operations are released only on a commit. A commit whose earlier entries lie
before the replayed range cannot be applied whole and is an error: applying a
part would be silent loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bson import Int64
from bson.timestamp import Timestamp

from .._errors import ReplayError
from .entry import OplogEntry

_START = (0, 0)  # prevOpTime.ts of a transaction's first entry
APPLIED_SEPARATELY = 1  # multiOpType of an applyOps outside any transaction (server's enum)


def applied_separately(entry: OplogEntry) -> bool:
    """An applyOps entry chained by ``prevOpTime`` that is no transaction: its
    operations apply on their own (MongoDB's ``applyOpsIsLinkedTransactionally``)."""
    kind = entry.fields.get("multiOpType")
    return type(kind) in (int, Int64) and kind == APPLIED_SEPARATELY


class Transactions:
    """Operations of transactions seen but not yet committed, by transaction."""

    def __init__(self) -> None:
        self._held: dict[bytes, list[Any]] = {}

    @property
    def pending(self) -> int:
        """Transactions started and neither committed nor aborted."""
        return len(self._held)

    def hold(self, entry: OplogEntry, key: bytes, ops: list[Any]) -> None:
        """Keep a partial or prepared entry's operations."""
        self._check_chain(entry, key)
        self._held.setdefault(key, []).extend(ops)

    def commit(self, entry: OplogEntry, key: bytes, ops: list[Any]) -> list[Any]:
        """All operations of a transaction, the committing entry's last."""
        self._check_chain(entry, key)
        return [*self._held.pop(key, []), *ops]

    def commit_prepared(self, entry: OplogEntry, key: bytes) -> list[Any]:
        if key not in self._held:
            raise ReplayError(
                f"{entry.describe()}: commits a prepared transaction whose operations "
                "precede the replayed range"
            )
        return self._held.pop(key)

    def abort(self, key: bytes) -> int:
        """Forget a transaction; how many operations it held."""
        return len(self._held.pop(key, []))

    def _check_chain(self, entry: OplogEntry, key: bytes) -> None:
        """An entry continuing a transaction must find its earlier entries held."""
        if key in self._held:
            return
        previous = entry.fields.get("prevOpTime")
        ts = previous.get("ts") if isinstance(previous, Mapping) else None
        if ts is not None and not isinstance(ts, Timestamp):
            raise ReplayError(f"{entry.describe()}: prevOpTime.ts is not a timestamp")
        if ts is not None and (ts.time, ts.inc) != _START:
            raise ReplayError(
                f"{entry.describe()}: continues a transaction whose first entries "
                "precede the replayed range"
            )
