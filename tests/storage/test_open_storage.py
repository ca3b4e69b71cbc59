"""open_storage: destinations by URL or path, and the malformed ones."""

from __future__ import annotations

from pathlib import Path

import pytest

import mongosnap.storage
from mongosnap._errors import UsageError
from mongosnap.storage import (
    LocalStorage,
    MemoryStorage,
    S3Config,
    S3Storage,
    Storage,
    open_storage,
)


def test_public_names() -> None:
    assert sorted(mongosnap.storage.__all__) == [
        "LocalStorage",
        "MemoryStorage",
        "ObjectInfo",
        "ObjectWriter",
        "Retention",
        "S3Config",
        "S3Storage",
        "Storage",
        "UploadInfo",
        "open_storage",
        "opened",
    ]


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://bucket", "bucket", ""),
        ("s3://bucket/", "bucket", ""),
        ("s3://bucket/backups/daily/", "bucket", "backups/daily"),
    ],
)
def test_s3_urls(url: str, bucket: str, prefix: str) -> None:
    config = S3Config(region="eu-west-1")
    storage = open_storage(url, s3=config)
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix, storage.config) == (bucket, prefix, config)
    assert storage.url == f"s3://{bucket}/{prefix}".rstrip("/")


def test_local_destinations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for destination in (str(tmp_path / "a"), tmp_path / "a", (tmp_path / "a").as_uri()):
        storage = open_storage(destination)
        assert isinstance(storage, LocalStorage)
        assert storage.root == tmp_path / "a"
    relative = open_storage("rel/dir")
    assert isinstance(relative, LocalStorage) and relative.root == tmp_path / "rel" / "dir"
    spaced = open_storage("file:///tmp/with%20space")
    assert isinstance(spaced, LocalStorage) and spaced.root == Path("/tmp/with space")


async def test_memory_destinations_share_objects_by_name() -> None:
    first = open_storage("memory://open-storage-test")
    second = open_storage("memory://open-storage-test")
    other = open_storage("memory://open-storage-other")
    assert isinstance(first, MemoryStorage)
    await first.put("k", b"v")
    assert await second.read_bytes("k", limit=1) == b"v"
    assert [info.key async for info in other.list()] == []
    assert first.url == "memory://open-storage-test"


def test_storage_passes_through() -> None:
    storage: Storage = MemoryStorage()
    assert open_storage(storage) is storage


@pytest.mark.parametrize(
    "destination",
    [
        "",
        "s3://",
        "s3:///x",
        "s3://bucket/a//b",
        "s3://bucket/../b",
        "s3://bucket?versionId=1",
        "gs://bucket/x",
        "http://example.org/x",
        "file://host/x",
        "file://relative",
        "memory://",
        "memory://name/extra",
        "S3://bucket/x",
    ],
)
def test_malformed_destinations(destination: str) -> None:
    with pytest.raises(UsageError) as caught:
        open_storage(destination)
    message = str(caught.value)
    assert "\n" not in message and message


def test_credentials_in_an_s3_url_are_refused_without_echo() -> None:
    with pytest.raises(UsageError) as caught:
        open_storage("s3://AKIAID:topsecret@bucket/x")
    assert "topsecret" not in str(caught.value) and "AKIAID" not in str(caught.value)


def test_unknown_scheme_message_names_the_choices() -> None:
    with pytest.raises(UsageError, match=r"'gs://'.*s3://"):
        open_storage("gs://bucket")
