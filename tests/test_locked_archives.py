"""Locked archives (docs/operations.md, "Locked archives"), on moto and
versitygw: ``backup --lock-days`` locks the archive and its sidecar (not the
name claim), a bucket without Object Lock fails with exit 26 before anything
is dumped, a directory refuses the flag, and prune keeps an archive while its
lock holds and deletes it on the first run after."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from catalog_support import at, backup_at
from helpers import Destination, run_cli, s3_client, s3_config, seed

import mongosnap
from mongosnap.archive.manifest import manifest_key
from mongosnap.units import iso_utc


def _cli_env(endpoint: Any) -> tuple[dict[str, str], list[str]]:
    env = dict(
        os.environ, AWS_ACCESS_KEY_ID=endpoint.access_key, AWS_SECRET_ACCESS_KEY=endpoint.secret_key
    )
    flags = ["--endpoint-url", endpoint.endpoint_url, "--region", endpoint.region]
    return env, [*flags, "--addressing-style", "path"]


def _keys(client: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_backup_locks_the_archive_and_its_sidecar(
    s3_endpoint: Any, new_locked_bucket: Any, mongo_uri: str, new_database: str
) -> None:
    seed(mongo_uri, new_database, {"users": 20})
    bucket = new_locked_bucket(s3_endpoint)
    env, flags = _cli_env(s3_endpoint)
    before = datetime.now(UTC)
    done = run_cli(
        "backup", f"s3://{bucket}/nightly", "--uri", mongo_uri, new_database,
        "--lock-days", "3", "--json", *flags, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    key = "nightly/" + json.loads(done.stdout)["archive_key"]
    client = s3_client(s3_endpoint)
    assert sorted(_keys(client, bucket)) == [key, manifest_key(key)]  # the claim is gone
    for name in (key, manifest_key(key)):
        head = client.head_object(Bucket=bucket, Key=name)
        assert head["ObjectLockMode"] == "GOVERNANCE"
        until = head["ObjectLockRetainUntilDate"]
        assert before + timedelta(days=3) - timedelta(seconds=1) <= until
        assert until <= datetime.now(UTC) + timedelta(days=3)
        # the backup's own credentials cannot delete it (see the storage tests
        # for versions and delete markers)
        version = {"VersionId": head["VersionId"]} if head.get("VersionId") else {}
        with pytest.raises(client.exceptions.ClientError, match="AccessDenied"):
            client.delete_object(Bucket=bucket, Key=name, **version)
    checked = run_cli("check", f"s3://{bucket}/nightly", "--locked", "--json", *flags, env=env)
    verdict = json.loads(checked.stdout)
    assert (checked.returncode, verdict["status"]) == (0, "OK"), checked.stdout
    assert verdict["locked_until"] == iso_utc(until)


def test_a_bucket_without_object_lock_fails_before_the_dump(
    s3_endpoint: Any, new_bucket: Any, mongo_uri: str, new_database: str
) -> None:
    seed(mongo_uri, new_database, {"users": 5})
    bucket = new_bucket(s3_endpoint)
    env, flags = _cli_env(s3_endpoint)
    done = run_cli(
        "backup", f"s3://{bucket}/nightly", "--uri", mongo_uri, new_database,
        "--lock-days", "3", *flags, env=env,
    )  # fmt: skip
    assert done.returncode == 26, done.stderr
    assert "no Object Lock configuration" in done.stderr
    assert "Traceback" not in done.stderr
    client = s3_client(s3_endpoint)
    assert _keys(client, bucket) == []
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []

    # check --locked warns about such a bucket
    plain = run_cli("backup", f"s3://{bucket}/nightly", "--uri", mongo_uri, new_database, *flags,
                    env=env)  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    checked = run_cli("check", f"s3://{bucket}/nightly", "--locked", *flags, env=env)
    assert checked.returncode == 1, checked.stdout
    assert checked.stdout.startswith("MONGOSNAP WARNING - newest complete archive")
    assert "has no Object Lock configuration" in checked.stdout


def test_a_directory_refuses_lock_days(tmp_path: Any, mongo_uri: str, new_database: str) -> None:
    done = run_cli(
        "backup", str(tmp_path / "b"), "--uri", mongo_uri, new_database, "--lock-days", "3"
    )
    assert done.returncode == 2, done.stderr
    assert "--lock-days needs an s3:// DEST" in done.stderr
    assert not (tmp_path / "b").exists()


async def test_prune_keeps_a_locked_archive_until_its_lock_ends(
    s3_endpoint: Any, new_locked_bucket: Any, mongo_uri: str, new_database: str
) -> None:
    seed(mongo_uri, new_database, {"users": 10})
    bucket = new_locked_bucket(s3_endpoint)
    dest = Destination(f"s3://{bucket}/nightly", s3_config(s3_endpoint))
    old = await backup_at(at(1), mongo_uri, dest, new_database)
    new = await backup_at(at(2), mongo_uri, dest, new_database)
    client = s3_client(s3_endpoint)
    hour = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    for name in (f"nightly/{old}", f"nightly/{manifest_key(old)}"):
        client.put_object_retention(
            Bucket=bucket, Key=name, Retention={"Mode": "GOVERNANCE", "RetainUntilDate": hour}
        )

    env, flags = _cli_env(s3_endpoint)
    pruned = run_cli("prune", dest.url, "--keep-last", "1", "--json", *flags, env=env)
    assert pruned.returncode == 0, pruned.stderr
    report = json.loads(pruned.stdout)
    assert (report["kept"], report["deleted"], report["locked"]) == (2, 0, 1)
    held = next(a for a in report["archives"] if a["key"] == old)
    assert held["keep"] and held["locked_until"] == iso_utc(hour)
    assert held["reasons"][0] == f"locked until {iso_utc(hour)}"
    markers = client.list_object_versions(Bucket=bucket).get("DeleteMarkers", [])
    locked = {f"nightly/{old}", f"nightly/{manifest_key(old)}"}
    assert not [m for m in markers if m["Key"] in locked]  # no delete was even tried
    table = run_cli("prune", dest.url, "--keep-last", "1", "--dry-run", *flags, env=env)
    assert f"keep          {old}  locked until" in table.stdout
    checked = run_cli(
        "check", dest.url, "--locked", "--max-age", "3650d", "--json", *flags, env=env
    )
    verdict = json.loads(checked.stdout)
    assert (checked.returncode, verdict["archive"], verdict["locked_until"]) == (1, new, None)
    assert f"{new} is not locked" in verdict["message"]

    # An operator with the bypass permission shortens the governance lock.
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    for name in (f"nightly/{old}", f"nightly/{manifest_key(old)}"):
        client.put_object_retention(
            Bucket=bucket,
            Key=name,
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": soon},
            BypassGovernanceRetention=True,
        )
    while datetime.now(UTC) <= soon + timedelta(seconds=1):
        time.sleep(0.2)  # waiting for the lock to end, not measuring anything
    report2 = await mongosnap.prune(dest.url, keep_last=1, s3=dest.s3)
    assert [a.key for a in report2.deleted] == [old]
    assert [a.key for a in report2.kept] == [new]
    assert report2.locked == []
    assert sorted(_keys(client, bucket)) == sorted(
        [f"nightly/{new}", f"nightly/{manifest_key(new)}"]
    )


async def test_copy_locks_what_it_writes(
    s3_endpoint: Any, new_bucket: Any, new_locked_bucket: Any, mongo_uri: str, new_database: str
) -> None:
    seed(mongo_uri, new_database, {"users": 5})
    source = Destination(f"s3://{new_bucket(s3_endpoint)}/nightly", s3_config(s3_endpoint))
    key = await backup_at(at(1), mongo_uri, source, new_database)
    bucket = new_locked_bucket(s3_endpoint)
    before = datetime.now(UTC).replace(microsecond=0)
    report = await mongosnap.copy(
        source.url, f"s3://{bucket}/copy", s3=source.s3, lock_for=timedelta(days=2),
        lock_mode="governance",
    )  # fmt: skip
    assert [a.outcome for a in report.archives] == ["copied"]
    client = s3_client(s3_endpoint)
    for name in (f"copy/{key}", f"copy/{manifest_key(key)}"):
        head = client.head_object(Bucket=bucket, Key=name)
        assert head["ObjectLockMode"] == "GOVERNANCE"
        assert head["ObjectLockRetainUntilDate"] >= before + timedelta(days=2)


def test_a_host_clock_behind_never_shortens_a_lock(
    testbed: Any, new_locked_bucket: Any, mongo_uri: str, new_database: str
) -> None:
    # moto only: versitygw refuses requests signed two days off (RequestTimeTooSkewed)
    endpoint = testbed.s3["moto"]
    seed(mongo_uri, new_database, {"users": 20})
    bucket = new_locked_bucket(endpoint)
    env, flags = _cli_env(endpoint)
    before = datetime.now(UTC)
    done = run_cli(
        "backup", f"s3://{bucket}/nightly", "--uri", mongo_uri, new_database,
        "--lock-days", "1", "--json", *flags, env=env, faked="-2d",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "locks are dated by the storage's clock" in done.stderr
    key = "nightly/" + json.loads(done.stdout)["archive_key"]
    for name in (key, manifest_key(key)):
        until = s3_client(endpoint).head_object(Bucket=bucket, Key=name)[
            "ObjectLockRetainUntilDate"
        ]
        # a day from now by the storage's clock, not a day from two days ago
        assert before + timedelta(days=1) - timedelta(seconds=2) <= until
        assert until <= datetime.now(UTC) + timedelta(days=1)
