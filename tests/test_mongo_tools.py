"""Compatibility with the real mongo-tools, both ways, in CI.

The real mongodump, mongorestore and bsondump live in ``../shared/mongo-tools/bin``
beside the clone (or ``$MONGOSNAP_MONGO_TOOLS``); they are the reference:

- ``tar -x`` + ``mongorestore --dir dump`` restores a mongosnap archive (gzip
  and zstd) byte for byte;
- ``bsondump`` reads every ``.bson`` member mongosnap writes;
- mongosnap's ``metadata.json`` files equal mongodump's for the same collections;
- ``mongosnap heal`` and ``restore`` read the legacy script's archives
  (``mongodump`` + ``tar -czf dump``) from every kind of destination.

FerretDB 1.x refuses the ``ns`` index option mongorestore sends (for mongodump's
own dumps too), so mongorestore runs with ``--noIndexRestore``; mongosnap's own
restore covers indexes. A missing tool fails these tests, never skips them.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from helpers import Destination, seed, server_documents, split_bson
from pymongo import MongoClient
from testbed import TestbedError, mongo_tools_dir

import mongosnap

SIZES = {"apps": 400, "users": 120, "empty": 0}


def tools_dir() -> Path:
    """Where mongodump, mongorestore and bsondump are; fails loudly when they are not."""
    try:
        return mongo_tools_dir()
    except TestbedError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def tools() -> Path:
    return tools_dir()


def _host(uri: str) -> str:
    return uri.split("://", 1)[1].rstrip("/")


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{args[0]} failed: {done.stderr[-2000:]}"
    return done


def mongorestore_copy(uri: str, dump: Path, source: str, target: str) -> None:
    """The real mongorestore of ``source``'s collections in ``dump`` into ``target``,
    without indexes (FerretDB refuses the ns option mongorestore sends; docs/format.md)."""
    _run(
        *(tools_dir() / "mongorestore", "--host", _host(uri), "--dir", dump),
        *("--nsFrom", f"{source}.*", "--nsTo", f"{target}.*", "--noIndexRestore", "--quiet"),
    )


def assert_mongorestore_gives(
    uri: str,
    dump: Path,
    source: str,
    expected: Mapping[str, list[bytes]],
    admin: MongoClient[dict[str, object]],
) -> None:
    """mongorestore of ``source`` in ``dump`` gives ``expected`` (collection ->
    sorted raw documents), byte for byte; the copy it made is dropped."""
    copy = f"{source}_copy"
    try:
        mongorestore_copy(uri, dump, source, copy)
        for name, documents in expected.items():
            assert sorted(server_documents(uri, copy, name)) == documents, name
    finally:
        admin.drop_database(copy)


def _extract(archive: Path, into: Path) -> None:
    """Unpack with GNU tar, as an operator would."""
    codec = ["--zstd"] if archive.name.endswith(".zst") else ["-z"]
    _run("tar", *codec, "-xf", archive, "-C", into)


@pytest.fixture
def seeded(mongo_uri: str, new_database: str) -> Iterator[dict[str, list[bytes]]]:
    seed(mongo_uri, new_database, SIZES)
    yield {n: sorted(server_documents(mongo_uri, new_database, n)) for n in SIZES}


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_mongorestore_restores_a_mongosnap_archive(
    codec: str,
    tools: Path,
    mongo_uri: str,
    new_database: str,
    seeded: dict[str, list[bytes]],
    tmp_path: Path,
    _mongo_admin: MongoClient[dict[str, object]],
) -> None:
    store = tmp_path / "store"
    result = asyncio.run(mongosnap.backup(mongo_uri, store, database=new_database, codec=codec))
    _extract(store / result.archive_key, tmp_path)
    assert_mongorestore_gives(mongo_uri, tmp_path / "dump", new_database, seeded, _mongo_admin)


def test_bsondump_reads_every_bson_member(
    tools: Path,
    mongo_uri: str,
    new_database: str,
    seeded: dict[str, list[bytes]],
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    result = asyncio.run(mongosnap.backup(mongo_uri, store, database=new_database))
    _extract(store / result.archive_key, tmp_path)
    for name, documents in seeded.items():
        member = tmp_path / "dump" / new_database / f"{name}.bson"
        assert sorted(split_bson(member.read_bytes())) == documents, name
        dumped = _run(tools / "bsondump", "--quiet", member).stdout.splitlines()
        assert len(dumped) == len(documents), name
        assert all(json.loads(line)["_id"] for line in dumped)


def test_metadata_equals_mongodumps(
    tools: Path,
    mongo_uri: str,
    new_database: str,
    seeded: dict[str, list[bytes]],
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    result = asyncio.run(mongosnap.backup(mongo_uri, store, database=new_database))
    ours = tmp_path / "ours"
    ours.mkdir()
    _extract(store / result.archive_key, ours)
    theirs = tmp_path / "theirs"
    _run(
        tools / "mongodump",
        "--host",
        _host(mongo_uri),
        "--db",
        new_database,
        "--out",
        theirs / "dump",
        "--quiet",
    )
    for name in seeded:
        relative = Path("dump") / new_database / f"{name}.metadata.json"
        assert (ours / relative).read_bytes() == (theirs / relative).read_bytes(), name


def _legacy_archive(tools: Path, mongo_uri: str, database: str, work: Path) -> Path:
    """What backup.bash left in the bucket: mongodump, then ``tar -czf NAME dump``."""
    work.mkdir()
    _run(tools / "mongodump", "--host", _host(mongo_uri), "--db", database, "--quiet", "--out",
         work / "dump")  # fmt: skip
    archive = work / "2020-01-01-00-00-00-mongodb-dump.tar.gz"
    _run("tar", "-czf", archive, "-C", work, "dump")
    return archive


def _upload(destination: Destination, archive: Path) -> None:
    if destination.root is not None:
        destination.root.mkdir(parents=True, exist_ok=True)
        (destination.root / archive.name).write_bytes(archive.read_bytes())
        return
    prefix = destination.url.split("/", 3)[3]
    destination.client().put_object(
        Bucket=destination.bucket, Key=f"{prefix}/{archive.name}", Body=archive.read_bytes()
    )


def test_heal_from_a_real_mongodump_archive(
    tools: Path,
    mongo_uri: str,
    new_database: str,
    seeded: dict[str, list[bytes]],
    destination: Destination,
    tmp_path: Path,
    _mongo_admin: MongoClient[dict[str, object]],
) -> None:
    _upload(destination, _legacy_archive(tools, mongo_uri, new_database, tmp_path / "legacy"))
    _mongo_admin[new_database].drop_collection("apps")
    _mongo_admin[new_database].drop_collection("users")
    report = asyncio.run(
        mongosnap.heal(
            mongo_uri,
            destination.url,
            database=new_database,
            collections=["apps", "users"],
            s3=destination.s3,
        )
    )
    assert report.ok, report
    assert sorted(o.name for o in report.restored) == ["apps", "users"]
    for name in ("apps", "users"):
        assert sorted(server_documents(mongo_uri, new_database, name)) == seeded[name], name
    names = {ix["name"] for ix in _mongo_admin[new_database]["apps"].list_indexes()}
    assert {"by_i", "s_when"} <= names
