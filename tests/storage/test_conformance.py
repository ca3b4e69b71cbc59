"""One suite, every backend: memory, a local directory, and S3 on moto and versitygw.

Each Test* class supplies a ``backend`` fixture; the tests live in Conformance.
``leftovers()`` names whatever a backend could leave behind after a failed or
aborted write: hidden partial files for a directory, multipart uploads for S3.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mongosnap._errors import ObjectExists, ObjectNotFound, StorageError, UsageError
from mongosnap.storage import (
    LocalStorage,
    MemoryStorage,
    ObjectWriter,
    S3Config,
    S3Storage,
    Storage,
    UploadInfo,
)

MiB = 1024 * 1024
PART = 5 * MiB  # S3 tests use the smallest part S3 allows


@dataclass
class Backend:
    storage: Storage
    leftovers: Callable[[], Awaitable[list[str]]]
    part_count: Callable[[str], Awaitable[int | None]] = field(default=lambda key: _none())


async def _none() -> None:
    return None


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


async def read_all(storage: Storage, key: str, start: int = 0, end: int | None = None) -> bytes:
    chunks = [chunk async for chunk in storage.read(key, start, end)]
    assert all(0 < len(chunk) <= MiB for chunk in chunks)
    return b"".join(chunks)


async def keys(storage: Storage, prefix: str = "") -> list[str]:
    return [info.key async for info in storage.list(prefix)]


async def _once_written(storage: Storage, key: str) -> UploadInfo:
    """The unfinished write of ``key``, once S3 lists a part of it."""
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        (upload,) = [u async for u in storage.uploads() if u.key == key]
        if not isinstance(storage, S3Storage) or upload.last_written is not None:
            return upload
        assert asyncio.get_running_loop().time() < deadline, "the part never arrived"
        await asyncio.sleep(0.05)


async def write_in_pieces(writer: ObjectWriter, data: bytes, seed: int = 1) -> None:
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        size = rng.choice([1, 17, 4096, rng.randrange(1, 3 * MiB)])
        await writer.write(data[pos : pos + size])
        pos += size


class Conformance:
    @pytest.fixture
    def storage(self, backend: Backend) -> Storage:
        return backend.storage

    # -- small objects ---------------------------------------------------------

    async def test_put_stat_read_bytes(self, storage: Storage) -> None:
        info = await storage.put("dir/hello.txt", b"hello")
        assert (info.key, info.size) == ("dir/hello.txt", 5)
        stat = await storage.stat("dir/hello.txt")
        assert (stat.key, stat.size) == ("dir/hello.txt", 5)
        assert await storage.read_bytes("dir/hello.txt", limit=5) == b"hello"
        with pytest.raises(StorageError, match="limit"):
            await storage.read_bytes("dir/hello.txt", limit=4)

    async def test_empty_objects(self, storage: Storage) -> None:
        await storage.put("empty-put", b"")
        writer = storage.open_writer("empty-writer")
        info = await writer.commit()
        assert info.size == 0
        for key in ("empty-put", "empty-writer"):
            assert (await storage.stat(key)).size == 0
            assert await read_all(storage, key) == b""
            assert await read_all(storage, key, 0, 10) == b""
            assert await storage.read_bytes(key, limit=0) == b""

    async def test_read_ranges(self, storage: Storage) -> None:
        data = payload(3 * MiB + 123)
        await storage.put("ranged", data)
        n = len(data)
        for start, end in [
            (0, None),
            (1, 10),
            (0, 0),
            (7, 7),
            (MiB - 1, MiB + 1),
            (n - 1, None),
            (n, None),
            (n + 10, None),
            (n + 10, n + 20),
            (10, n + 100),
        ]:
            assert await read_all(storage, "ranged", start, end) == data[start:end], (start, end)

    async def test_missing_objects(self, storage: Storage) -> None:
        with pytest.raises(ObjectNotFound):
            await storage.stat("nothing/here")
        with pytest.raises(ObjectNotFound):
            await read_all(storage, "nothing/here")
        with pytest.raises(ObjectNotFound):
            await read_all(storage, "nothing/here", 3, 3)
        with pytest.raises(ObjectNotFound):
            await storage.read_bytes("nothing/here", limit=10)
        await storage.delete("nothing/here")  # not an error

    async def test_list_order_and_prefix(self, storage: Storage) -> None:
        names = ["b", "ab", "a/d/e", "a/c", "a.b", "a-b", "a/ca"]
        for i, key in enumerate(names):
            await storage.put(key, b"x" * i)
        assert await keys(storage) == ["a-b", "a.b", "ab", "b"]
        assert await keys(storage, "a/") == ["a/c", "a/ca"]
        assert await keys(storage, "a/c") == ["a/c", "a/ca"]
        assert await keys(storage, "a/d") == []
        assert await keys(storage, "a/d/") == ["a/d/e"]
        assert await keys(storage, "a") == ["a-b", "a.b", "ab"]
        assert await keys(storage, "zz") == []
        sizes = {info.key: info.size async for info in storage.list("a/")}
        assert sizes == {"a/c": 3, "a/ca": 6}

    async def test_list_is_one_level(self, storage: Storage) -> None:
        # A storage means its own level: what deeper prefixes hold (another
        # environment's backups under staging/...) is never listed.
        await storage.put("2026-01-01-00-00-00-mongodb-dump.tar.gz", b"root")
        await storage.put("staging/2026-02-01-00-00-00-mongodb-dump.tar.gz", b"below")
        await storage.put("staging/deeper/x", b"below")
        assert await keys(storage) == ["2026-01-01-00-00-00-mongodb-dump.tar.gz"]
        assert await keys(storage, "2026") == ["2026-01-01-00-00-00-mongodb-dump.tar.gz"]
        assert await keys(storage, "staging/") == [
            "staging/2026-02-01-00-00-00-mongodb-dump.tar.gz"
        ]

    async def test_list_pages_past_one_thousand(self, storage: Storage) -> None:
        # ListObjectsV2 answers 1,000 keys a page; the listing must follow on.
        names = [f"many/{i:05d}" for i in range(1050)]
        await asyncio.gather(*(storage.put(key, b"") for key in names))
        assert await keys(storage, "many/") == names

    async def test_delete(self, storage: Storage) -> None:
        await storage.put("doomed/x", b"1")
        await storage.put("kept", b"2")
        await storage.delete("doomed/x")
        with pytest.raises(ObjectNotFound):
            await storage.stat("doomed/x")
        assert await keys(storage) == ["kept"]
        assert await keys(storage, "doomed/") == []
        await storage.put("doomed/x", b"again")  # the key is free once more
        assert await storage.read_bytes("doomed/x", limit=10) == b"again"

    async def test_put_never_overwrites(self, storage: Storage) -> None:
        await storage.put("once", b"first")
        with pytest.raises(ObjectExists):
            await storage.put("once", b"second")
        assert await storage.read_bytes("once", limit=10) == b"first"

    @pytest.mark.parametrize("size", [100, 2 * PART + 7], ids=["small", "multipart"])
    async def test_commit_never_overwrites(
        self, backend: Backend, storage: Storage, size: int
    ) -> None:
        writer = storage.open_writer("taken")
        await writer.write(payload(size))
        await storage.put("taken", b"already here")
        with pytest.raises(ObjectExists):
            await writer.commit()
        assert await storage.read_bytes("taken", limit=100) == b"already here"
        assert await backend.leftovers() == []
        with pytest.raises(StorageError):
            await writer.write(b"more")  # the failed writer is aborted

    @pytest.mark.parametrize("key", ["", "/abs", "a//b", "../up", "a/../b", "./a", "a/", "a\0b"])
    async def test_malformed_keys(self, storage: Storage, key: str) -> None:
        with pytest.raises(UsageError):
            await storage.put(key, b"x")
        with pytest.raises(UsageError):
            await storage.stat(key)

    # -- streaming -------------------------------------------------------------

    async def test_nothing_visible_before_commit(self, backend: Backend, storage: Storage) -> None:
        writer = storage.open_writer("pending/obj")
        await writer.write(payload(PART + 1))
        assert writer.position == PART + 1
        with pytest.raises(ObjectNotFound):
            await storage.stat("pending/obj")
        assert await keys(storage, "pending/") == []
        info = await writer.commit()
        assert (info.key, info.size) == ("pending/obj", PART + 1)
        assert await keys(storage, "pending/") == ["pending/obj"]
        assert await backend.leftovers() == []

    async def test_streaming_write_in_random_pieces(
        self, backend: Backend, storage: Storage
    ) -> None:
        data = payload(30 * MiB + 4321, seed=7)
        writer = storage.open_writer("stream/big.tar.gz")
        await write_in_pieces(writer, data)
        info = await writer.commit()
        assert info.size == len(data)
        assert (await storage.stat("stream/big.tar.gz")).size == len(data)
        assert await read_all(storage, "stream/big.tar.gz") == data
        parts = await backend.part_count("stream/big.tar.gz")
        assert parts is None or parts == 7  # 6 full 5 MiB parts and the rest
        assert await backend.leftovers() == []

    async def test_reserve_and_fill_across_parts(self, backend: Backend, storage: Storage) -> None:
        data = bytearray(payload(3 * PART + 999, seed=3))
        regions = {
            "start": (0, 512),
            "inside a part": (PART + 1000, 512),
            "straddling two parts": (2 * PART - 200, 512),
            "in the last part": (3 * PART + 100, 512),
        }
        writer = storage.open_writer("reserved")
        offsets: dict[str, int] = {}
        pos = 0
        for name, (start, length) in sorted(regions.items(), key=lambda item: item[1]):
            await write_in_pieces(writer, bytes(data[pos:start]), seed=start)
            offsets[name] = await writer.reserve(b"\xee" * length)
            assert offsets[name] == start
            pos = start + length
        await write_in_pieces(writer, bytes(data[pos:]))
        assert writer.position == len(data)
        for name in ["straddling two parts", "in the last part", "start", "inside a part"]:
            start, length = regions[name]
            await writer.fill(offsets[name], bytes(data[start : start + length]))
        await writer.commit()
        assert await read_all(storage, "reserved") == data
        assert await backend.leftovers() == []

    async def test_fill_checks_its_arguments(self, backend: Backend, storage: Storage) -> None:
        writer = storage.open_writer("checked")
        await writer.write(b"abc")
        offset = await writer.reserve(b"....")
        with pytest.raises(StorageError, match="holds 4 bytes"):
            await writer.fill(offset, b"toolong")
        with pytest.raises(StorageError):
            await writer.commit()  # the failure aborted the writer
        second = storage.open_writer("checked")
        with pytest.raises(StorageError, match="no unfilled reservation"):
            await second.fill(1, b"x")
        third = storage.open_writer("checked")
        offset = await third.reserve(b"..")
        await third.fill(offset, b"ok")
        with pytest.raises(StorageError, match="no unfilled reservation"):
            await third.fill(offset, b"ok")  # filled already
        with pytest.raises(ObjectNotFound):
            await storage.stat("checked")
        assert await backend.leftovers() == []

    async def test_commit_with_unfilled_reservation_fails(
        self, backend: Backend, storage: Storage
    ) -> None:
        writer = storage.open_writer("unfilled")
        await writer.reserve(b"\0" * 512)
        await writer.write(payload(2 * PART))
        with pytest.raises(StorageError, match="never filled"):
            await writer.commit()
        with pytest.raises(ObjectNotFound):
            await storage.stat("unfilled")
        assert await keys(storage) == []
        assert await backend.leftovers() == []

    # -- unfinished writes -------------------------------------------------------

    async def test_uploads_lists_unfinished_writes_at_one_level(
        self, backend: Backend, storage: Storage
    ) -> None:
        top = storage.open_writer("top")
        deep = storage.open_writer("below/obj")
        await top.write(payload(PART + 1))
        await deep.write(payload(PART + 1))
        listed = [u async for u in storage.uploads()]
        assert [u.key for u in listed] == ["top"]
        assert listed[0].last_active is not None
        assert [u.key async for u in storage.uploads("below/")] == ["below/obj"]
        assert [u.key async for u in storage.uploads("x")] == []
        await top.commit()
        await deep.abort()
        assert [u async for u in storage.uploads()] == []
        assert [u async for u in storage.uploads("below/")] == []
        assert await backend.leftovers() == []

    async def test_abort_upload_discards_a_live_write(
        self, backend: Backend, storage: Storage
    ) -> None:
        writer = storage.open_writer("orphan")
        await writer.write(payload(PART + 1))
        # The part goes up in the background. Abort only once the server
        # lists it: a part still in flight during the abort may re-create
        # the upload on some servers (versitygw keeps uploads as
        # directories), which a stale upload, the only kind abort is for,
        # never has.
        upload = await _once_written(storage, "orphan")
        await storage.abort_upload(upload)
        await storage.abort_upload(upload)  # already gone: not an error
        assert [u async for u in storage.uploads()] == []
        assert await backend.leftovers() == []
        with pytest.raises(StorageError):
            await writer.commit()
        with pytest.raises(ObjectNotFound):
            await storage.stat("orphan")
        assert await backend.leftovers() == []

    # -- leaving early ---------------------------------------------------------

    async def test_exception_inside_async_with(self, backend: Backend, storage: Storage) -> None:
        with pytest.raises(RuntimeError, match="producer failed"):
            async with storage.open_writer("failed") as writer:
                await writer.write(payload(2 * PART + 5))
                raise RuntimeError("producer failed")
        with pytest.raises(ObjectNotFound):
            await storage.stat("failed")
        assert await backend.leftovers() == []

    async def test_async_with_without_commit_aborts(
        self, backend: Backend, storage: Storage
    ) -> None:
        async with storage.open_writer("forgotten") as writer:
            await writer.write(payload(PART + 5))
        with pytest.raises(ObjectNotFound):
            await storage.stat("forgotten")
        assert await backend.leftovers() == []

    async def test_async_with_commit(self, storage: Storage) -> None:
        async with storage.open_writer("kept") as writer:
            await writer.write(b"data")
            await writer.commit()
        assert await storage.read_bytes("kept", limit=10) == b"data"
        await writer.abort()  # after commit: nothing to do, the object stays
        assert await storage.read_bytes("kept", limit=10) == b"data"

    async def test_abort_is_idempotent(self, backend: Backend, storage: Storage) -> None:
        writer = storage.open_writer("aborted")
        await writer.write(payload(PART + 1))
        await writer.abort()
        await writer.abort()
        with pytest.raises(StorageError, match="aborted"):
            await writer.write(b"x")
        with pytest.raises(ObjectNotFound):
            await storage.stat("aborted")
        assert await backend.leftovers() == []

    async def test_cancellation_mid_upload(self, backend: Backend, storage: Storage) -> None:
        written = asyncio.Event()

        async def produce() -> None:
            async with storage.open_writer("cancelled") as writer:
                offset = await writer.reserve(b"\0" * 64)
                for i in range(40):
                    await writer.write(payload(MiB, seed=i))
                    if writer.position > 3 * PART:
                        written.set()
                    await asyncio.sleep(0)
                await writer.fill(offset, b"\1" * 64)
                await writer.commit()

        task = asyncio.create_task(produce())
        await asyncio.wait_for(written.wait(), 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(ObjectNotFound):
            await storage.stat("cancelled")
        assert await backend.leftovers() == []

    async def test_cancellation_during_commit(self, backend: Backend, storage: Storage) -> None:
        writer = storage.open_writer("cancelled-commit")
        await writer.write(payload(3 * PART + 1))
        task = asyncio.create_task(writer.commit())
        await asyncio.sleep(0)  # let commit start
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            with pytest.raises(ObjectNotFound):
                await storage.stat("cancelled-commit")
        else:
            # Only the in-memory backend commits without an await point.
            assert isinstance(storage, MemoryStorage)
            assert (await storage.stat("cancelled-commit")).size == 3 * PART + 1
        assert await backend.leftovers() == []


class TestMemory(Conformance):
    @pytest.fixture
    def backend(self) -> Backend:
        return Backend(MemoryStorage(), _nothing_left)


async def _nothing_left() -> list[str]:
    return []


class TestLocal(Conformance):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Backend:
        root = tmp_path / "store"

        async def leftovers() -> list[str]:
            partial = [str(p.relative_to(root)) for p in root.rglob(".*.partial")]
            empty_dirs = [
                str(p.relative_to(root)) + "/"
                for p in root.rglob("*")
                if p.is_dir() and not any(p.iterdir())
            ]
            return partial + empty_dirs

        return Backend(LocalStorage(root), leftovers)


class TestS3(Conformance):
    @pytest.fixture
    async def backend(self, s3_endpoint: Any, new_bucket: Any) -> AsyncIterator[Backend]:
        bucket = new_bucket(s3_endpoint)
        config = S3Config(
            endpoint_url=s3_endpoint.endpoint_url,
            region=s3_endpoint.region,
            access_key_id=s3_endpoint.access_key,
            secret_access_key=s3_endpoint.secret_key,
            addressing_style="path",
            part_size=PART,
            max_concurrency=3,
        )
        storage = S3Storage(bucket, "tests/prefix", config)

        async def leftovers() -> list[str]:
            client = await storage.client()
            answer = await client.list_multipart_uploads(Bucket=bucket)
            return [upload["Key"] for upload in answer.get("Uploads", [])]

        async def part_count(key: str) -> int | None:
            client = await storage.client()
            head = await client.head_object(Bucket=bucket, Key=f"tests/prefix/{key}")
            etag = head["ETag"].strip('"')
            return int(etag.rsplit("-", 1)[1]) if "-" in etag else 1

        await storage.check()
        yield Backend(storage, leftovers, part_count)
        await storage.aclose()
