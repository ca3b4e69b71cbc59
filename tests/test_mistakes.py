"""A mistake on the day of an incident is never a silent success.

A restore whose database or selection matches nothing in the archive, a heal
of a database no archive holds, and a list or check of a directory that does
not exist each fail with their own exit code and say what is there. Through
the real CLI, on a directory and on moto; the archives are built once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from catalog_support import repack_legacy
from helpers import Destination, run_cli, s3_client, s3_config, seed, subprocess_env
from pymongo import MongoClient

import mongosnap
from mongosnap.archive.manifest import archive_name, manifest_key

EMPTY = "mongosnap_mistakes_empty"
"""A database the third archive's manifest lists without collections."""
COLLECTIONS = [f"c{i:02}" for i in range(12)]


@dataclass(frozen=True)
class Archives:
    root: Path
    bucket: str
    endpoint: Any
    whole: str
    """Key of the archive with a manifest: databases a (COLLECTIONS) and b (apps)."""
    legacy: str
    """The same dump, as the old tar -czf scripts made it (no manifest)."""
    empty: str
    """The same dump, its manifest also listing EMPTY, with no collection."""
    a: str
    b: str


@pytest.fixture(scope="module")
def archives(
    tmp_path_factory: pytest.TempPathFactory, mongo_uri: str, testbed: Any
) -> Iterator[Archives]:
    tag = uuid.uuid4().hex[:10]
    a, b = f"mongosnap_mistakes_{tag}_a", f"mongosnap_mistakes_{tag}_b"
    seed(mongo_uri, a, dict.fromkeys(COLLECTIONS, 2))
    seed(mongo_uri, b, {"apps": 2})
    root = tmp_path_factory.mktemp("mistakes") / "backups"
    whole = asyncio.run(mongosnap.backup(mongo_uri, root, database=[a, b])).archive_key
    data = (root / whole).read_bytes()
    legacy = "2025-01-01-00-00-00-mongodb-dump.tar.gz"
    (root / legacy).write_bytes(repack_legacy(data, tmp_path_factory.mktemp("repack")))
    empty = archive_name(datetime(2025, 1, 2, tzinfo=UTC), "gzip")
    (root / empty).write_bytes(data)
    manifest = json.loads((root / manifest_key(whole)).read_bytes())
    manifest["archive"], manifest["databases"] = empty, [*manifest["databases"], EMPTY]
    (root / manifest_key(empty)).write_text(json.dumps(manifest, indent=2) + "\n")
    endpoint = testbed.s3["moto"]
    bucket = f"mongosnap-test-{uuid.uuid4().hex[:16]}"
    client = s3_client(endpoint)
    client.create_bucket(Bucket=bucket)
    names = sorted(p.name for p in root.iterdir())
    for name in names:
        client.put_object(Bucket=bucket, Key=f"nightly/{name}", Body=(root / name).read_bytes())
    yield Archives(root, bucket, endpoint, whole, legacy, empty, a, b)
    for name in names:
        client.delete_object(Bucket=bucket, Key=f"nightly/{name}")
    client.delete_bucket(Bucket=bucket)
    admin: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    for database in (a, b):
        admin.drop_database(database)
    admin.close()


@pytest.fixture(params=["local", "moto"])
def place(request: pytest.FixtureRequest, archives: Archives) -> Destination:
    if request.param == "local":
        return Destination(str(archives.root), None, root=archives.root)
    endpoint = archives.endpoint
    url = f"s3://{archives.bucket}/nightly"
    return Destination(url, s3_config(endpoint), endpoint, archives.bucket, kind="moto")


def host_of(uri: str) -> str:
    return uri.split("://", 1)[1].rstrip("/")


def cli(place: Destination, command: str, *args: str) -> tuple[int, str, str]:
    done = run_cli(command, *args, env=subprocess_env(place))
    return done.returncode, done.stdout, done.stderr


def databases_of(uri: str) -> list[str]:
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    try:
        return client.list_database_names()
    finally:
        client.close()


def test_restore_of_a_database_the_archive_lacks_fails(
    place: Destination, archives: Archives, mongo_uri: str, new_database: str
) -> None:
    typo = archives.a + "x"
    for key in (archives.whole, archives.legacy):
        args = (key, place.url, host_of(mongo_uri), typo, "--to-database", new_database)
        code, out, err = cli(place, "restore", *args)
        assert (code, out) == (mongosnap.NothingMatched.exit_code, ""), err
        assert err == (
            f"mongosnap: error: archive {key} holds no database {typo!r}; "
            f"it holds: {archives.a}, {archives.b}\n"
        )
    assert new_database not in databases_of(mongo_uri)  # nothing was written


def test_restore_of_collections_the_archive_lacks_fails(
    archives: Archives, mongo_uri: str, new_database: str
) -> None:
    place = Destination(str(archives.root), None, root=archives.root)
    holds = "it holds: c00, c01, c02, c03, c04, c05, c06, c07, c08, c09 and 2 more"
    cases = [
        (archives.whole, ["--collection", "c99", "-c", "c98"], "collections c98, c99"),
        (archives.whole, ["--include", "x*"], "include x*"),
        (archives.whole, ["--exclude", "c*"], "exclude c*"),
        (archives.legacy, ["--collection", "c99"], "collections c99"),
    ]
    for key, flags, asked in cases:
        args = (key, place.url, host_of(mongo_uri), archives.a, "--to-database", new_database)
        code, out, err = cli(place, "restore", *args, *flags)
        assert (code, out) == (mongosnap.NothingMatched.exit_code, ""), err
        assert err == (
            f"mongosnap: error: no collection of {archives.a} in archive {key} "
            f"matches {asked}; {holds}\n"
        )
    assert new_database not in databases_of(mongo_uri)


def test_an_empty_database_restores_whole_but_not_by_name(
    archives: Archives, mongo_uri: str, new_database: str
) -> None:
    place = Destination(str(archives.root), None, root=archives.root)
    args = (archives.empty, place.url, host_of(mongo_uri), EMPTY, "--to-database", new_database)
    code, out, err = cli(place, "restore", *args)
    assert code == 0 and out.startswith("restored 0 collections, 0 documents"), err
    code, out, err = cli(place, "restore", *args, "-c", "c00")
    assert (code, out) == (mongosnap.NothingMatched.exit_code, ""), err
    assert err == (
        f"mongosnap: error: no collection of {EMPTY} in archive {archives.empty} "
        "matches collections c00; it holds no collection\n"
    )


async def test_the_api_raises_nothing_matched(
    archives: Archives, mongo_uri: str, new_database: str
) -> None:
    for key in (archives.whole, archives.legacy):
        with pytest.raises(mongosnap.NothingMatched, match="holds no database 'nope'"):
            await mongosnap.restore(mongo_uri, archives.root, key, database="nope")
        with pytest.raises(mongosnap.NothingMatched, match="matches include zz"):
            await mongosnap.restore(
                mongo_uri, archives.root, key, database=archives.b, include=["zz"],
                to_database=new_database,
            )  # fmt: skip


def test_heal_of_a_database_no_archive_holds(
    place: Destination, archives: Archives, mongo_uri: str
) -> None:
    typo = archives.a + "x"
    url = place.storage().url
    for dry in ([], ["--dry-run"]) if place.kind == "local" else ([],):
        code, out, err = cli(place, "heal", place.url, host_of(mongo_uri), typo, "c00", *dry)
        assert (code, out) == (mongosnap.DatabaseNotArchived.exit_code, ""), err
        assert err == (
            f"mongosnap: error: no archive in {url} holds database {typo} "
            f"(they hold: {', '.join(sorted([archives.a, archives.b, EMPTY]))})\n"
        )


async def test_heal_api_error_is_still_a_no_backups_found(
    archives: Archives, mongo_uri: str, tmp_path: Path
) -> None:
    with pytest.raises(mongosnap.NoBackupsFound) as caught:  # callers catching it still work
        await mongosnap.heal(mongo_uri, archives.root, database="nope", collections=["c00"])
    assert type(caught.value) is mongosnap.DatabaseNotArchived
    assert caught.value.exit_code != mongosnap.NoBackupsFound.exit_code
    (tmp_path / "empty").mkdir()
    with pytest.raises(mongosnap.NoBackupsFound) as caught:  # no archive at all: as before
        await mongosnap.heal(mongo_uri, tmp_path / "empty", database="nope", collections=["c"])
    assert type(caught.value) is mongosnap.NoBackupsFound


def test_list_and_check_of_a_missing_directory(
    tmp_path: Path, mongo_uri: str, archives: Archives
) -> None:
    missing = tmp_path / "nowhere"
    message = f"mongosnap: error: directory {missing} does not exist\n"
    for extra in ([], ["--uploads"]):
        done = run_cli("list", str(missing), *extra)
        assert (done.returncode, done.stderr) == (mongosnap.BucketNotFound.exit_code, message)
    done = run_cli("check", str(missing))
    assert done.returncode == 3, done.stdout  # UNKNOWN: the probe could not look
    assert (
        done.stdout == f"MONGOSNAP UNKNOWN - BucketNotFound: directory {missing} does not exist\n"
    )
    assert not missing.exists()  # looking created nothing
    done = run_cli("backup", str(missing), host_of(mongo_uri), archives.b)
    assert done.returncode == 0, done.stderr  # a backup still creates it
    done = run_cli("list", str(missing))
    assert done.returncode == 0 and "complete" in done.stdout, done.stderr
    assert run_cli("check", str(missing), archives.b).returncode == 0
