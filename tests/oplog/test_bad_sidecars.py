"""A garbage oplog sidecar, and one of a newer ``format_version``, cost only their
chunk: ``oplog --list``, ``restore --to-time``, prune, heal and the archiver's
resume keep working, the bad chunk reported as a gap or skipped with a warning."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import bson
from helpers import Destination, run_cli, server_documents, subprocess_env
from oplog_support import Writer, newest_ts, ns_of, server_entries, ts_of
from pymongo import MongoClient
from test_tail_archive import _archiver_started, _archiving, _until_covered

import mongosnap
from mongosnap.oplog import chunks
from mongosnap.oplog.archiver import ArchiverStats, list_oplog
from mongosnap.oplog.chunks import ChunkInfo
from mongosnap.oplog.position import Ts

GARBAGE = b'{"format": "mongosnap-oplog-chunk", "format_version": 1, "codec": "gzip"}\n'


def _by_id(docs: list[bytes]) -> list[bytes]:
    return sorted(docs, key=lambda d: int(bson.decode(d)["_id"]))


async def _next_second(ts: Ts) -> None:
    while int(time.time()) <= ts.t:
        await asyncio.sleep(0.05)


async def _entries(destination: Destination, infos: list[ChunkInfo]) -> list[bytes]:
    storage = destination.storage()
    try:
        out: list[bytes] = []
        for info in infos:
            data = await storage.read_bytes(info.object_key, limit=chunks.MAX_CHUNK_BYTES)
            out += chunks.split_entries(chunks.decode_chunk(data, info))
        return out
    finally:
        await storage.aclose()


async def _phase(stats: ArchiverStats, writer: Writer, uri: str, n: int = 15) -> Ts:
    """n writes, then wait until they are archived: the next phase starts a new chunk."""
    await asyncio.to_thread(writer.write, n)
    newest = newest_ts(uri)
    await _until_covered(stats, newest)
    return newest


def _put(destination: Destination, key: str, data: bytes) -> None:
    if destination.root is not None:
        (destination.root / key).write_bytes(data)
    else:
        prefix = destination.url.split("/", 3)[3]
        destination.client().put_object(Bucket=destination.bucket, Key=f"{prefix}/{key}", Body=data)


def _newer(info: ChunkInfo) -> bytes:
    doc = json.loads(info.to_json())
    doc["format_version"] = 2
    doc["compression"] = {"dictionary": "future"}
    return json.dumps(doc).encode()


def _cli(destination: Destination, *args: str) -> Any:
    return run_cli(*args, env=subprocess_env(destination))


async def test_bad_sidecars_cost_only_their_chunk(
    destination: Destination, new_oplog_server: Any, mongo_uri: str
) -> None:
    # A FerretDB of its own: the shared one's oplog is large and busy.
    uri, database = new_oplog_server(8 << 20), f"badside_{uuid.uuid4().hex[:10]}"
    dest = destination.url
    writer = Writer(uri, database)
    # One sequential writer: its entries commit in ts order, no settle time needed.
    options: dict[str, Any] = {"s3": destination.s3, "interval": 0.2, "settle": 0.0}
    async with _archiving(uri, dest, **options, start="now") as stats:
        await _archiver_started(stats, writer)
        await _phase(stats, writer, uri)
        await mongosnap.backup(uri, dest, s3=destination.s3, database=database, oplog=True)
        reached = await _phase(stats, writer, uri)
        state = _by_id(server_documents(uri, database, "events"))
        await _next_second(reached)  # --to-time's second ends before the next phase
        covered = await _phase(stats, writer, uri, 5)
        healed_state = _by_id(server_documents(uri, database, "events"))
        await _phase(stats, writer, uri)
        late = await _phase(stats, writer, uri)
        await _phase(stats, writer, uri)
    listing = await list_oplog(dest, s3=destination.s3)
    assert len(listing.spans) == 1 and not listing.gaps
    garbage = next(c for c in listing.chunks if c.first_ts > covered)
    newer = listing.chunks[-1]
    assert garbage.last_ts < late < newer.first_ts
    _put(destination, garbage.key, GARBAGE)
    _put(destination, newer.key, _newer(newer))

    shown = _cli(destination, "oplog", dest, "--list", "--json")
    assert shown.returncode == 0, shown.stderr
    assert "Traceback" not in shown.stderr and "warning" in shown.stderr
    doc = json.loads(shown.stdout)
    unusable = {u["sidecar"]: u for u in doc["unusable"]}
    assert set(unusable) == {garbage.key, newer.key}
    assert (
        unusable[newer.key]["newer_format"]
        and "format_version 2" in (unusable[newer.key]["reason"])
    )
    assert not unusable[garbage.key]["newer_format"]
    [gap] = doc["gaps"]
    before = listing.chunks[listing.chunks.index(garbage) - 1]
    assert gap["after"] == str(before.last_ts) and "unusable chunk" in gap["reason"]
    assert garbage.key in gap["reason"]
    text = _cli(destination, "oplog", dest, "--list")
    assert text.returncode == 0 and "UNUSABLE chunk" in text.stdout
    assert "skipped (newer format) chunk" in text.stdout

    # restore --to-time before the bad chunk: byte for byte; across it: refused (51)
    when = datetime.fromtimestamp(reached.t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    target = f"pitr_{uuid.uuid4().hex[:10]}"
    restore = ("restore", "latest", dest, mongo_uri, database, "--to-database", target)
    done = _cli(destination, *restore, "--to-time", when)
    assert done.returncode == 0, done.stderr
    assert _by_id(server_documents(mongo_uri, target, "events")) == state
    refused = _cli(destination, *restore[:-1], target + "x", "--to-ts", str(late))
    assert refused.returncode == 51, refused.stderr
    assert "unusable chunk" in refused.stderr and "Traceback" not in refused.stderr
    with MongoClient(mongo_uri) as client:
        client.drop_database(target)
        assert target + "x" not in client.list_database_names()

    # prune: works, keeps what it cannot read
    pruned = _cli(destination, "prune", dest, "--keep-last", "1", "--json")
    assert pruned.returncode == 0, pruned.stderr
    keys = destination.keys()
    assert any(k.endswith(garbage.key) for k in keys) and any(k.endswith(newer.key) for k in keys)

    # the archiver resumes after the last usable chunk and archives the rest again
    resume_from = [c for c in listing.chunks if c.last_ts < newer.first_ts][-1]
    async with _archiving(uri, dest, **options) as stats:
        await _phase(stats, writer, uri, 5)
    writer.stop()
    after = await list_oplog(dest, s3=destination.s3)
    again = [c for c in after.chunks if c.first_ts > resume_from.last_ts]
    assert again and again[0].prev_ts == resume_from.last_ts
    assert after.spans[-1].last == again[-1].last_ts
    mine = f"{database}.events"
    wanted = [
        e
        for e in server_entries(uri)
        if ns_of(e) == mine and resume_from.last_ts < ts_of(e) <= again[-1].last_ts
    ]
    archived = [e for e in await _entries(destination, again) if ns_of(e) == mine]
    assert len(wanted) >= 5 and archived == wanted

    # heal: restores the dropped collection and replays up to the unusable chunk
    with MongoClient(uri) as client:
        client[database].drop_collection("events")
    healed = _cli(destination, "heal", dest, "--uri", uri, database, "events", "--json")
    assert healed.returncode == 0, healed.stderr
    assert "Traceback" not in healed.stderr
    assert _by_id(server_documents(uri, database, "events")) == healed_state
    with MongoClient(uri) as client:
        client.drop_database(database)
