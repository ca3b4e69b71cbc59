"""``backup --oplog``: the oplog entries written while a dump ran, as ``dump/oplog.bson``.

Like ``mongodump --oplog``: the newest oplog ts is taken before the first
collection is read (``begin``); after the last one, every entry from that ts
to the then newest ts is appended to the archive as ``dump/oplog.bson``
(``write``), so ``mongorestore --oplogReplay`` can bring the restored data to
the newest ts, the archive's consistent point. The first entry must still be
the starting one, or the oplog rolled over during the dump and the backup fails.

Both reads are cheap on MongoDB: the newest entry is the last record of the
oplog, and a ts-bounded query in oplog order starts at ``start``. FerretDB 1.x
serves neither from the oplog's order: it decodes every entry of
``local.oplog.rs`` for each (no index on ts, no pushdown of a ts range or of a
limit after a sort; docs/benchmarks.md gives the figures). There a find reads
one SQLite snapshot, finite however busy the server is, so the window is read
once without an upper bound and its newest entry is the end: two scans of the
oplog per backup instead of three.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from .._errors import SourceError
from ..archive import ArchiveWriter
from ..archive.manifest import OPLOG_MEMBER, OplogWindow
from ..source import Source, select
from .position import Ts
from .tail import bound, entry_ns, entry_ts, is_ferretdb, read_range, require_oplog

_KEPT_COMMANDS = ("admin.$cmd",)  # applyOps and transactions, as mongodump keeps them


@dataclass
class OplogCapture:
    """The start of the oplog window of one backup."""

    src: Source
    start: Ts
    snapshot_reads: bool = False
    """A find reads one snapshot (FerretDB): the window needs no upper bound."""

    @classmethod
    async def begin(cls, src: Source) -> OplogCapture:
        """Record the newest oplog ts; UsageError if the server keeps no oplog."""
        await require_oplog(src)
        start = await bound(src, newest=True)
        if start is None:
            raise SourceError(f"the oplog of {src.hosts} is empty: no position to start from")
        return cls(src, start, snapshot_reads=await is_ferretdb(src))

    async def write(
        self,
        writer: ArchiveWriter,
        databases: Sequence[str],
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        batch_size: int = 1000,
    ) -> OplogWindow:
        """Append ``dump/oplog.bson``: the window's entries for the dumped namespaces."""
        # Without a snapshot, a read with no upper bound could chase the writes.
        end = None if self.snapshot_reads else await bound(self.src, newest=True)
        wanted = _Namespaces(databases, include, exclude)
        digest = hashlib.sha256()
        count = 0
        newest: Ts | None = None
        await writer.begin(OPLOG_MEMBER)
        async for entry in read_range(self.src, self.start, end, batch_size):
            ts = entry_ts(entry)
            if newest is None and ts != self.start:
                raise self._rolled_over()
            newest = ts if newest is None else max(newest, ts)
            if wanted(entry_ns(entry)):
                digest.update(entry)
                count += 1
                await writer.write(entry)
        if newest is None:  # not even the start entry
            raise self._rolled_over()
        if end is None:
            end = newest
        member = await writer.end()
        return OplogWindow(
            first_ts=(self.start.t, self.start.i),
            last_ts=(end.t, end.i),
            entries=count,
            sha256=digest.hexdigest(),
            member=member,
        )

    def _rolled_over(self) -> SourceError:
        return SourceError(
            f"the oplog of {self.src.hosts} rolled over during the backup: "
            f"entry {self.start} is gone; use a larger oplog or back up faster"
        )


class _Namespaces:
    """Entries of the dumped databases and collections (plus admin commands)."""

    def __init__(
        self, databases: Sequence[str], include: Sequence[str], exclude: Sequence[str]
    ) -> None:
        self.databases = set(databases)
        self.include = include
        self.exclude = exclude

    def __call__(self, ns: str) -> bool:
        if ns in _KEPT_COMMANDS:
            return True
        database, _, collection = ns.partition(".")
        if database not in self.databases or not collection:
            return False
        if collection == "$cmd" or fnmatch.fnmatchcase(collection, "system.*"):
            return collection == "$cmd"
        return bool(select([collection], self.include, self.exclude))
