"""The oplog reader, paused while the capped oplog rolls past it, reports a gap."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator

from oplog_support import WAIT, Writer, newest_ts, server_entries, ts_of, wait_for

from mongosnap.oplog.position import Ts
from mongosnap.oplog.tail import Batch, Gap, OplogTail
from mongosnap.source import Source


async def _next_entries(stream: AsyncGenerator[Batch | Gap, None]) -> Batch | Gap:
    """The next event that is not an empty batch."""

    async def step() -> Batch | Gap:
        while True:
            event = await anext(stream)
            if isinstance(event, Gap) or event.entries:
                return event

    return await asyncio.wait_for(step(), WAIT)


async def test_a_reader_overtaken_by_the_rollover_reports_the_gap(
    new_oplog_server: object,
) -> None:
    uri = new_oplog_server(32 * 1024)  # type: ignore[operator]
    writer = Writer(uri, f"gap_{uuid.uuid4().hex[:8]}")
    await asyncio.to_thread(writer.write, 10)
    src = await Source.connect(uri)
    tail = OplogTail(src, None, await_ms=200)
    stream = tail.stream()
    try:
        seen: list[Ts] = []
        while not seen or seen[-1] < newest_ts(uri):
            event = await _next_entries(stream)
            assert isinstance(event, Batch)
            seen += event.stamps
        # the reader waits (nothing asks it for more) while the oplog rolls past it
        await asyncio.to_thread(writer.write, 600)
        wait_for(lambda: ts_of(server_entries(uri)[0]) > seen[-1], "the oplog to roll over")
        oldest = ts_of(server_entries(uri)[0])
        event = await _next_entries(stream)
        assert isinstance(event, Gap), event
        assert event.after == seen[-1] and event.before >= oldest
        after = await _next_entries(stream)
        assert isinstance(after, Batch) and after.stamps[0] == event.before
    finally:
        writer.stop()
        with contextlib.suppress(Exception):
            await stream.aclose()
        await src.aclose()
