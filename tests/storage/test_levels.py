"""A destination is one level: ``s3://b`` (or a directory) never reads, counts or
deletes what a deeper prefix (``s3://b/staging``) holds. Real FerretDB, and
moto, versitygw and a local directory."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from catalog_support import at, backup_at
from helpers import Destination, run_cli, s3_config, seed, server_documents
from pymongo import MongoClient

import mongosnap
from mongosnap.storage import S3Config, open_storage


@dataclass
class Place:
    """A destination's root level and a deeper level below it."""

    root: str
    below: str
    s3: S3Config | None
    flags: list[str]
    env: dict[str, str]


@pytest.fixture(params=["local", "moto", "versitygw"])
def place(request: pytest.FixtureRequest, tmp_path: Path, testbed: Any, new_bucket: Any) -> Place:
    if request.param == "local":
        root = str(tmp_path / "backups")
        return Place(root, f"{root}/staging", None, [], dict(os.environ))
    endpoint = testbed.s3[request.param]
    bucket = new_bucket(endpoint)
    flags = ["--endpoint-url", endpoint.endpoint_url, "--region", endpoint.region]
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=endpoint.access_key,
        AWS_SECRET_ACCESS_KEY=endpoint.secret_key,
    )
    return Place(
        f"s3://{bucket}",
        f"s3://{bucket}/staging",
        s3_config(endpoint),
        [*flags, "--addressing-style", "path"],
        env,
    )


def _at(place: Place, url: str) -> Destination:
    return Destination(url, place.s3)


def reseed(uri: str, database: str, users: int) -> list[bytes]:
    with MongoClient(uri) as client:
        client[database].drop_collection("users")
    seed(uri, database, {"users": users})
    return sorted(server_documents(uri, database, "users"))


async def test_heal_ignores_archives_below_its_level(
    place: Place, mongo_uri: str, new_database: str
) -> None:
    # Another environment backs up the same database name below, more recently.
    reseed(mongo_uri, new_database, 3)
    await backup_at(at(5), mongo_uri, _at(place, place.below), new_database)
    ours = reseed(mongo_uri, new_database, 500)
    await backup_at(at(1), mongo_uri, _at(place, place.root), new_database)
    with MongoClient(mongo_uri) as client:
        client[new_database].drop_collection("users")

    report = await mongosnap.heal(
        mongo_uri, place.root, database=new_database, collections=["users"], s3=place.s3
    )

    assert not report.missing
    assert sorted(server_documents(mongo_uri, new_database, "users")) == ours
    assert all("staging" not in key for key in report.searched)


async def test_prune_never_counts_or_deletes_below_its_level(
    place: Place, mongo_uri: str, new_database: str
) -> None:
    seed(mongo_uri, new_database, {"users": 20})
    root = [
        await backup_at(at(day), mongo_uri, _at(place, place.root), new_database) for day in (1, 2)
    ]
    below = [
        await backup_at(at(day), mongo_uri, _at(place, place.below), new_database) for day in (3, 4)
    ]

    report = await mongosnap.prune(place.root, keep_last=1, s3=place.s3)

    assert [d.archive.key for d in report.decisions] == [root[1], root[0]]
    assert [a.key for a in report.kept] == [root[1]]
    assert [a.key for a in report.deleted] == [root[0]]
    remaining_below = await mongosnap.list_archives(open_storage(place.below, s3=place.s3))
    assert sorted(a.key for a in remaining_below) == sorted(below)
    remaining = await mongosnap.list_archives(open_storage(place.root, s3=place.s3))
    assert [a.key for a in remaining] == [root[1]]


async def test_list_shows_only_its_level(place: Place, mongo_uri: str, new_database: str) -> None:
    seed(mongo_uri, new_database, {"users": 20})
    mine = await backup_at(at(1), mongo_uri, _at(place, place.root), new_database)
    theirs = await backup_at(at(2), mongo_uri, _at(place, place.below), new_database)

    listed = run_cli("list", place.root, "--json", *place.flags, env=place.env)
    assert listed.returncode == 0, listed.stderr
    assert [a["key"] for a in json.loads(listed.stdout)] == [mine]
    below = run_cli("list", place.below, "--json", *place.flags, env=place.env)
    assert below.returncode == 0, below.stderr
    assert [a["key"] for a in json.loads(below.stdout)] == [theirs]
