"""The S3 bodies: the bytes each part carries, their ETags, aborts, no 100-continue.

Parts are handed to the client as the writer's own buffers (no copy); these
tests check, on both test servers, that every part holds exactly its slice of
the stream, reservations filled in, that the server's ETags are those of
those slices, and that a failure of a part held back for a reservation still
aborts the whole upload.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from faultproxy import FaultProxy
from helpers import s3_config
from s3_faults import FaultyClient

from mongosnap._errors import ObjectNotFound, StorageError
from mongosnap.storage import S3Config, S3Storage
from mongosnap.storage._s3_writer import part_size

MiB = 1024 * 1024
PART = 5 * MiB


class _PartRecorder(FaultyClient):
    """Keeps what each UploadPart was given and what the server answered."""

    def __init__(self, client: Any, **faults: Any) -> None:
        super().__init__(client, **faults)
        self.bodies: dict[int, Any] = {}
        self.sent: dict[int, bytes] = {}
        self.etags: dict[int, str] = {}

    async def upload_part(self, **kwargs: Any) -> Any:
        number = kwargs["PartNumber"]
        self.bodies[number] = kwargs["Body"]
        self.sent[number] = bytes(kwargs["Body"])
        answer = await super().upload_part(**kwargs)
        self.etags[number] = answer["ETag"]
        return answer


def _config(endpoint: Any, **overrides: Any) -> S3Config:
    defaults: dict[str, Any] = {"part_size": PART, "max_concurrency": 2, "max_attempts": 1}
    return s3_config(endpoint, **(defaults | overrides))


@pytest.fixture
async def s3(s3_endpoint: Any, new_bucket: Any) -> AsyncIterator[S3Storage]:
    async with S3Storage(new_bucket(s3_endpoint), "p", _config(s3_endpoint)) as storage:
        yield storage


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _slices(data: bytes) -> list[bytes]:
    """The parts the schedule cuts ``data`` into."""
    parts, start, number = [], 0, 1
    while start < len(data):
        size = part_size(number, PART)
        parts.append(data[start : start + size])
        start, number = start + size, number + 1
    return parts


async def test_parts_carry_exactly_their_slice_and_its_etag(s3: S3Storage) -> None:
    recorder = await _PartRecorder.install(s3)
    data = random.Random(7).randbytes(3 * PART + 777_777)
    # A reservation across the boundary of parts 1 and 2 holds both back
    # until it is filled; the writes come in odd sizes, as compressed chunks do.
    reserved_at, reserved_len = PART - 1000, 3000
    writer = s3.open_writer("parts")
    position = 0
    rng = random.Random(8)
    while position < len(data):
        if position == reserved_at:
            assert await writer.reserve(b"\0" * reserved_len) == reserved_at
            position += reserved_len
            continue
        end = min(position + rng.randrange(1, 400_000), len(data))
        if position < reserved_at < end:
            end = reserved_at
        await writer.write(data[position:end])
        position = end
    await writer.fill(reserved_at, data[reserved_at : reserved_at + reserved_len])
    await writer.commit()

    expected = _slices(data)
    assert len(expected) == 4
    assert recorder.sent == dict(enumerate(expected, start=1))
    assert all(isinstance(body, bytearray) for body in recorder.bodies.values())
    assert recorder.etags == {n: f'"{_md5(p)}"' for n, p in enumerate(expected, start=1)}
    client = await s3.client()
    head = await client.head_object(Bucket=s3.bucket, Key="p/parts")
    digests = b"".join(hashlib.md5(p, usedforsecurity=False).digest() for p in expected)
    assert head["ETag"] == f'"{_md5(digests)}-{len(expected)}"'
    assert await s3.read_bytes("parts", limit=len(data)) == data


async def test_a_small_object_is_one_put_of_its_bytes(s3: S3Storage) -> None:
    recorder = await _PartRecorder.install(s3)
    data = random.Random(9).randbytes(PART - 1)
    async with s3.open_writer("small") as writer:
        for start in range(0, len(data), 1 << 20):
            await writer.write(data[start : start + (1 << 20)])
        await writer.commit()
    assert recorder.sent == {}
    assert recorder.calls.count("put_object") == 1
    assert await s3.read_bytes("small", limit=len(data)) == data


async def test_a_failed_held_part_aborts_the_upload(s3: S3Storage) -> None:
    # Part 1 waits for its reservation while parts 2 and 3 go up; it fails
    # once the fill launches it: the upload, parts 2-3 included, is aborted.
    faulty = await FaultyClient.install(s3, fail_part=1)
    writer = s3.open_writer("held")
    offset = await writer.reserve(b"\0" * 100)
    data = random.Random(10).randbytes(3 * PART)
    await writer.write(data[100:])
    with pytest.raises(StorageError, match="InternalError"):
        await writer.fill(offset, data[:100])
        await writer.commit()
    assert "abort_multipart_upload" in faulty.calls
    client = await s3.client()
    assert (await client.list_multipart_uploads(Bucket=s3.bucket)).get("Uploads", []) == []
    with pytest.raises(ObjectNotFound):
        await s3.stat("held")


async def test_bodies_go_without_waiting_for_100_continue(s3: S3Storage) -> None:
    # A file-object body would be sent with "Expect: 100-continue": a round
    # trip before each PutObject and UploadPart body.
    client = await s3.client()
    sent: list[tuple[str, str | None]] = []

    def record(request: Any, **_: Any) -> None:
        sent.append((request.method, request.headers.get("Expect")))

    client.meta.events.register("before-send.s3", record)
    await s3.put("small", b"{}")
    async with s3.open_writer("large") as writer:
        await writer.write(random.Random(11).randbytes(PART + 1))
        await writer.commit()
    assert [expect for method, expect in sent if method == "PUT"] == [None, None, None]


async def test_a_part_cut_off_midway_is_sent_again_whole(s3_endpoint: Any, new_bucket: Any) -> None:
    # botocore retries a part whose connection is reset halfway: the same
    # buffer is signed and written again from its first byte.
    target = urlsplit(s3_endpoint.endpoint_url)
    assert target.hostname is not None and target.port is not None
    bucket = new_bucket(s3_endpoint)
    data = random.Random(12).randbytes(2 * PART + 5)
    with FaultProxy((target.hostname, target.port)) as proxy:
        config = _config(s3_endpoint, endpoint_url=f"http://{proxy.address}", max_attempts=3)
        async with S3Storage(bucket, "p", config) as storage:
            proxy.reset_after(up=PART // 2, count=3)  # any connection carrying a part
            async with storage.open_writer("retried") as writer:
                await writer.write(data)
                await writer.commit()
            assert proxy.counters.resets >= 1
            assert proxy.counters.bytes_up > len(data) + PART // 2  # resent
            assert await storage.read_bytes("retried", limit=len(data)) == data
