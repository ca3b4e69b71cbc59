"""A sidecar that cannot be stored: the archive is deleted (with retries), or the
error names the archive left behind so an operator can delete it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import Destination, s3_config, seed
from storage.s3_faults import FaultyClient, client_error

import mongosnap
from mongosnap import backup
from mongosnap.archive.manifest import MANIFEST_SUFFIX
from mongosnap.pipelines import backup as backup_module
from mongosnap.storage import LocalStorage, S3Storage, Storage, open_storage

ARCHIVE_SUFFIX = "-mongodb-dump.tar.gz"


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup_module, "DELETE_BACKOFF", 0.01)


@pytest.fixture
def seeded(mongo_uri: str, new_database: str) -> str:
    seed(mongo_uri, new_database, {"things": 400})
    return new_database


class SidecarFaults(FaultyClient):
    """Every sidecar PUT fails; the archive's DELETE fails ``delete_failures`` times."""

    def __init__(self, client: Any, *, delete_failures: int) -> None:
        super().__init__(client)
        self.delete_failures = delete_failures
        self.archive_deletes = 0

    async def put_object(self, **kwargs: Any) -> Any:
        if kwargs["Key"].endswith(MANIFEST_SUFFIX):
            raise client_error("InternalError", 500, "PutObject")
        return await super().put_object(**kwargs)

    async def delete_object(self, **kwargs: Any) -> Any:
        if kwargs["Key"].endswith(ARCHIVE_SUFFIX):
            self.archive_deletes += 1
            if self.delete_failures:
                self.delete_failures -= 1
                raise client_error("InternalError", 500, "DeleteObject")
        return await self._client.delete_object(**kwargs)


class FlakyLocal:
    """A real LocalStorage whose sidecar puts fail, and archive deletes for a while."""

    def __init__(self, inner: LocalStorage, *, delete_failures: int) -> None:
        self.inner = inner
        self.delete_failures = delete_failures
        self.archive_deletes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def url(self) -> str:
        return self.inner.url

    async def put(self, key: str, data: bytes) -> Any:
        if key.endswith(MANIFEST_SUFFIX):
            raise mongosnap.StorageError(f"{self.url}/{key}: injected write failure")
        return await self.inner.put(key, data)

    async def delete(self, key: str) -> None:
        if key.endswith(ARCHIVE_SUFFIX):
            self.archive_deletes += 1
            if self.delete_failures:
                self.delete_failures -= 1
                raise mongosnap.StorageError(f"{self.url}/{key}: injected delete failure")
        await self.inner.delete(key)


def s3_storage(endpoint: Any, bucket: str) -> S3Storage:
    storage = open_storage(f"s3://{bucket}/nightly", s3=s3_config(endpoint))
    assert isinstance(storage, S3Storage)
    return storage


@pytest.mark.parametrize("failures", [1, 3], ids=["once", "three-times"])
async def test_s3_archive_without_sidecar_is_deleted_after_retries(
    failures: int, s3_endpoint: Any, new_bucket: Any, mongo_uri: str, seeded: str
) -> None:
    bucket = new_bucket(s3_endpoint)
    dest = Destination(f"s3://{bucket}/nightly", None, s3_endpoint, bucket)
    async with s3_storage(s3_endpoint, bucket) as storage:
        faults = await SidecarFaults.install(storage, delete_failures=failures)
        with pytest.raises(mongosnap.StorageError) as caught:
            await backup(mongo_uri, storage, database=seeded)
    assert faults.archive_deletes == failures + 1
    assert "could not be deleted" not in str(caught.value)
    assert dest.keys() == []
    assert dest.pending_uploads() == []


async def test_s3_archive_that_cannot_be_deleted_is_named_in_the_error(
    s3_endpoint: Any, new_bucket: Any, mongo_uri: str, seeded: str
) -> None:
    bucket = new_bucket(s3_endpoint)
    dest = Destination(f"s3://{bucket}/nightly", None, s3_endpoint, bucket)
    async with s3_storage(s3_endpoint, bucket) as storage:
        faults = await SidecarFaults.install(storage, delete_failures=1000)
        with pytest.raises(mongosnap.StorageError) as caught:
            await backup(mongo_uri, storage, database=seeded)
    left = dest.keys()
    assert len(left) == 1 and left[0].endswith(ARCHIVE_SUFFIX)
    assert faults.archive_deletes == backup_module.DELETE_ATTEMPTS
    message = str(caught.value)
    assert f"s3://{bucket}/{left[0]}" in message
    assert "could not be deleted" in message


async def test_local_archive_without_sidecar_is_deleted_after_retries(
    tmp_path: Path, mongo_uri: str, seeded: str
) -> None:
    storage = FlakyLocal(LocalStorage(tmp_path), delete_failures=2)
    assert isinstance(storage, Storage)
    with pytest.raises(mongosnap.StorageError, match="injected write failure"):
        await backup(mongo_uri, storage, database=seeded)  # type: ignore[arg-type]
    assert storage.archive_deletes == 3
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


async def test_local_archive_that_cannot_be_deleted_is_named_in_the_error(
    tmp_path: Path, mongo_uri: str, seeded: str
) -> None:
    storage = FlakyLocal(LocalStorage(tmp_path), delete_failures=1000)
    with pytest.raises(mongosnap.StorageError) as caught:
        await backup(mongo_uri, storage, database=seeded)  # type: ignore[arg-type]
    left = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(left) == 1 and left[0].name.endswith(ARCHIVE_SUFFIX)
    assert left[0].name in str(caught.value)
    assert "could not be deleted" in str(caught.value)
