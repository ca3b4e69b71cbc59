"""Every way a backup can fail leaves nothing behind and says why in one line."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from helpers import Destination, s3_client, s3_config
from pymongo import MongoClient

import mongosnap
from mongosnap import backup
from mongosnap.progress import Progress, Stage

BLOB = 512 * 1024
PART = 5 * 1024 * 1024


@pytest.fixture
def s3_destination(s3_endpoint: Any, new_bucket: Any) -> Destination:
    bucket = new_bucket(s3_endpoint)
    return Destination(
        url=f"s3://{bucket}",
        s3=s3_config(s3_endpoint, part_size=PART),
        endpoint=s3_endpoint,
        bucket=bucket,
    )


@pytest.fixture
def big_database(mongo_uri: str, new_database: str) -> str:
    """About 24 MB of incompressible data: several multipart parts."""
    with MongoClient(mongo_uri) as client:
        coll = client[new_database]["blobs"]
        for start in range(0, 48, 8):
            coll.insert_many([{"n": n, "data": os.urandom(BLOB)} for n in range(start, start + 8)])
    return new_database


def assert_nothing_left(dest: Destination) -> None:
    assert dest.keys() == []
    assert dest.pending_uploads() == []


async def test_unreachable_server_fails_fast_and_names_the_host(
    s3_destination: Destination,
) -> None:
    started = time.monotonic()
    with pytest.raises(mongosnap.ServerUnreachable, match=r"127\.0\.0\.1:9"):
        await backup(
            "mongodb://user:hunter2@127.0.0.1:9/",
            s3_destination.url,
            database="x",
            s3=s3_destination.s3,
            connect_timeout=1,
        )
    assert time.monotonic() - started < 10
    assert_nothing_left(s3_destination)


async def test_missing_database(mongo_uri: str, s3_destination: Destination) -> None:
    with pytest.raises(mongosnap.DatabaseNotFound, match="no_such_db"):
        await backup(mongo_uri, s3_destination.url, database="no_such_db", s3=s3_destination.s3)
    assert_nothing_left(s3_destination)


async def test_missing_bucket(s3_endpoint: Any, mongo_uri: str, big_database: str) -> None:
    with pytest.raises(mongosnap.BucketNotFound, match="no-such-bucket-here"):
        await backup(
            mongo_uri,
            "s3://no-such-bucket-here/x",
            database=big_database,
            s3=s3_config(s3_endpoint),
        )


async def test_wrong_s3_credentials(
    testbed: Any, new_bucket: Any, mongo_uri: str, big_database: str
) -> None:
    # moto accepts any credentials; versitygw checks signatures like S3 does.
    endpoint = testbed.s3["versitygw"]
    bucket = new_bucket(endpoint)
    bad = s3_config(endpoint, secret_access_key="not-the-secret-XYZ")
    with pytest.raises(mongosnap.AccessDenied, match=bucket) as caught:
        await backup(mongo_uri, f"s3://{bucket}", database=big_database, s3=bad)
    assert "not-the-secret-XYZ" not in str(caught.value)
    assert_nothing_left(Destination(f"s3://{bucket}", None, endpoint=endpoint, bucket=bucket))


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "gs://bucket/x", ""])
async def test_malformed_destination(url: str, mongo_uri: str) -> None:
    with pytest.raises(mongosnap.UsageError):
        await backup(mongo_uri, url, database="x")


async def test_failure_mid_stream_aborts_the_upload(
    s3_destination: Destination, mongo_uri: str, big_database: str
) -> None:
    seen: list[Progress] = []

    def explode(event: Progress) -> None:
        seen.append(event)
        if event.stage is Stage.BATCH and event.bytes > 3 * PART:
            raise RuntimeError("injected failure")

    with pytest.raises(RuntimeError, match="injected"):
        await backup(
            mongo_uri,
            s3_destination.url,
            database=big_database,
            s3=s3_destination.s3,
            batch_size=4,
            progress=explode,
        )
    assert seen, "the failure must come mid-stream"
    assert_nothing_left(s3_destination)


async def test_cancellation_mid_stream_aborts_the_upload(
    s3_destination: Destination, mongo_uri: str, big_database: str
) -> None:
    reached = asyncio.Event()

    def watch(event: Progress) -> None:
        if event.bytes > 3 * PART:
            reached.set()

    task = asyncio.create_task(
        backup(
            mongo_uri,
            s3_destination.url,
            database=big_database,
            s3=s3_destination.s3,
            batch_size=4,
            progress=watch,
        )
    )
    await asyncio.wait_for(reached.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_nothing_left(s3_destination)


async def test_failure_mid_stream_leaves_no_local_file(
    tmp_path: Path, mongo_uri: str, big_database: str
) -> None:
    def explode(event: Progress) -> None:
        if event.bytes > PART:
            raise RuntimeError("injected failure")

    with pytest.raises(RuntimeError):
        await backup(mongo_uri, tmp_path, database=big_database, batch_size=4, progress=explode)
    assert list(tmp_path.rglob("*")) == []


@pytest.mark.parametrize(
    ("signum", "code"),
    [
        (signal.SIGTERM, mongosnap.Terminated.exit_code),
        (signal.SIGINT, mongosnap.Interrupted.exit_code),
    ],
    ids=["SIGTERM", "Ctrl-C"],
)
def test_signal_during_cli_backup_aborts(
    signum: int, code: int, s3_destination: Destination, mongo_uri: str, big_database: str
) -> None:
    endpoint = s3_destination.endpoint
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=endpoint.access_key,
        AWS_SECRET_ACCESS_KEY=endpoint.secret_key,
        AWS_DEFAULT_REGION=endpoint.region,
    )
    host = mongo_uri.split("://", 1)[1].rstrip("/")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "mongosnap", "backup", s3_destination.url, host, big_database),
            *("--endpoint-url", endpoint.endpoint_url, "--addressing-style", "path"),
            *("--part-size", "5", "--batch-size", "2", "--quiet"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    client = s3_client(endpoint)
    deadline = time.monotonic() + 60
    while not client.list_multipart_uploads(Bucket=s3_destination.bucket).get("Uploads"):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no multipart upload started"
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert b"Traceback" not in err
    assert_nothing_left(s3_destination)


async def test_wrong_mongodb_credentials(mongo_auth_uri: str, tmp_path: Path) -> None:
    user, password = mongo_auth_uri.split("://", 1)[1].split("@", 1)[0].split(":")
    wrong = mongo_auth_uri.replace(f":{password}@", ":not-the-password@")
    with pytest.raises(mongosnap.AuthenticationFailed) as caught:
        await backup(wrong, tmp_path, database="anything")
    assert "not-the-password" not in str(caught.value)
    assert user not in str(caught.value) or "@" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


async def test_right_mongodb_credentials(mongo_auth_uri: str, tmp_path: Path) -> None:
    database = f"authdb_{uuid.uuid4().hex[:8]}"  # the server is shared by every run
    with MongoClient(mongo_auth_uri) as client:
        client[database].things.insert_many([{"n": n} for n in range(10)])
    try:
        result = await backup(mongo_auth_uri, tmp_path, database=database)
    finally:
        with MongoClient(mongo_auth_uri) as client:
            client.drop_database(database)
    assert result.documents == 10
    assert mongo_auth_uri.split("@")[0] not in str(result.to_dict())
