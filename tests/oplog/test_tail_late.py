"""Entries FerretDB makes visible late, under concurrent writers, are archived
(or, past the settle time, recorded as a gap): none is silently missing."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from oplog_support import Writer, chunk_entries, newest_ts, ns_of, server_entries, ts_of
from test_tail_archive import _archiver_started, _archiving, _until_covered

from mongosnap.oplog.archiver import list_oplog

WRITERS = 6
LOAD_SECONDS = 6.0


async def test_every_entry_of_a_sustained_concurrent_load_is_archived_once(
    new_oplog_server: Any, tmp_path: Path
) -> None:
    """On a FerretDB of its own: the shared one's oplog is large and busy."""
    uri, database = new_oplog_server(8 << 20), f"late_{uuid.uuid4().hex[:10]}"
    warmup = Writer(uri, database, "warmup")
    async with _archiving(uri, tmp_path, interval=0.2, start="now") as stats:
        await _archiver_started(stats, warmup)
        writers = [Writer(uri, database, f"w{n}").start() for n in range(WRITERS)]
        await asyncio.sleep(LOAD_SECONDS)
        for writer in writers:
            writer.stop()
        await _until_covered(stats, newest_ts(uri))
    warmup.stop()

    loaded = {f"{database}.w{n}" for n in range(WRITERS)}
    server = [ts_of(e) for e in server_entries(uri) if ns_of(e) in loaded]
    archived = [ts_of(e) for e in chunk_entries(tmp_path) if ns_of(e) in loaded]
    assert len(server) == sum(w.count for w in writers) >= 100
    assert len(archived) == len(set(archived)), "an entry was archived twice"
    gaps = (await list_oplog(str(tmp_path))).gaps
    missing = set(server) - set(archived)
    unrecorded = sorted(ts for ts in missing if not any(g.after < ts < g.before for g in gaps))
    assert not unrecorded, f"{len(unrecorded)} of {len(server)} entries missing: {unrecorded}"
    assert not set(archived) - set(server)
