"""prune also removes the oplog chunks that no kept archive needs, and only those."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

from helpers import run_cli
from oplog_support import Writer, newest_ts, sidecars
from test_tail_archive import _archiver_started, _archiving, _until_covered

import mongosnap
from mongosnap.archive.manifest import Manifest
from mongosnap.oplog.chunks import ChunkInfo, Coverage, GapInfo, gap_key
from mongosnap.oplog.position import Ts
from mongosnap.oplog.retention import unneeded


def _chunk(first: tuple[int, int], last: tuple[int, int]) -> ChunkInfo:
    return ChunkInfo(
        object=f"{Ts(*first).key()}_{Ts(*last).key()}.bson.gz",
        codec="gzip",
        first_ts=Ts(*first),
        last_ts=Ts(*last),
        prev_ts=None,
        count=1,
        bson_bytes=10,
        sha256="0" * 64,
        object_bytes=7,
        source="test",
        created=datetime.now(UTC),
    )


def test_the_chunk_holding_the_point_and_all_after_it_stay() -> None:
    chunks = [_chunk((10, 0), (19, 0)), _chunk((20, 0), (29, 0)), _chunk((30, 0), (39, 0))]
    old_gap = GapInfo(
        Ts(5, 0), Ts(9, 0), datetime.now(UTC), "rolled over", gap_key(Ts(5, 0), Ts(9, 0))
    )
    unrecorded = GapInfo(Ts(1, 0), Ts(2, 0), datetime.now(UTC), "unrecorded")
    coverage = Coverage(chunks, [], [unrecorded, old_gap], [])

    inside = unneeded(coverage, Ts(25, 3))
    assert inside.chunks == chunks[:1] and inside.kept_from == Ts(20, 0)
    assert inside.gaps == [old_gap]  # a recorded object; the unrecorded break is no object

    between = unneeded(coverage, Ts(29, 5))  # after chunk 2's end: chunk 2 still anchors it
    assert between.chunks == chunks[:1]
    assert unneeded(coverage, Ts(9, 0)).chunks == []  # before every chunk: nothing goes
    assert unneeded(coverage, Ts(45, 0)).chunks == chunks[:2]  # the newest always stays


async def test_prune_drops_the_chunks_no_kept_archive_needs(
    mongo_oplog_uri: str, tmp_path: Path
) -> None:
    database = f"prune_oplog_{uuid.uuid4().hex[:10]}"
    writer = Writer(mongo_oplog_uri, database)
    async with _archiving(mongo_oplog_uri, tmp_path, interval=0.2, start="now") as stats:
        await _archiver_started(stats, writer)
        await asyncio.to_thread(writer.write, 40)
        await _until_covered(stats, newest_ts(mongo_oplog_uri))
        await mongosnap.backup(mongo_oplog_uri, str(tmp_path), database=database, oplog=True)
        await asyncio.to_thread(writer.write, 40)
        await _until_covered(stats, newest_ts(mongo_oplog_uri))
        second = await mongosnap.backup(
            mongo_oplog_uri, str(tmp_path), database=database, oplog=True
        )
        await asyncio.to_thread(writer.write, 40)
        await _until_covered(stats, newest_ts(mongo_oplog_uri))
    writer.stop()
    window = Manifest.from_json((tmp_path / second.manifest_key).read_bytes()).oplog
    assert window is not None
    point = Ts(*window.last_ts)
    before = sidecars(tmp_path)
    anchor = [c for c in before if c.first_ts <= point][-1]
    doomed = [c for c in before if c.last_ts < anchor.first_ts]
    assert doomed, "the first backup's chunks should precede the second's consistent point"

    dry = await mongosnap.prune(str(tmp_path), keep_last=1, dry_run=True)
    assert [c.object_key for c in dry.oplog.chunks] == [c.object_key for c in doomed]
    assert sidecars(tmp_path) == before

    report = await mongosnap.prune(str(tmp_path), keep_last=1)

    assert [a.key for a in report.kept] == [second.archive_key]
    assert [c.object_key for c in report.oplog.chunks] == [c.object_key for c in doomed]
    assert sidecars(tmp_path) == [c for c in before if c not in doomed]
    assert not any((tmp_path / c.object_key).exists() for c in doomed)
    coverage = await mongosnap.list_oplog(str(tmp_path))
    assert len(coverage.spans) == 1 and not coverage.gaps and not coverage.incomplete
    assert coverage.spans[0].first <= point  # the kept archive can still replay from there
    listed = run_cli("list", str(tmp_path))
    assert listed.returncode == 0, listed.stderr
    assert second.archive_key in listed.stdout
    assert f"ts {coverage.spans[0].first} .. {coverage.spans[0].last}" in listed.stdout
