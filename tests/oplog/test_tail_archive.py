"""Continuous oplog archiving against the oplog FerretDB of the test bed."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from helpers import run_cli
from oplog_support import (
    WAIT,
    ArchiverProcess,
    Writer,
    chunk_entries,
    newest_ts,
    server_entries,
    sidecars,
    ts_of,
    wait_for,
)

import mongosnap
from mongosnap.oplog import chunks
from mongosnap.oplog.archiver import ArchiverStats, archive_oplog, list_oplog
from mongosnap.oplog.position import Ts


def _database() -> str:
    return f"oplog_test_{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def _archiving(uri: str, dest: Path, **options: object) -> AsyncIterator[ArchiverStats]:
    stats = ArchiverStats()
    task = asyncio.create_task(archive_oplog(uri, str(dest), stats=stats, **options))  # type: ignore[arg-type]
    try:
        yield stats
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _until_covered(stats: ArchiverStats, ts: Ts) -> None:
    async def poll() -> None:
        while stats.last is None or stats.last.last_ts < ts:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), WAIT)


async def _archiver_started(stats: ArchiverStats, writer: Writer) -> None:
    """Write single entries until one is archived: "now" has been taken by then."""

    async def poll() -> None:
        while stats.last is None:
            await asyncio.to_thread(writer.write, 1)
            await asyncio.sleep(0.1)

    await asyncio.wait_for(poll(), WAIT)


def _server_slice(uri: str, first: Ts, last: Ts) -> list[bytes]:
    """The server's entries from first to last inclusive, in ts order (as chunks
    hold them; FerretDB's own order may swap neighbours)."""
    return sorted((e for e in server_entries(uri) if first <= ts_of(e) <= last), key=ts_of)


async def test_chunks_hold_the_server_entries_byte_for_byte(
    mongo_oplog_uri: str, tmp_path: Path
) -> None:
    writer = Writer(mongo_oplog_uri, _database())
    async with _archiving(mongo_oplog_uri, tmp_path, interval=0.2, start="now") as stats:
        await _archiver_started(stats, writer)
        await asyncio.to_thread(writer.write, 200)
        newest = newest_ts(mongo_oplog_uri)
        await _until_covered(stats, newest)
    writer.stop()
    archived = chunk_entries(tmp_path)
    infos = sidecars(tmp_path)
    assert archived == _server_slice(mongo_oplog_uri, infos[0].first_ts, newest)
    assert sum(i.count for i in infos) == len(archived) >= 200
    for before, after in itertools.pairwise(infos):
        assert after.prev_ts == before.last_ts  # each chunk continues the previous one
    listing = await list_oplog(str(tmp_path))
    assert len(listing.spans) == 1 and not listing.gaps and not listing.incomplete
    assert listing.spans[0].entries == len(archived)


async def test_restart_mid_stream_loses_and_duplicates_nothing(
    mongo_oplog_uri: str, tmp_path: Path
) -> None:
    """SIGTERM, then SIGKILL, then a last run, with a writer going all along."""
    writer = Writer(mongo_oplog_uri, _database()).start()
    options = ("--interval", "0.3", "--start", "now")
    try:
        first = ArchiverProcess(tmp_path, mongo_oplog_uri, *options)
        first.wait_read_past(newest_ts(mongo_oplog_uri))
        first.wait_line("oplog chunk")
        assert first.terminate() == 143
        second = ArchiverProcess(tmp_path, mongo_oplog_uri, *options)
        second.wait_line("oplog chunk")
        second.wait_read_past(newest_ts(mongo_oplog_uri))
        assert second.kill() == -9
        third = ArchiverProcess(tmp_path, mongo_oplog_uri, *options)
        third.wait_read_past(newest_ts(mongo_oplog_uri))
    finally:
        writer.stop()
    newest = newest_ts(mongo_oplog_uri)
    third.wait_read_past(newest)
    while sidecars(tmp_path)[-1].last_ts < newest:
        third.wait_line("oplog chunk")
    assert third.terminate() == 143

    archived = chunk_entries(tmp_path)
    stamps = [ts_of(e) for e in archived]
    assert len(set(stamps)) == len(stamps), "an entry was archived twice"
    assert archived == _server_slice(mongo_oplog_uri, stamps[0], newest)
    listing = await list_oplog(str(tmp_path))
    assert len(listing.spans) == 1 and not listing.gaps and not listing.incomplete


async def test_sigterm_flushes_the_buffered_entries(mongo_oplog_uri: str, tmp_path: Path) -> None:
    writer = Writer(mongo_oplog_uri, _database())
    proc = ArchiverProcess(tmp_path, mongo_oplog_uri, "--interval", "3600", "--start", "now")
    proc.wait_line("oplog reader ready")
    writer.write(30)
    writer.stop()
    newest = newest_ts(mongo_oplog_uri)
    proc.wait_read_past(newest)
    assert not sidecars(tmp_path)  # an hour-long interval: nothing written yet
    assert proc.terminate() == 143
    infos = sidecars(tmp_path)
    assert len(infos) == 1 and infos[0].last_ts == newest
    assert chunk_entries(tmp_path) == _server_slice(mongo_oplog_uri, infos[0].first_ts, newest)
    assert sorted(p.name for p in (tmp_path / "oplog").iterdir()) == [
        infos[0].object,
        infos[0].object + ".json",
    ]


async def test_a_rolled_over_oplog_is_recorded_as_a_gap(
    new_oplog_server: object, tmp_path: Path
) -> None:
    uri = new_oplog_server(32 * 1024)  # type: ignore[operator]
    writer = Writer(uri, _database())
    async with _archiving(uri, tmp_path, interval=0.2) as stats:
        await asyncio.to_thread(writer.write, 20)
        await _until_covered(stats, newest_ts(uri))
    saved = sidecars(tmp_path)[-1].last_ts
    await asyncio.to_thread(writer.write, 600)
    # FerretDB trims the capped oplog every second (scripts/testbed.py OPLOG_CLEANUP)
    wait_for(lambda: ts_of(server_entries(uri)[0]) > saved, "the oplog to roll over")
    snapshot = server_entries(uri)  # the writer is idle: later trims only drop its head
    oldest = ts_of(snapshot[0])
    async with _archiving(uri, tmp_path, interval=0.2) as stats:
        await _until_covered(stats, newest_ts(uri))
    writer.stop()

    listing = await list_oplog(str(tmp_path))
    assert len(listing.gaps) == 1 and len(listing.spans) == 2
    gap, resumed = listing.gaps[0], listing.spans[1].first
    assert gap.after == saved  # the restart began at the oldest entry: the first read is
    assert resumed <= gap.before  # the gap's end; a chunk holds its entries in ts order
    assert resumed >= oldest  # (the server may trim again before the restart reads)
    assert "no longer in the oplog" in gap.reason
    assert gap.key == chunks.gap_key(saved, gap.before)
    assert listing.spans[0].last == saved
    after_gap = [c for c in listing.chunks if c.first_ts >= resumed]
    assert after_gap[0].prev_ts is None  # a new span, not a continuation
    archived = [e for e in chunk_entries(tmp_path) if ts_of(e) >= resumed]
    assert archived == sorted((e for e in snapshot if ts_of(e) >= resumed), key=ts_of)

    shown = run_cli("oplog", str(tmp_path), "--list")
    assert shown.returncode == 0, shown.stderr
    assert f"GAP      after ts {saved}, before ts {resumed}" in shown.stdout


async def test_a_server_without_oplog_is_a_usage_error(mongo_uri: str, tmp_path: Path) -> None:
    done = run_cli("oplog", str(tmp_path), "--uri", mongo_uri, "-q")
    assert done.returncode == 2
    assert "keeps no oplog: local.oplog.rs does not exist" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "oplog").exists()


def test_archive_oplog_is_public_api() -> None:
    assert mongosnap.archive_oplog is archive_oplog
    assert mongosnap.list_oplog is list_oplog
