"""Chunk objects, sidecars, gap objects and coverage, on the in-memory storage."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
import pytest
from helpers import run_cli

from mongosnap import CorruptArchive, MemoryStorage, StorageError
from mongosnap.codecs import get_codec
from mongosnap.oplog import chunks
from mongosnap.oplog.archiver import _Archiver
from mongosnap.oplog.chunks import ChunkInfo, GapInfo
from mongosnap.oplog.position import Ts
from mongosnap.oplog.tail import Batch, entry_ts

GZIP = get_codec("gzip")


def entry(t: int, i: int) -> bytes:
    return bson.encode({"op": "n", "ns": "", "ts": bson.Timestamp(t, i), "o": {"msg": "x"}})


async def store_chunk(
    storage: MemoryStorage, stamps: list[Ts], prev: Ts | None, *, sidecar: bool = True
) -> ChunkInfo:
    raw, packed, digest = chunks.encode_chunk([entry(s.t, s.i) for s in stamps], GZIP)
    first, last = min(stamps), max(stamps)  # as the archiver names them
    key = chunks.chunk_key(first, last, GZIP)
    info = ChunkInfo(
        key.removeprefix("oplog/"),
        "gzip",
        first,
        last,
        prev,
        len(stamps),
        len(raw),
        digest,
        len(packed),
        "h:1",
        datetime.now(UTC),
        chunks.sidecar_key(key),
    )
    await storage.put(key, packed)
    if sidecar:
        await storage.put(info.key, info.to_json())
    return info


def test_chunk_keys_sort_like_timestamps() -> None:
    stamps = [Ts(9, 5), Ts(10, 1), Ts(10, 20), Ts(1_800_000_000, 3)]
    keys = [chunks.chunk_key(s, s, GZIP) for s in stamps]
    assert sorted(keys) == keys
    assert keys[1] == "oplog/0000000010-0000000001_0000000010-0000000001.bson.gz"
    assert chunks.parse_chunk_key(keys[1]) == (Ts(10, 1), Ts(10, 1), "gzip")
    zstd = chunks.chunk_key(Ts(1, 2), Ts(3, 4), get_codec("zstd"))
    assert chunks.parse_chunk_key(zstd) == (Ts(1, 2), Ts(3, 4), "zstd")
    for other in ("oplog/x.bson.gz", keys[1] + ".json", "2026-mongodb-dump.tar.gz"):
        assert chunks.parse_chunk_key(other) is None


async def test_sidecar_round_trips_and_rejects_malformed() -> None:
    storage = MemoryStorage()
    info = await store_chunk(storage, [Ts(5, 1), Ts(5, 2)], Ts(4, 9))
    data = await storage.read_bytes(info.key, limit=1 << 20)
    assert ChunkInfo.from_json(data, info.key) == info
    doc = json.loads(data)
    assert doc["format"] == "mongosnap-oplog-chunk" and doc["bytes"] == info.bson_bytes
    cases: list[dict[str, Any]] = [
        {**doc, "count": 0},
        {**doc, "object": "elsewhere.bson.gz"},
        {**doc, "first_ts": {"t": 9, "i": 9}},
        {**doc, "codec": "lz4"},
        {**doc, "format_version": 2},
        {k: v for k, v in doc.items() if k != "sha256"},
        {**doc, "prev_ts": {"t": "5", "i": 0}},
    ]
    for bad in cases:
        with pytest.raises(CorruptArchive, match="oplog sidecar"):
            ChunkInfo.from_json(json.dumps(bad).encode(), info.key)


async def test_decode_chunk_checks_bytes_and_sha256() -> None:
    storage = MemoryStorage()
    info = await store_chunk(storage, [Ts(5, 1), Ts(5, 2)], None)
    packed = await storage.read_bytes(info.object_key, limit=1 << 20)
    assert chunks.split_entries(chunks.decode_chunk(packed, info)) == [entry(5, 1), entry(5, 2)]
    other = GZIP.compress(entry(5, 1) + entry(5, 3))
    with pytest.raises(CorruptArchive, match="SHA-256"):
        chunks.decode_chunk(other, info)


async def test_coverage_joins_continuing_chunks_and_never_hides_a_break() -> None:
    storage = MemoryStorage()
    await store_chunk(storage, [Ts(10, 1), Ts(10, 2)], None)
    await store_chunk(storage, [Ts(11, 1)], Ts(10, 2))  # continues
    await store_chunk(storage, [Ts(20, 1), Ts(20, 2)], None)  # a break, no gap object
    gap = GapInfo(Ts(20, 2), Ts(30, 1), datetime.now(UTC), "rolled over")
    await storage.put(chunks.gap_key(gap.after, gap.before), gap.to_json())
    await store_chunk(storage, [Ts(30, 1)], None)
    await store_chunk(storage, [Ts(40, 1)], Ts(30, 1), sidecar=False)  # incomplete
    coverage = await chunks.read_coverage(storage)
    assert [(s.first, s.last, s.chunks, s.entries) for s in coverage.spans] == [
        (Ts(10, 1), Ts(11, 1), 2, 3),
        (Ts(20, 1), Ts(20, 2), 1, 2),
        (Ts(30, 1), Ts(30, 1), 1, 1),
    ]
    assert [(g.after, g.before, g.reason) for g in coverage.gaps] == [
        (Ts(11, 1), Ts(20, 1), "unrecorded"),
        (Ts(20, 2), Ts(30, 1), "rolled over"),
    ]
    assert coverage.incomplete == [chunks.chunk_key(Ts(40, 1), Ts(40, 1), GZIP)]
    shown = coverage.to_dict()
    assert shown["gaps"][0] == {"after": "11:1", "before": "20:1", "reason": "unrecorded"}


async def test_resume_point_is_after_the_last_complete_chunk_and_drops_orphans() -> None:
    storage = MemoryStorage()
    first = await store_chunk(storage, [Ts(10, 1), Ts(10, 2)], None)
    last = await store_chunk(storage, [Ts(11, 1), Ts(11, 3), Ts(11, 2)], Ts(10, 2))
    orphan = await store_chunk(storage, [Ts(12, 1)], Ts(11, 3), sidecar=False)
    job = _Archiver(None, storage, GZIP, 60.0, 1 << 20, None)  # type: ignore[arg-type]
    resume = await job.resume_point()
    assert resume is not None and resume.after == last.last_ts == Ts(11, 3)
    assert list(resume.recent) == [Ts(11, 1), Ts(11, 3), Ts(11, 2)]
    assert job.prev == Ts(11, 3)
    kept = [first.object_key, first.key, last.object_key, last.key]
    assert [i.key async for i in storage.list("oplog/")] == kept
    assert orphan.object_key not in [i.key async for i in storage.list("oplog/")]


class _SidecarFails(MemoryStorage):
    async def put(self, key: str, data: bytes) -> Any:
        if key.endswith(".bson.gz.json"):
            raise StorageError("disk full")
        return await super().put(key, data)


async def test_a_failed_sidecar_removes_its_chunk_object() -> None:
    storage = _SidecarFails()

    class _Src:
        hosts = "h:1"

    job = _Archiver(_Src(), storage, GZIP, 60.0, 1 << 20, None)  # type: ignore[arg-type]
    job.add(Batch([entry(5, 1)], [entry_ts(entry(5, 1))]))
    with pytest.raises(StorageError, match="disk full"):
        await job.flush()
    assert [i.key async for i in storage.list("")] == []


HOSTILE = [
    (b"[" * 5000 + b"]" * 5000, "nests deeper than 8 levels"),  # was a RecursionError
    (b'{"reason": "' + b"," * 20_000 + b'"}', "holds more than 10000 values"),
    (b'{"format": "\xff"}', "is not valid UTF-8"),
    (b"[1]", "not a format_version 1 "),
    (b"{", "Expecting property name"),
]


@pytest.mark.parametrize(("data", "problem"), HOSTILE)
def test_hostile_sidecars_and_gap_objects_are_corrupt(data: bytes, problem: str) -> None:
    side = "oplog/0000000005-0000000001_0000000005-0000000002.bson.gz.json"
    with pytest.raises(CorruptArchive, match=f"^oplog sidecar {side}:? {problem}"):
        ChunkInfo.from_json(data, side)
    gap = "oplog/0000000005-0000000001_0000000006-0000000001.gap.json"
    with pytest.raises(CorruptArchive, match=f"^oplog gap object {gap}:? {problem}"):
        GapInfo.from_json(data, gap)


def test_list_counts_a_hostile_gap_object_as_the_gap_its_key_names(tmp_path: Path) -> None:
    """On a directory, through the CLI: a one-line warning and the gap, not a crash."""
    (tmp_path / "oplog").mkdir()
    gap = "oplog/0000000005-0000000001_0000000006-0000000001.gap.json"
    (tmp_path / gap).write_bytes(HOSTILE[0][0])
    done = run_cli("list", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == (
        f"mongosnap: warning: oplog gap object {gap} nests deeper than 8 levels; "
        "counted as a gap after 5:1, before 6:1"
    )
    assert "GAP      after ts 5:1, before ts 6:1: unreadable gap object" in done.stdout
