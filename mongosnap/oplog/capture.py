"""``backup --oplog``: the oplog entries written while a dump ran, as ``dump/oplog.bson``.

Like ``mongodump --oplog``: the newest oplog ts is taken before the first
collection is read (``begin``); after the last one, every entry from that ts
to the then newest ts is appended to the archive as ``dump/oplog.bson``
(``write``), so ``mongorestore --oplogReplay`` can bring the restored data to
the newest ts, the archive's consistent point. The first entry must still be
the starting one, or the oplog rolled over during the dump and the backup fails.
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
from .tail import bound, entry_ns, entry_ts, read_range, require_oplog

_KEPT_COMMANDS = ("admin.$cmd",)  # applyOps and transactions, as mongodump keeps them


@dataclass
class OplogCapture:
    """The start of the oplog window of one backup."""

    src: Source
    start: Ts

    @classmethod
    async def begin(cls, src: Source) -> OplogCapture:
        """Record the newest oplog ts; UsageError if the server keeps no oplog."""
        await require_oplog(src)
        start = await bound(src, newest=True)
        if start is None:
            raise SourceError(f"the oplog of {src.hosts} is empty: no position to start from")
        return cls(src, start)

    async def write(
        self,
        writer: ArchiveWriter,
        databases: Sequence[str],
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        batch_size: int = 1000,
    ) -> OplogWindow:
        """Append ``dump/oplog.bson``: the window's entries for the dumped namespaces."""
        end = await bound(self.src, newest=True)
        assert end is not None  # the start entry was there, so the oplog is not empty
        wanted = _Namespaces(databases, include, exclude)
        digest = hashlib.sha256()
        count = 0
        first_seen: Ts | None = None
        await writer.begin(OPLOG_MEMBER)
        async for entry in read_range(self.src, self.start, end, batch_size):
            if first_seen is None:
                first_seen = entry_ts(entry)
                if first_seen != self.start:
                    raise SourceError(
                        f"the oplog of {self.src.hosts} rolled over during the backup: "
                        f"entry {self.start} is gone; use a larger oplog or back up faster"
                    )
            if wanted(entry_ns(entry)):
                digest.update(entry)
                count += 1
                await writer.write(entry)
        member = await writer.end()
        return OplogWindow(
            first_ts=(self.start.t, self.start.i),
            last_ts=(end.t, end.i),
            entries=count,
            sha256=digest.hexdigest(),
            member=member,
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
