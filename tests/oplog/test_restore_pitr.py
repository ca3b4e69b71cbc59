"""``restore`` replays the oplog: the archive's own member (to its consistent
point) and, with ``--to-ts``/``--to-time``, the chunks under ``oplog/`` up to
a chosen instant. Checked byte for byte on the oplog FerretDB."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
import pytest
from helpers import run_cli, server_documents, split_bson
from oplog_support import (
    WAIT,
    ArchiverProcess,
    Writer,
    newest_ts,
    server_entries,
    sidecars,
    ts_of,
    wait_for,
)
from pymongo import MongoClient
from test_backup_oplog import KeyedWriter, expected_state, op_number, seeded_document

import mongosnap
from mongosnap import CorruptArchive
from mongosnap.archive.manifest import Manifest
from mongosnap.catalog import resolve
from mongosnap.oplog.chunks import GapInfo, gap_key
from mongosnap.oplog.position import Ts
from mongosnap.pipelines import pitr
from mongosnap.pipelines.engine import Engine
from mongosnap.storage import open_storage

COLLECTIONS = ("live", "other")


@dataclass(frozen=True)
class LiveBackup:
    """A backup --oplog taken while both collections were written to."""

    dest: Path
    database: str
    key: str
    last: Ts
    member: list[bytes]
    dumped: dict[str, list[bytes]]


def _seed(uri: str, database: str) -> None:
    with MongoClient(uri) as client:
        for name in COLLECTIONS:
            client[database][name].insert_many([seeded_document(i) for i in range(400)])


def _writers(uri: str, database: str) -> list[KeyedWriter]:
    writers = []
    for name in COLLECTIONS:
        writer = KeyedWriter(uri, database)
        writer.coll = writer.client[database][name]
        writers.append(writer)
    return writers


def _stop(writers: list[KeyedWriter]) -> None:
    for writer in writers:
        writer.stop.set()
        writer.thread.join(WAIT)
        writer.client.close()


def _extract(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


@pytest.fixture(scope="module")
def live_backup(mongo_oplog_uri: str, tmp_path_factory: pytest.TempPathFactory) -> LiveBackup:
    dest = tmp_path_factory.mktemp("live")
    database = f"pitr_{uuid.uuid4().hex[:10]}"
    _seed(mongo_oplog_uri, database)
    writers = _writers(mongo_oplog_uri, database)
    for writer in writers:
        writer.thread.start()
    wait_for(lambda: all(w.done > 30 for w in writers), "the writers to start")
    try:
        backup = mongosnap.backup(
            mongo_oplog_uri, str(dest), database=database, oplog=True, batch_size=20
        )
        result = asyncio.run(backup)
    finally:
        _stop(writers)
    manifest = Manifest.from_json((dest / result.manifest_key).read_bytes())
    assert manifest.oplog is not None
    members = _extract(dest / result.archive_key)
    dumped = {n: split_bson(members[f"dump/{database}/{n}.bson"]) for n in COLLECTIONS}
    member = split_bson(members["dump/oplog.bson"])
    last = Ts(*manifest.oplog.last_ts)
    return LiveBackup(dest, database, result.archive_key, last, member, dumped)


def _by_id(docs: list[bytes]) -> list[bytes]:
    return sorted(docs, key=lambda d: bson.decode(d)["_id"])


def _at_consistent_point(backup: LiveBackup, name: str) -> list[bytes]:
    """The collection's state at the archive's consistent point, from the writer's record."""
    mine = [bson.decode(e) for e in backup.member]
    ops = [op_number(e) for e in mine if e["ns"] == f"{backup.database}.{name}"]
    assert ops, f"no write to {name} overlapped the dump"
    return expected_state(max(ops) + 1)


@pytest.fixture
def target_database(mongo_uri: str) -> Iterator[str]:
    name = f"restored_{uuid.uuid4().hex[:10]}"
    yield name
    with MongoClient(mongo_uri) as client:
        client.drop_database(name)


def _restore(backup: LiveBackup, uri: str, target: str, *extra: str) -> dict[str, Any]:
    done = run_cli(
        *("restore", backup.key, str(backup.dest), uri, backup.database),
        *("--to-database", target, "--json", *extra),
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_restore_replays_the_archives_oplog_to_its_consistent_point(
    live_backup: LiveBackup, mongo_uri: str, target_database: str
) -> None:
    result = _restore(live_backup, mongo_uri, target_database)
    changed = []
    for name in COLLECTIONS:
        restored = _by_id(server_documents(mongo_uri, target_database, name))
        assert restored == _at_consistent_point(live_backup, name), name
        changed.append(restored != _by_id(live_backup.dumped[name]))
    # "live" is read first, so the writes made while "other" was read change it;
    # "other" may have been read after its last write of the window
    assert changed[0], "the replay changed nothing"
    assert result["restored_to"] == str(live_backup.last)
    assert result["replay"]["entries"] == len(live_backup.member)
    assert result["oplog_replayed"] == sum(result["replay"]["applied"].values()) > 0
    assert result["replay"]["namespaces"] == [f"{target_database}.{n}" for n in COLLECTIONS]


def test_restore_replays_only_the_restored_namespaces(
    live_backup: LiveBackup, mongo_uri: str, target_database: str
) -> None:
    result = _restore(live_backup, mongo_uri, target_database, "--collection", "live")
    restored = _by_id(server_documents(mongo_uri, target_database, "live"))
    assert restored == _at_consistent_point(live_backup, "live")
    with MongoClient(mongo_uri) as client:
        assert client[target_database].list_collection_names() == ["live"]
    assert result["replay"]["namespaces"] == [f"{target_database}.live"]
    assert result["replay"]["skipped"]["unselected"] > 0


def test_restore_with_no_oplog_replay_restores_the_dump_as_it_is(
    live_backup: LiveBackup, mongo_uri: str, target_database: str
) -> None:
    result = _restore(live_backup, mongo_uri, target_database, "--no-oplog-replay")
    for name in COLLECTIONS:
        restored = _by_id(server_documents(mongo_uri, target_database, name))
        assert restored == _by_id(live_backup.dumped[name]), name
    assert result["oplog_replayed"] == 0
    assert result["restored_to"] is None and result["replay"] is None


# -- restore to a point in time: archive, its member, then the chunks under oplog/


@dataclass(frozen=True)
class Timeline:
    """An archive taken under a steady write load, a plain backup after it, and
    the chunks `mongosnap oplog` wrote all along."""

    dest: Path
    database: str
    key: str
    start: Ts
    after: list[bytes]
    """The writer's entries after the plain backup, from the server's oplog."""


@pytest.fixture(scope="module")
def timeline(mongo_oplog_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Timeline:
    uri = mongo_oplog_uri
    dest = tmp_path_factory.mktemp("pitr")
    database = f"pitr_{uuid.uuid4().hex[:10]}"
    with MongoClient(uri) as client:
        client[database]["live"].insert_many([seeded_document(i) for i in range(400)])
    # One sequential writer commits in ts order: no settle time, so the chunks
    # follow the 0.5 s interval and several lie between the archive and the end.
    archiver = ArchiverProcess(dest, uri, "--interval", "0.5", "--start", "now", "--settle", "0")
    writer = KeyedWriter(uri, database)
    try:
        writer.thread.start()
        wait_for(lambda: writer.done > 30, "the writer to start")
        archiver.wait_read_past(newest_ts(uri))
        archived = asyncio.run(mongosnap.backup(uri, str(dest), database=database, oplog=True))
        marks = [writer.done]
        wait_for(lambda: writer.done > marks[0] + 200, "writes after the archive")
        asyncio.run(mongosnap.backup(uri, str(dest), database=database))  # no oplog window
        marks.append(writer.done)
        wait_for(lambda: writer.done > marks[1] + 300, "writes after the plain backup")
    finally:
        _stop([writer])
        archiver.wait_read_past(newest_ts(uri))
        assert archiver.terminate() == 143
    assert archived.oplog is not None
    manifest = Manifest.from_json((dest / archived.manifest_key).read_bytes())
    assert manifest.oplog is not None
    start = Ts(*manifest.oplog.last_ts)
    mine = [e for e in server_entries(uri) if _writer_op(bson.decode(e), database)]
    after = [e for e in mine if op_number(bson.decode(e)) >= marks[1]]
    assert after and ts_of(after[0]) > start
    return Timeline(dest, database, archived.archive_key, start, after)


def _writer_op(entry: dict[str, Any], database: str) -> bool:
    """An entry of the writer (not of the seed) on the database's collection."""
    seed = entry["op"] == "i" and "k" not in entry["o"]
    return entry["ns"] == f"{database}.live" and not seed


def _restore_to(timeline: Timeline, uri: str, target: str, *when: str) -> Any:
    return run_cli(
        *("restore", "latest", str(timeline.dest), uri, timeline.database),
        *("--to-database", target, "--json", *when),
    )


def test_restore_to_ts_lands_on_that_entry(
    timeline: Timeline, mongo_uri: str, target_database: str
) -> None:
    middle = timeline.after[len(timeline.after) // 2]
    target = ts_of(middle)
    done = _restore_to(timeline, mongo_uri, target_database, "--to-ts", str(target))
    assert done.returncode == 0, done.stderr
    assert "1 archive(s) without an oplog window skipped" in done.stderr
    result = json.loads(done.stdout)
    assert result["archive_key"] == timeline.key
    assert result["restored_to"] == str(target)
    restored = _by_id(server_documents(mongo_uri, target_database, "live"))
    assert restored == expected_state(op_number(bson.decode(middle)) + 1)


def test_restore_to_time_includes_every_entry_of_that_second(
    timeline: Timeline, mongo_uri: str, target_database: str
) -> None:
    second = ts_of(timeline.after[len(timeline.after) // 2]).t
    ops = max(op_number(bson.decode(e)) for e in timeline.after if ts_of(e).t <= second)
    when = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    done = _restore_to(timeline, mongo_uri, target_database, "--to-time", when)
    assert done.returncode == 0, done.stderr
    restored = _by_id(server_documents(mongo_uri, target_database, "live"))
    assert restored == expected_state(ops + 1)


def _refused(timeline: Timeline, uri: str, target_database: str, *when: str) -> str:
    done = _restore_to(timeline, uri, target_database, *when)
    assert done.returncode == 51, done.stderr
    with MongoClient(uri) as client:
        assert client[target_database].list_collection_names() == []
    return done.stderr


def test_restore_refuses_a_target_past_the_archived_oplog(
    timeline: Timeline, mongo_uri: str, target_database: str
) -> None:
    late = f"{ts_of(timeline.after[-1]).t + 3600}:0"
    assert "no oplog chunk reaches the target" in _refused(
        timeline, mongo_uri, target_database, "--to-ts", late
    )


def test_restore_refuses_a_target_before_every_consistent_point(
    timeline: Timeline, mongo_uri: str, target_database: str
) -> None:
    early = f"{timeline.start.t - 1}:0"
    stderr = _refused(timeline, mongo_uri, target_database, "--to-ts", early)
    assert "no complete archive" in stderr and "without an oplog window" in stderr


def _copy(timeline: Timeline, into: Path) -> Timeline:
    shutil.copytree(timeline.dest, into)
    return Timeline(into, timeline.database, timeline.key, timeline.start, timeline.after)


def test_restore_refuses_across_a_recorded_gap(
    timeline: Timeline, mongo_uri: str, target_database: str, tmp_path: Path
) -> None:
    copy = _copy(timeline, tmp_path / "copy")
    target = ts_of(timeline.after[len(timeline.after) // 2])
    gap = GapInfo(timeline.start, target, datetime.now(UTC), "oplog rolled over")
    (copy.dest / gap_key(gap.after, gap.before)).write_bytes(gap.to_json())
    stderr = _refused(copy, mongo_uri, target_database, "--to-ts", str(target))
    assert "gap" in stderr and "oplog rolled over" in stderr


async def test_heal_replays_only_up_to_a_gap_recorded_inside_a_span(
    timeline: Timeline, tmp_path: Path
) -> None:
    """Chunks may continue each other across a gap the archiver recorded (entries
    it could not read): heal's replay plan stops at the gap, or never starts
    when the gap covers the archive's consistent point."""
    copy = _copy(timeline, tmp_path / "copy")
    storage = open_storage(str(copy.dest))
    info = await resolve(storage, timeline.key)
    whole = await pitr.since(storage, info)
    assert whole is not None and whole.target > timeline.start

    middle = ts_of(timeline.after[len(timeline.after) // 2])
    inside = GapInfo(middle, whole.target, datetime.now(UTC), "oplog rolled over")
    (copy.dest / gap_key(inside.after, inside.before)).write_bytes(inside.to_json())
    stopped = await pitr.since(storage, info)
    assert stopped is not None and stopped.target == middle
    assert all(c.first_ts <= middle for c in stopped.chunks)
    assert len(stopped.chunks) < len(whole.chunks)

    at_start = GapInfo(Ts(timeline.start.t - 1, 0), middle, datetime.now(UTC), "oplog rolled over")
    (copy.dest / gap_key(at_start.after, at_start.before)).write_bytes(at_start.to_json())
    assert await pitr.since(storage, info) is None


def test_restore_refuses_across_a_missing_chunk(
    timeline: Timeline, mongo_uri: str, target_database: str, tmp_path: Path
) -> None:
    copy = _copy(timeline, tmp_path / "copy")
    target = ts_of(timeline.after[-1])
    between = [c for c in sidecars(copy.dest) if timeline.start < c.first_ts <= target]
    assert len(between) > 1, "the archiver wrote too few chunks"
    # Never the last: a chunk must follow the lost one, or nothing reaches the target
    # (another refusal); before it lies at least the chunk holding the consistent point.
    lost = between[(len(between) - 1) // 2]
    (copy.dest / lost.object_key).unlink()
    (copy.dest / lost.key).unlink()
    stderr = _refused(copy, mongo_uri, target_database, "--to-ts", str(target))
    assert "unrecorded" in stderr


# -- heal to the instant before loss


async def test_heal_returns_every_write_made_after_the_last_archive(
    mongo_oplog_uri: str, tmp_path: Path
) -> None:
    uri, database = mongo_oplog_uri, f"heal_{uuid.uuid4().hex[:10]}"
    archiver = ArchiverProcess(tmp_path, uri, "--interval", "0.3", "--start", "now")
    writer = Writer(uri, database)
    try:
        writer.start()
        await asyncio.to_thread(archiver.wait_read_past, newest_ts(uri))
        archived = await mongosnap.backup(uri, str(tmp_path), database=database, oplog=True)
        mark = writer.count
        await asyncio.to_thread(wait_for, lambda: writer.count > mark + 150, "later writes")
    finally:
        writer.stop()
        archiver.wait_read_past(newest_ts(uri))
        assert archiver.terminate() == 143
    before = _by_id(server_documents(uri, database, "events"))
    dumped = _by_id(
        split_bson(_extract(tmp_path / archived.archive_key)[f"dump/{database}/events.bson"])
    )
    assert before != dumped
    with MongoClient(uri) as client:
        client[database].drop_collection("events")

    report = await mongosnap.heal(uri, str(tmp_path), database=database, collections=["events"])

    assert report.ok, report.to_dict()
    assert _by_id(server_documents(uri, database, "events")) == before
    [replayed] = report.replays
    assert replayed.archive == archived.archive_key and replayed.collections == ["events"]
    assert replayed.entries >= 150
    assert replayed.restored_to == {"events": replayed.covered_to}  # FerretDB logs no drop
    assert report.to_dict()["replays"][0]["entries"] == replayed.entries
    with MongoClient(uri) as client:
        client.drop_database(database)


async def test_heal_without_chunks_restores_the_archive_as_before(
    mongo_oplog_uri: str, tmp_path: Path
) -> None:
    uri, database = mongo_oplog_uri, f"heal_{uuid.uuid4().hex[:10]}"
    writer = Writer(uri, database)
    try:
        await asyncio.to_thread(writer.write, 60)
        archived = await mongosnap.backup(uri, str(tmp_path), database=database, oplog=True)
        await asyncio.to_thread(writer.write, 40)
    finally:
        writer.stop()
    dumped = _extract(tmp_path / archived.archive_key)[f"dump/{database}/events.bson"]
    with MongoClient(uri) as client:
        client[database].drop_collection("events")
    report = await mongosnap.heal(uri, str(tmp_path), database=database, collections=["events"])
    assert report.ok and report.replays == []
    assert _by_id(server_documents(uri, database, "events")) == _by_id(split_bson(dumped))
    with MongoClient(uri) as client:
        client.drop_database(database)


async def test_heal_text_says_to_when_the_oplog_was_replayed(
    mongo_oplog_uri: str, tmp_path: Path
) -> None:
    """The text summary names the instant and the entry count that --json gives."""
    uri, database = mongo_oplog_uri, f"heal_{uuid.uuid4().hex[:10]}"
    archiver = ArchiverProcess(tmp_path, uri, "--interval", "0.3", "--start", "now")
    writer = Writer(uri, database)
    try:
        writer.start()
        await asyncio.to_thread(archiver.wait_read_past, newest_ts(uri))
        archived = await mongosnap.backup(uri, str(tmp_path), database=database, oplog=True)
        mark = writer.count
        await asyncio.to_thread(wait_for, lambda: writer.count > mark + 50, "later writes")
    finally:
        writer.stop()
        archiver.wait_read_past(newest_ts(uri))
        assert archiver.terminate() == 143
    before = _by_id(server_documents(uri, database, "events"))
    heal = ("heal", str(tmp_path), "--uri", uri, database, "events")
    try:
        with MongoClient(uri) as client:
            client[database].drop_collection("events")
        healed = await asyncio.to_thread(run_cli, *heal)
        assert healed.returncode == 0, healed.stderr
        assert _by_id(server_documents(uri, database, "events")) == before
        lines = healed.stdout.splitlines()
        assert lines[1].startswith(f"  events: restored from {archived.archive_key} ("), lines
        said = re.fullmatch(
            r"    oplog replayed to (\S+Z) \(ts (\d+):(\d+)\): ([\d,]+) entries", lines[2]
        )
        assert said is not None and len(lines) == 3, lines
        when, seconds, inc, entries = said.groups()
        assert when == f"{datetime.fromtimestamp(int(seconds), UTC):%Y-%m-%dT%H:%M:%SZ}"

        with MongoClient(uri) as client:  # again, for --json: the same archive and chunks
            client[database].drop_collection("events")
        again = await asyncio.to_thread(run_cli, *heal, "--json")
        assert again.returncode == 0, again.stderr
        [replay] = json.loads(again.stdout)["replays"]
        assert (
            replay["restored_to"]
            == {"events": f"{seconds}:{inc}"}
            == {"events": replay["covered_to"]}
        )
        assert replay["entries"] == int(entries.replace(",", "")) > 50
    finally:
        with MongoClient(uri) as client:
            client.drop_database(database)


# -- the oplog member is checked against the manifest; bad targets are usage errors


async def test_oplog_member_that_differs_from_its_window_is_refused(
    live_backup: LiveBackup, mongo_uri: str
) -> None:
    """The member's SHA-256 and count are checked against the manifest's window."""
    storage = open_storage(str(live_backup.dest))
    try:
        info = await resolve(storage, live_backup.key)
        assert info.manifest is not None and info.manifest.oplog is not None
        read = [e async for e in Engine(storage, info, None, "x").oplog_entries()]  # type: ignore[arg-type]
        assert read == live_backup.member
        for window in (
            replace(info.manifest.oplog, sha256="0" * 64),
            replace(info.manifest.oplog, entries=info.manifest.oplog.entries + 1),
        ):
            forged = replace(info, manifest=replace(info.manifest, oplog=window))
            engine = Engine(storage, forged, None, "x")  # type: ignore[arg-type]
            with pytest.raises(CorruptArchive, match=r"dump/oplog\.bson"):
                _ = [e async for e in engine.oplog_entries()]
    finally:
        await storage.aclose()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--to-time", "2026-12-01T10:00:00"), "time zone"),
        (("--to-time", "yesterday"), "not an ISO 8601 time"),
        (("--to-ts", "12"), "SECONDS:INC"),
        (("--to-ts", "12:0", "--no-oplog-replay"), "replays the oplog"),
    ],
)
def test_bad_point_in_time_flags_are_usage_errors(
    tmp_path: Path, flags: tuple[str, ...], message: str
) -> None:
    done = run_cli("restore", "latest", str(tmp_path), "127.0.0.1:9", "db", *flags)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
