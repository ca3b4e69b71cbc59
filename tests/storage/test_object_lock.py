"""S3 Object Lock on new objects (docs/operations.md, "Locked archives"), on
moto and versitygw: a locked put and a locked streamed write carry their
retention, a delete with the writer's own credentials fails while it holds,
and a bucket without Object Lock is refused before anything is written.
Also the server-side copy's failure path (it shares the upload bookkeeping)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from helpers import s3_client, s3_config

from mongosnap import LockUnavailable, ObjectExists, ObjectNotFound, UsageError
from mongosnap.storage import LocalStorage, MemoryStorage, Retention, S3Storage

MiB = 1024 * 1024


def _retention(seconds: int = 3600) -> Retention:
    return Retention(datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds))


async def test_locked_objects_carry_their_retention(
    s3_endpoint: Any, new_locked_bucket: Any
) -> None:
    bucket = new_locked_bucket(s3_endpoint)
    retention = _retention()
    async with S3Storage(bucket, "nightly", s3_config(s3_endpoint, part_size=5 * MiB)) as storage:
        await storage.check_lock()
        await storage.put("small", b"sidecar", retention=retention)
        async with storage.open_writer("big", retention=retention) as writer:
            await writer.write(b"x" * (5 * MiB + 10))  # two parts: a multipart upload
            await writer.commit()
        await storage.put("plain", b"claim")
        for key in ("small", "big"):
            assert (await storage.stat(key)).retain_until == retention.until
        assert (await storage.stat("plain")).retain_until is None


async def test_a_locked_version_cannot_be_deleted(s3_endpoint: Any, new_locked_bucket: Any) -> None:
    bucket = new_locked_bucket(s3_endpoint)
    async with S3Storage(bucket, "", s3_config(s3_endpoint)) as storage:
        await storage.put("a", b"data", retention=_retention())
    client = s3_client(s3_endpoint)
    # moto versions the bucket (as AWS does with Object Lock): only a delete of
    # the version itself is refused. versitygw keeps one unversioned copy and
    # refuses any delete of it.
    version = client.head_object(Bucket=bucket, Key="a").get("VersionId")
    which = {} if version is None else {"VersionId": version}
    with pytest.raises(client.exceptions.ClientError) as refused:
        client.delete_object(Bucket=bucket, Key="a", **which)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert client.get_object(Bucket=bucket, Key="a")["Body"].read() == b"data"


async def test_a_bucket_without_object_lock_is_refused(s3_endpoint: Any, new_bucket: Any) -> None:
    bucket = new_bucket(s3_endpoint)
    async with S3Storage(bucket, "", s3_config(s3_endpoint)) as storage:
        with pytest.raises(LockUnavailable, match="no Object Lock"):
            await storage.check_lock()
        # The write itself is refused too (versitygw stores the object first
        # and then refuses its lock, hence the check before a backup starts).
        with pytest.raises(LockUnavailable):
            await storage.put("a", b"data", retention=_retention())


async def test_directories_and_memory_refuse_locks(tmp_path: Any) -> None:
    for storage in (LocalStorage(tmp_path), MemoryStorage()):
        with pytest.raises(UsageError, match="cannot lock"):
            await storage.put("a", b"data", retention=_retention())
        assert [o async for o in storage.list()] == []


async def test_a_failed_server_side_copy_leaves_no_upload(
    s3_endpoint: Any, new_bucket: Any
) -> None:
    """(S3Storage.copy_in, used by ``mongosnap copy`` on one endpoint.)"""
    config = s3_config(s3_endpoint)
    source = S3Storage(new_bucket(s3_endpoint), "", config)
    target = S3Storage(new_bucket(s3_endpoint), "", config)
    async with source, target:
        await source.put("there", b"x" * 100)
        with pytest.raises(ObjectNotFound):
            await target.copy_in(source, "gone", 12 * MiB)  # no such source: the part fails
        assert [u async for u in target.uploads()] == []
        assert [o async for o in target.list()] == []
        await target.copy_in(source, "there", 100)
        assert b"".join([c async for c in target.read("there")]) == b"x" * 100
        with pytest.raises(ObjectExists):  # never overwrites
            await target.copy_in(source, "there", 100)
