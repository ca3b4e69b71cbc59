"""Archives in an archive storage class (Glacier) are listed as ``archived``,
skipped by heal and verify's ``latest``, kept by prune, and never make a
command fail for the whole destination. On moto, which answers a GET of a
GLACIER object with InvalidObjectState as AWS does (versitygw ignores
storage classes)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from catalog_support import at, backup_at
from helpers import Destination, run_cli, s3_client, s3_config, seed, server_documents
from pymongo import MongoClient

import mongosnap
from mongosnap import ObjectArchived
from mongosnap.archive.manifest import manifest_key
from mongosnap.catalog import ArchiveStatus


@pytest.fixture
def moto(testbed: Any) -> Any:
    return testbed.s3["moto"]


async def test_archived_archives_never_fail_the_destination(
    moto: Any, new_bucket: Any, mongo_uri: str, new_database: str
) -> None:
    bucket = new_bucket(moto)
    url = f"s3://{bucket}/nightly"
    seed(mongo_uri, new_database, {"users": 50, "orders": 30})
    users = sorted(server_documents(mongo_uri, new_database, "users"))
    plain = await backup_at(at(1), mongo_uri, Destination(url, s3_config(moto)), new_database)
    # A lifecycle rule moved only this archive (not its sidecar) to Glacier.
    half = await backup_at(at(2), mongo_uri, Destination(url, s3_config(moto)), new_database)
    client = s3_client(moto)
    client.copy_object(
        Bucket=bucket,
        Key=f"nightly/{half}",
        CopySource={"Bucket": bucket, "Key": f"nightly/{half}"},
        StorageClass="GLACIER",
    )
    glacier = s3_config(moto, storage_class="GLACIER")
    cold = await backup_at(at(3), mongo_uri, Destination(url, glacier), new_database)
    head = client.head_object(Bucket=bucket, Key=f"nightly/{manifest_key(cold)}")
    assert head["StorageClass"] == "GLACIER"

    env = dict(os.environ, AWS_ACCESS_KEY_ID=moto.access_key, AWS_SECRET_ACCESS_KEY=moto.secret_key)
    flags = ["--endpoint-url", moto.endpoint_url, "--region", moto.region]
    flags += ["--addressing-style", "path"]
    listed = run_cli("list", url, "--json", *flags, env=env)
    assert listed.returncode == 0, listed.stderr
    statuses = {a["key"]: a["status"] for a in json.loads(listed.stdout)}
    assert statuses == {cold: "archived", half: "archived", plain: "complete"}
    table = run_cli("list", url, *flags, env=env)
    assert table.returncode == 0 and "archived" in table.stdout

    verified = run_cli("verify", "latest", url, *flags, env=env)
    assert verified.returncode == 0, verified.stderr
    assert plain in verified.stdout
    refused = run_cli("verify", cold, url, *flags, env=env)
    assert refused.returncode == ObjectArchived.exit_code, refused.stderr
    assert "restore" in refused.stderr

    with MongoClient(mongo_uri) as mongo:
        mongo[new_database].drop_collection("users")
    report = await mongosnap.heal(
        mongo_uri, url, database=new_database, collections=["users", "orders"], s3=s3_config(moto)
    )
    assert not report.missing
    assert [s.key for s in report.skipped] == [cold, half]
    assert report.searched == [plain]
    assert sorted(server_documents(mongo_uri, new_database, "users")) == users

    pruned = await mongosnap.prune(url, keep_last=1, s3=s3_config(moto))
    assert pruned.deleted == []
    assert {d.archive.key: d.archive.status for d in pruned.decisions} == {
        cold: ArchiveStatus.ARCHIVED,
        half: ArchiveStatus.ARCHIVED,
        plain: ArchiveStatus.COMPLETE,
    }
    pruned_cli = run_cli("prune", url, "--keep-last", "1", *flags, env=env)
    assert pruned_cli.returncode == 0, pruned_cli.stderr
    assert len(await mongosnap.list_archives(mongosnap.open_storage(url, s3=s3_config(moto)))) == 3
