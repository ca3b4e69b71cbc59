"""Legacy archives holding ``mongodump --gzip`` files and shortened file names.

The fixtures are what the real mongodump writes: one database dumped once
with ``--gzip`` and once without, each ``tar -czf``'d as backup.bash did. Two
of its collections have names whose escaped form passes mongodump's 238 bytes
(FerretDB takes names of up to 235 bytes, but ``é`` escapes to 6 and ``/`` to
3), so their files are named ``<first 208 bytes>%24<hash>`` and only the
metadata's ``collectionName`` holds the real name; the ``é`` one is cut
inside an escape. mongosnap's restore, heal and verify are compared with the
real mongorestore on the same archive (mongorestore runs with
``--noIndexRestore``: FerretDB refuses the ``ns`` index option it sends).
"""

from __future__ import annotations

import asyncio
import gzip
import io
import logging
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import Destination, make_destination, sample_document, server_documents
from pymongo import ASCENDING, MongoClient
from testbed import TestbedError, mongo_tools_dir

import mongosnap
from mongosnap._errors import CorruptArchive, UnsafeArchive
from mongosnap.archive.names import escape_collection_name
from mongosnap.catalog import ArchiveInfo, learn_databases, list_archives
from mongosnap.pipelines.engine import Status
from mongosnap.storage import opened

ACCENTS = "é" * 60  # 120 bytes, 360 escaped: the cut falls inside an escape
SLASHES = "a/b " * 40  # 160 bytes, 240 escaped
PLUSES = "x+y " * 40  # 160 bytes, 240 escaped
SIZES = {"plain": 40, ACCENTS: 3, SLASHES: 5, PLUSES: 2}
THEIR_NAMES = {PLUSES: "x y " * 40}
"""mongorestore unescapes the ``collectionName`` it reads for a shortened name
(its getInfoFromFile), so ``+`` becomes a space: where it goes wrong."""
ARCHIVE = "2020-01-01-00-00-00-mongodb-dump.tar.gz"


@dataclass(frozen=True)
class Dumps:
    """What mongodump wrote for the source database, and what it held."""

    source: str
    gzip: Path
    plain: Path
    documents: dict[str, list[bytes]]


def _tools() -> Path:
    try:
        return mongo_tools_dir()
    except TestbedError as exc:
        pytest.fail(str(exc))


def _host(uri: str) -> str:
    return uri.split("://", 1)[1].rstrip("/")


def _run(*args: str | Path) -> None:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{args[0]} failed: {done.stderr[-2000:]}"


@pytest.fixture(scope="module")
def dumps(
    mongo_uri: str,
    _mongo_admin: MongoClient[dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Dumps]:
    source = f"mongosnap_test_{uuid.uuid4().hex[:12]}"
    db = _mongo_admin[source]
    for name, count in SIZES.items():
        db[name].insert_many([sample_document(i) for i in range(count)])
    db["plain"].create_index([("i", ASCENDING)], name="by_i", unique=True)
    db[ACCENTS].create_index([("s", ASCENDING)], name="by_s")
    work = tmp_path_factory.mktemp("dumps")
    mongodump = (_tools() / "mongodump", "--host", _host(mongo_uri), "--db", source, "--quiet")
    _run(*mongodump, "--gzip", "--out", work / "gzip")
    _run(*mongodump, "--out", work / "plain")
    files = {p.name for p in (work / "gzip" / source).iterdir()}
    assert f"{escape_collection_name(ACCENTS)}.bson.gz" in files
    for name in (ACCENTS, SLASHES, PLUSES):  # mongodump's cut: 208 bytes, %24, a 27-byte hash
        assert len(escape_collection_name(name)) == 238, name
    documents = {n: sorted(server_documents(mongo_uri, source, n)) for n in SIZES}
    yield Dumps(source, work / "gzip", work / "plain", documents)
    _mongo_admin.drop_database(source)


def _legacy(dump: Path, source: str, database: str, work: Path, order: str = "sorted") -> Path:
    """backup.bash's archive of ``database``: the dump directory, ``tar -czf``'d.

    GNU tar orders a folder's files as the file system lists them; the tests
    fix the order: ``sorted`` by name (each data file before its metadata),
    or ``metadata first`` (as mongodump writes them).
    """
    shutil.copytree(dump / source, work / "dump" / database)
    if order == "sorted":
        _run("tar", "--sort=name", "-czf", work / ARCHIVE, "-C", work, "dump")
    else:
        files = sorted(p.name for p in (work / "dump" / database).iterdir())
        files.sort(key=lambda name: ".metadata.json" not in name)
        _run("tar", "-czf", work / ARCHIVE, "-C", work, *(f"dump/{database}/{f}" for f in files))
    with tarfile.open(work / ARCHIVE) as tar:
        names = [m.name for m in tar if m.isfile()]
    stem = escape_collection_name(ACCENTS)
    data, metadata = (next(i for i, n in enumerate(names) if stem + s in n) for s in (".b", ".m"))
    assert (data < metadata) == (order == "sorted"), names
    return work / ARCHIVE


def _put(destination: Destination, archive: Path) -> None:
    if destination.root is not None:
        destination.root.mkdir(parents=True, exist_ok=True)
        shutil.copy(archive, destination.root / archive.name)
        return
    prefix = destination.url.split("/", 3)[3]
    destination.client().put_object(
        Bucket=destination.bucket, Key=f"{prefix}/{archive.name}", Body=archive.read_bytes()
    )


def _mongorestore(uri: str, archive: Path, database: str, target: str, work: Path) -> None:
    """The real mongorestore of the extracted archive's ``database`` into ``target``."""
    work.mkdir()
    _run("tar", "-xzf", archive, "-C", work)
    gzipped = ("--gzip",) if any(work.rglob("*.gz")) else ()
    _run(
        *(_tools() / "mongorestore", "--host", _host(uri), "--dir", work / "dump", *gzipped),
        *("--nsFrom", f"{database}.*", "--nsTo", f"{target}.*", "--noIndexRestore", "--quiet"),
    )


def _indexes(client: MongoClient[dict[str, Any]], database: str, name: str) -> set[str]:
    return {ix["name"] for ix in client[database][name].list_indexes()}


def _assert_like_source_and_mongorestore(
    uri: str, client: MongoClient[dict[str, Any]], dumps: Dumps, ours: str, theirs: str
) -> None:
    assert set(client[ours].list_collection_names()) == set(SIZES)
    assert set(client[theirs].list_collection_names()) == {THEIR_NAMES.get(n, n) for n in SIZES}
    for name in SIZES:
        restored = sorted(server_documents(uri, ours, name))
        assert restored == dumps.documents[name], name
        assert restored == sorted(server_documents(uri, theirs, THEIR_NAMES.get(name, name)))
    assert _indexes(client, ours, "plain") == {"_id_", "by_i"}
    assert _indexes(client, ours, ACCENTS) == {"_id_", "by_s"}


@pytest.fixture
def second_database(_mongo_admin: MongoClient[dict[str, Any]]) -> Iterator[str]:
    name = f"mongosnap_test_{uuid.uuid4().hex[:12]}"
    yield name
    _mongo_admin.drop_database(name)


@pytest.mark.parametrize("order", ["sorted", "metadata first"])
@pytest.mark.parametrize("layout", ["gzip", "plain"])
def test_restore_reads_gzip_files_and_shortened_names_as_mongorestore(
    layout: str,
    order: str,
    dumps: Dumps,
    mongo_uri: str,
    new_database: str,
    second_database: str,
    tmp_path: Path,
    _mongo_admin: MongoClient[dict[str, Any]],
) -> None:
    """Every collection comes back under its real name, with its indexes, byte
    for byte as mongorestore restores the same archive, whichever of a
    shortened name's two files comes first."""
    _restore_and_compare(
        dumps, mongo_uri, new_database, second_database,
        make_destination("local", tmp_path, None, None),
        _legacy(getattr(dumps, layout), dumps.source, "app", tmp_path / "legacy", order),
        _mongo_admin,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["moto", "versitygw"])
def test_restore_reads_a_gzip_dump_from_s3(
    kind: str,
    dumps: Dumps,
    mongo_uri: str,
    new_database: str,
    second_database: str,
    tmp_path: Path,
    testbed: Any,
    new_bucket: Any,
    _mongo_admin: MongoClient[dict[str, Any]],
) -> None:
    _restore_and_compare(
        dumps, mongo_uri, new_database, second_database,
        make_destination(kind, tmp_path, testbed, new_bucket),
        _legacy(dumps.gzip, dumps.source, "app", tmp_path / "legacy"),
        _mongo_admin,
    )  # fmt: skip


def _restore_and_compare(
    dumps: Dumps,
    mongo_uri: str,
    new_database: str,
    second_database: str,
    destination: Destination,
    archive: Path,
    _mongo_admin: MongoClient[dict[str, Any]],
) -> None:
    _put(destination, archive)
    report = asyncio.run(
        mongosnap.restore(
            mongo_uri,
            destination.url,
            database="app",
            to_database=new_database,
            s3=destination.s3,
        )
    )
    assert sorted(o.name for o in report.collections) == sorted(SIZES), report
    assert {o.status for o in report.collections} == {Status.RESTORED}, report
    _mongorestore(mongo_uri, archive, "app", second_database, archive.parent / "theirs")
    _assert_like_source_and_mongorestore(
        mongo_uri, _mongo_admin, dumps, new_database, second_database
    )


def test_heal_finds_collections_by_real_name_in_a_gzip_dump(
    dumps: Dumps,
    mongo_uri: str,
    new_database: str,
    tmp_path: Path,
    _mongo_admin: MongoClient[dict[str, Any]],
) -> None:
    """The catalog sees the database of ``.gz`` files, and the watched names
    (the real, long ones) are found behind their shortened file names."""
    destination = make_destination("local", tmp_path, None, None)
    _put(destination, _legacy(dumps.gzip, dumps.source, new_database, tmp_path / "legacy"))
    _mongo_admin[new_database]["healthy"].insert_one({"_id": 1})
    report = asyncio.run(
        mongosnap.heal(
            mongo_uri,
            destination.url,
            database=new_database,
            collections=["healthy", *SIZES],
        )
    )
    assert report.ok, report
    assert sorted(o.name for o in report.restored) == sorted(SIZES)
    for name in SIZES:
        assert sorted(server_documents(mongo_uri, new_database, name)) == dumps.documents[name]
    assert _indexes(_mongo_admin, new_database, ACCENTS) == {"_id_", "by_s"}


def test_heal_dry_run_and_verify_name_the_real_collections(
    dumps: Dumps, mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    destination = make_destination("local", tmp_path, None, None)
    _put(destination, _legacy(dumps.gzip, dumps.source, new_database, tmp_path / "legacy"))
    verified = asyncio.run(mongosnap.verify(destination.url))
    assert verified.ok, verified.problems
    found = {(c.name, c.documents, c.ok) for c in verified.collections}
    assert found == {(name, count, True) for name, count in SIZES.items()}
    plain = next(c for c in verified.collections if c.name == "plain")
    assert plain.bytes == sum(len(d) for d in dumps.documents["plain"])
    planned = asyncio.run(
        mongosnap.heal(
            mongo_uri, destination.url, database=new_database, collections=list(SIZES), dry_run=True
        )
    )
    found = {(o.name, o.documents, o.indexes, o.status) for o in planned.restored}
    indexes = {"plain": 1, ACCENTS: 1, SLASHES: 0, PLUSES: 0}  # besides _id_
    assert found == {(n, c, indexes[n], Status.WOULD_RESTORE) for n, c in SIZES.items()}


def _tar(members: dict[str, bytes]) -> bytes:
    """A ``tar -czf``-like archive of ``members`` (GNU long names, as GNU tar)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


def test_gzip_bomb_inside_a_member_is_refused(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    """A ``.bson.gz`` of two million empty documents (10 MB in 10 KB, then
    compressed again by the tar's gzip) passes the bound of documents per
    compressed byte read: verify and restore refuse it, and nothing appears."""
    bomb = gzip.compress(b"\x05\x00\x00\x00\x00" * 2_000_000, compresslevel=9)
    members = {"dump/app/bomb.metadata.json.gz": gzip.compress(b'{"indexes":[]}')}
    members["dump/app/bomb.bson.gz"] = bomb
    root = tmp_path / "backups"
    root.mkdir()
    (root / ARCHIVE).write_bytes(_tar(members))
    verified = asyncio.run(mongosnap.verify(str(root)))
    assert [p.error for p in verified.problems] == [UnsafeArchive], verified.problems
    assert "decompression bomb" in verified.problems[0].message
    with pytest.raises(UnsafeArchive):
        asyncio.run(
            mongosnap.restore(mongo_uri, str(root), database="app", to_database=new_database)
        )
    with MongoClient(mongo_uri) as client:
        assert client[new_database].list_collection_names() == []


def test_shortened_data_file_without_its_metadata_keeps_its_file_name(
    dumps: Dumps,
    mongo_uri: str,
    new_database: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No metadata names the collection: it is restored under the shortened
    name, ``%24`` and the hash kept as they are (unescaped, ``$`` is refused),
    with a warning, and the other collections are restored."""
    stem = escape_collection_name(SLASHES)
    cut = "a/b " * 34 + "a/%24" + stem.rsplit("%24", 1)[1]
    folder = dumps.plain / dumps.source
    root = tmp_path / "backups"
    root.mkdir()
    (root / ARCHIVE).write_bytes(
        _tar(
            {
                "dump/app/plain.metadata.json": (folder / "plain.metadata.json").read_bytes(),
                "dump/app/plain.bson": (folder / "plain.bson").read_bytes(),
                f"dump/app/{stem}.bson": (folder / f"{stem}.bson").read_bytes(),
            }
        )
    )
    caplog.set_level(logging.WARNING, logger="mongosnap.restore")
    report = asyncio.run(
        mongosnap.restore(mongo_uri, str(root), database="app", to_database=new_database)
    )
    outcomes = {o.name: o.status for o in report.collections}
    assert outcomes == {"plain": Status.RESTORED, cut: Status.RESTORED}, report
    assert sorted(server_documents(mongo_uri, new_database, cut)) == dumps.documents[SLASHES]
    assert any(stem in r.getMessage() and "shortened" in r.getMessage() for r in caplog.records)


def test_the_catalog_sees_the_database_of_a_gzip_dump(dumps: Dumps, tmp_path: Path) -> None:
    """Heal and prune learn which databases a legacy archive holds from its
    member names: ``.gz`` ones count."""
    destination = make_destination("local", tmp_path, None, None)
    _put(destination, _legacy(dumps.gzip, dumps.source, "app", tmp_path / "legacy"))

    async def learn() -> list[ArchiveInfo]:
        async with opened(destination.url) as storage:
            return await learn_databases(storage, await list_archives(storage))

    [info] = asyncio.run(learn())
    assert info.databases == frozenset({"app"}), info.problem


def test_a_corrupt_gzip_file_fails_like_a_corrupt_archive(
    dumps: Dumps, mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    """A ``.bson.gz`` whose CRC does not match: verify names it, restore
    refuses the archive, and nothing appears."""
    folder = dumps.gzip / dumps.source
    body = (folder / "plain.bson.gz").read_bytes()
    members = {"dump/app/plain.metadata.json.gz": (folder / "plain.metadata.json.gz").read_bytes()}
    members["dump/app/plain.bson.gz"] = body[:-8] + bytes(b ^ 0xFF for b in body[-8:-4]) + body[-4:]
    root = tmp_path / "backups"
    root.mkdir()
    (root / ARCHIVE).write_bytes(_tar(members))
    verified = asyncio.run(mongosnap.verify(str(root)))
    assert [p.error for p in verified.problems] == [CorruptArchive], verified.problems
    assert "dump/app/plain.bson.gz" in verified.problems[0].message
    with pytest.raises(CorruptArchive, match=r"plain\.bson\.gz"):
        asyncio.run(
            mongosnap.restore(mongo_uri, str(root), database="app", to_database=new_database)
        )
    with MongoClient(mongo_uri) as client:
        assert client[new_database].list_collection_names() == []
