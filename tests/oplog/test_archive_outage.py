"""The archiver rides out an S3 outage during a chunk PUT (retry with backoff,
a bounded buffer), and exits saying so only when the oplog rolls over meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from faultproxy import FaultProxy
from helpers import s3_config
from oplog_support import WAIT, Writer, newest_ts, ns_of, server_entries, ts_of
from test_tail_archive import _archiver_started, _archiving, _until_covered

from mongosnap import StorageError, archive_oplog
from mongosnap.oplog import chunks
from mongosnap.oplog.archiver import ArchiverStats, list_oplog
from mongosnap.storage import S3Config, open_storage

OUTAGE = 4.0  # seconds; the 15 s outage, shortened with the retry schedule
RETRY = {"retry_delay": 0.2, "retry_max_delay": 1.0}
PRIVATE_OPLOG = 8 << 20  # a FerretDB of the test's own: the shared one is large and busy


@pytest.fixture
def proxied(testbed: Any) -> Iterator[tuple[FaultProxy, Any]]:
    endpoint = testbed.s3["moto"]
    target = urlsplit(endpoint.endpoint_url)
    assert target.hostname is not None and target.port is not None
    with FaultProxy((target.hostname, target.port)) as proxy:
        yield proxy, endpoint


def _through(proxy: FaultProxy, endpoint: Any) -> S3Config:
    return s3_config(
        endpoint,
        endpoint_url=f"http://{proxy.address}",
        max_attempts=1,
        connect_timeout=1.0,
        read_timeout=2.0,
    )


async def _archived(url: str, s3: S3Config) -> list[bytes]:
    storage = open_storage(url, s3=s3)
    try:
        out: list[bytes] = []
        for info in (await list_oplog(storage)).chunks:
            data = await storage.read_bytes(info.object_key, limit=chunks.MAX_CHUNK_BYTES)
            out += chunks.split_entries(chunks.decode_chunk(data, info))
        return out
    finally:
        await storage.aclose()


async def test_an_s3_outage_during_a_chunk_put_loses_and_duplicates_nothing(
    proxied: tuple[FaultProxy, Any],
    new_bucket: Any,
    new_oplog_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy, endpoint = proxied
    uri, database = new_oplog_server(PRIVATE_OPLOG), f"outage_{uuid.uuid4().hex[:10]}"
    url, s3 = f"s3://{new_bucket(endpoint)}/oplog-test", _through(proxy, endpoint)
    caplog.set_level(logging.INFO, "mongosnap.oplog")
    warmup, writer = Writer(uri, database, "warmup"), Writer(uri, database)
    options: dict[str, Any] = {"s3": s3, "interval": 0.2, "start": "now", **RETRY}
    async with _archiving(uri, url, **options) as stats:
        await _archiver_started(stats, warmup)
        writer.start()
        proxy.outage(WAIT)  # S3 is down until a chunk PUT is refused, then OUTAGE more
        while not proxy.counters.refused:
            await asyncio.sleep(0.01)
        proxy.outage(OUTAGE)
        await asyncio.sleep(OUTAGE + 1.0)
        writer.stop()
        await _until_covered(stats, newest_ts(uri))
    warmup.stop()

    assert proxy.counters.refused > 0
    failed = [r.message for r in caplog.records if "retrying in" in r.message]
    assert failed and "cannot reach the S3 endpoint" in failed[0]
    assert any("written again, after" in r.message for r in caplog.records)
    mine = f"{database}.events"
    server = [e for e in server_entries(uri) if ns_of(e) == mine]
    archived = [e for e in await _archived(url, s3) if ns_of(e) == mine]
    stamps = [ts_of(e) for e in archived]
    assert len(stamps) == len(set(stamps)), "an entry was archived twice"
    assert sorted(archived, key=ts_of) == sorted(server, key=ts_of)
    assert len(server) == writer.count >= 100
    listing = await list_oplog(url, s3=s3)
    assert len(listing.spans) == 1 and not listing.gaps and not listing.incomplete


async def test_an_oplog_rolling_over_during_an_outage_ends_the_archiver_saying_so(
    proxied: tuple[FaultProxy, Any], new_bucket: Any, new_oplog_server: Any
) -> None:
    proxy, endpoint = proxied
    uri = new_oplog_server(32 * 1024)
    url, s3 = f"s3://{new_bucket(endpoint)}/oplog-test", _through(proxy, endpoint)
    writer = Writer(uri, f"rollover_{uuid.uuid4().hex[:10]}")
    await asyncio.to_thread(writer.write, 5)
    stats = ArchiverStats()
    task = asyncio.create_task(
        archive_oplog(
            uri, url, s3=s3, interval=0.2, max_bytes=2048, max_buffer=4096, stats=stats, **RETRY
        )
    )
    try:
        await _until_covered(stats, newest_ts(uri))
        proxy.outage(WAIT)
        started = time.monotonic()
        await asyncio.to_thread(writer.write, 600)  # fills the buffer, then rolls the oplog
        with pytest.raises(StorageError) as failed:
            await asyncio.wait_for(task, WAIT)
    finally:
        writer.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, StorageError):
            await task
    message = str(failed.value)
    assert f"the oplog of {uri.split('//')[1].rstrip('/')} rolled over" in message
    assert "entries after" in message and "are lost" in message
    assert time.monotonic() - started < WAIT
