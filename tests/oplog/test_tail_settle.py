"""The oplog reader on FerretDB: entries a settle re-read settles are handed on at once."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from oplog_support import WAIT, Writer, newest_ts

from mongosnap.oplog.tail import OplogTail
from mongosnap.source import Source


async def test_a_reread_that_settles_entries_is_followed_by_an_event_before_the_next_read(
    mongo_oplog_uri: str,
) -> None:
    """The archiver writes only on an event; one must come right after the settled
    point moves, not after one more tailing read (a whole oplog scan on FerretDB)."""
    src = await Source.connect(mongo_oplog_uri)
    sent: list[dict[str, Any]] = []
    tailing: set[int] = set()  # cursor ids of the tailable find
    real = src.raw_command

    async def observed(database: str, command: dict[str, Any]) -> Any:
        reply = await real(database, command)
        sent.append(command)
        if command.get("tailable"):
            tailing.add(reply["cursor"]["id"])
        return reply

    src.raw_command = observed  # type: ignore[method-assign]
    tail = OplogTail(src, None, from_newest=True, await_ms=100, settle=0.3)
    stream = tail.stream()
    writer = Writer(mongo_oplog_uri, f"settle_{uuid.uuid4().hex[:8]}")
    try:
        await asyncio.wait_for(anext(stream), WAIT)  # reading from the newest entry on
        await asyncio.to_thread(writer.write, 5)
        target = newest_ts(mongo_oplog_uri)
        advances = 0
        settled = tail.settled()
        while settled is None or settled < target:
            await asyncio.wait_for(anext(stream), WAIT)
            if tail.settled() != settled:
                settled = tail.settled()
                advances += 1
                last = sent[-1]
                assert last.get("getMore") not in tailing, "settled, then read again first"
        assert advances
    finally:
        writer.stop()
        with contextlib.suppress(Exception):
            await stream.aclose()
        await src.aclose()
