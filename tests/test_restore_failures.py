"""Restore and heal when a collection cannot be restored: the others go on, nothing is left.

Also the bounds an archive cannot talk us past (documents and bytes against
the manifest while streaming, documents per compressed byte without one) and
archives listed as incomplete.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import bson
import pytest
from helpers import run_cli, sample_document, server_documents
from pymongo import MongoClient

import mongosnap
from mongosnap import backup, heal, restore
from mongosnap import source as source_module
from mongosnap.archive.manifest import Manifest, manifest_key
from mongosnap.pipelines import engine
from mongosnap.pipelines.staging import TEMP_PREFIX
from mongosnap.source import Source

NAMES = [f"c{n:02d}" for n in range(12)]


def _fill(uri: str, database: str, names: list[str], count: int = 60) -> None:
    with MongoClient(uri) as client:
        for name in names:
            client[database][name].insert_many([sample_document(i) for i in range(count)])


def _names(uri: str, database: str) -> set[str]:
    with MongoClient(uri) as client:
        return set(client[database].list_collection_names())


def _staging(uri: str, database: str) -> list[str]:
    return [c for c in _names(uri, database) if c.startswith(TEMP_PREFIX)]


def _drop(uri: str, database: str, *names: str) -> None:
    with MongoClient(uri) as client:
        for name in names:
            client[database].drop_collection(name)


def _host(uri: str) -> str:
    return uri.split("://", 1)[1].rstrip("/")


def _corrupt_range(root: Path, key: str, name: str) -> None:
    """Flip one byte in the middle of ``name``'s .bson range (its gzip CRC fails)."""
    manifest = Manifest.from_json((root / manifest_key(key)).read_bytes())
    entry = next(e for e in manifest.collections if e.name == name)
    assert entry.bson is not None
    data = bytearray((root / key).read_bytes())
    data[(entry.bson.offset + entry.bson.end) // 2] ^= 0xFF
    (root / key).write_bytes(bytes(data))


def legacy_archive(path: Path, database: str, collections: dict[str, bytes]) -> Path:
    """A ``tar -czf dump`` archive as the legacy scripts wrote it."""
    with tarfile.open(path, "w:gz") as tar:
        for name, documents in collections.items():
            for member, data in (
                (f"dump/{database}/{name}.bson", documents),
                (f"dump/{database}/{name}.metadata.json", b'{"options": {}, "indexes": []}'),
            ):
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


# -- one collection's failure does not sink the others


async def test_restore_goes_on_after_a_collection_fails(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    _fill(mongo_uri, new_database, NAMES)
    before = {n: sorted(server_documents(mongo_uri, new_database, n)) for n in NAMES}
    result = await backup(mongo_uri, tmp_path, database=new_database)
    _corrupt_range(tmp_path, result.archive_key, "c01")
    _drop(mongo_uri, new_database, *NAMES)

    restored = await restore(mongo_uri, tmp_path, database=new_database)

    statuses = {c.name: c.status for c in restored.collections}
    assert statuses == {n: ("failed" if n == "c01" else "restored") for n in NAMES}
    assert "gzip" in restored.failed[0].error
    for name in NAMES:
        if name != "c01":
            assert sorted(server_documents(mongo_uri, new_database, name)) == before[name]
    assert "c01" not in _names(mongo_uri, new_database)
    assert _staging(mongo_uri, new_database) == []

    # The command says "partial" with its own exit code and names the cause.
    _drop(mongo_uri, new_database, *NAMES)
    done = run_cli("restore", "latest", str(tmp_path), _host(mongo_uri), new_database)
    assert done.returncode == mongosnap.PartialFailure.exit_code == 42, done.stderr
    assert "c01" in done.stderr and "gzip" in done.stderr and "Traceback" not in done.stderr
    assert "restored 11 collections, 1 failed" in done.stdout


async def test_a_document_the_server_refuses_fails_one_collection_only(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    """FerretDB refuses NaN; that collection fails, the other eleven are healed."""
    good = {n: b"".join(bson.encode({"n": i, "c": n}) for i in range(50)) for n in NAMES}
    good["c03"] += bson.encode({"n": 99, "bad": float("nan")})
    store = tmp_path / "store"
    store.mkdir()
    legacy_archive(store / "2020-01-01-00-00-00-mongodb-dump.tar.gz", new_database, good)

    done = run_cli("heal", str(store), _host(mongo_uri), new_database, *NAMES, "--json")

    assert done.returncode == 42 == mongosnap.PartialFailure.exit_code, done.stderr
    report_line, error_line = done.stdout.splitlines()
    report = json.loads(report_line)
    assert json.loads(error_line)["error"]["type"] == "PartialFailure"
    assert sorted(o["name"] for o in report["restored"]) == [n for n in NAMES if n != "c03"]
    assert report["failed"] == ["c03"] and report["missing"] == ["c03"]
    assert "c03" in done.stderr and "Traceback" not in done.stderr
    for name in NAMES:
        if name != "c03":
            assert (
                b"".join(server_documents(mongo_uri, new_database, name)).count(b"\x10n\x00") == 50
            )
    assert _staging(mongo_uri, new_database) == []


async def test_heal_takes_a_failed_collection_from_the_next_archive(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    _fill(mongo_uri, new_database, NAMES)
    before = {n: sorted(server_documents(mongo_uri, new_database, n)) for n in NAMES}
    older = await backup(mongo_uri, tmp_path, database=new_database)
    newer = await backup(mongo_uri, tmp_path, database=new_database)
    _corrupt_range(tmp_path, newer.archive_key, "c05")
    _drop(mongo_uri, new_database, *NAMES)

    report = await heal(mongo_uri, tmp_path, database=new_database, collections=NAMES)

    assert report.ok, report
    archives = {o.name: o.archive for o in report.restored}
    assert archives == {n: older.archive_key if n == "c05" else newer.archive_key for n in NAMES}
    assert [(f.name, f.archive) for f in report.failures] == [("c05", newer.archive_key)]
    for name in NAMES:
        assert sorted(server_documents(mongo_uri, new_database, name)) == before[name]


# -- bounds: an archive cannot make us insert more than it promised


class _Counting:
    """Counts the documents sent to the real server, per collection."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent = 0
        real = Source.insert_raw

        async def insert_raw(source: Source, database: str, name: str, docs: list[bytes]) -> int:
            self.sent += len(docs)
            return await real(source, database, name, docs)

        monkeypatch.setattr(Source, "insert_raw", insert_raw)


async def test_more_documents_than_the_manifest_lists_stops_at_the_first(
    mongo_uri: str, new_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(mongo_uri, new_database, ["many"], count=5000)
    real_scan = source_module.scan_batch
    with monkeypatch.context() as patch:  # a writer that under-counts: the manifest says 0
        patch.setattr(source_module, "scan_batch", lambda batch: (0, real_scan(batch)[1]))
        await backup(mongo_uri, tmp_path, database=new_database)
    _drop(mongo_uri, new_database, "many")
    counting = _Counting(monkeypatch)

    report = await heal(mongo_uri, tmp_path, database=new_database, collections=["many"])

    assert counting.sent == 0
    assert report.failed == ["many"]
    assert "more than the 0 documents" in report.failures[0].error
    assert _names(mongo_uri, new_database) == set()


async def test_a_legacy_expansion_bomb_is_bounded(
    mongo_uri: str, new_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """48 MB of empty documents gzip to ~50 kB: stopped after a few thousand."""
    documents = 10_000_000
    bomb = bytes.fromhex("0500000000") * documents
    store = tmp_path / "store"
    store.mkdir()
    archive = legacy_archive(
        store / "2020-01-01-00-00-00-mongodb-dump.tar.gz", new_database, {"bomb": bomb}
    )
    size = archive.stat().st_size
    assert size < len(bomb) // 500  # it really is a bomb
    counting = _Counting(monkeypatch)

    report = await heal(mongo_uri, store, database=new_database, collections=["bomb"])

    assert report.missing == ["bomb"] and report.skipped[0].key == archive.name
    assert "more than a dump holds" in report.skipped[0].reason
    bound = engine.LEGACY_FREE_DOCUMENTS + engine.LEGACY_DOCUMENTS_PER_BYTE * size
    assert counting.sent <= bound
    assert counting.sent < documents // 100
    assert _names(mongo_uri, new_database) == set()


# -- archives listed as incomplete


async def test_restoring_an_incomplete_archive_needs_allow_incomplete(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    _fill(mongo_uri, new_database, ["apps"])
    before = sorted(server_documents(mongo_uri, new_database, "apps"))
    result = await backup(mongo_uri, tmp_path, database=new_database)
    (tmp_path / manifest_key(result.archive_key)).unlink()  # an interrupted deletion
    _drop(mongo_uri, new_database, "apps")
    host = _host(mongo_uri)

    refused = run_cli("restore", result.archive_key, str(tmp_path), host, new_database)
    assert refused.returncode == mongosnap.ArchiveError.exit_code, refused.stderr
    assert "--allow-incomplete" in refused.stderr and "incomplete" in refused.stderr
    assert "apps" not in _names(mongo_uri, new_database)
    with pytest.raises(mongosnap.ArchiveError, match="incomplete"):
        await restore(mongo_uri, tmp_path, result.archive_key, database=new_database)

    allowed = run_cli(
        "restore", result.archive_key, str(tmp_path), host, new_database, "--allow-incomplete"
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "warning: restoring from incomplete archive" in allowed.stderr
    assert sorted(server_documents(mongo_uri, new_database, "apps")) == before

    warnings: list[str] = []
    _drop(mongo_uri, new_database, "apps")
    await restore(
        mongo_uri,
        tmp_path,
        result.archive_key,
        database=new_database,
        allow_incomplete=True,
        warn=warnings.append,
    )
    assert len(warnings) == 1 and result.archive_key in warnings[0]
