"""S3-only behaviour: error translation, credentials, faults, the part schedule.

Server tests run on both test servers (moto and versitygw) through the shared
``s3_endpoint`` fixture. Observed differences are asserted, not hidden: moto's
server mode accepts any credentials, versitygw answers an unknown access key
with its own XAdminUserNotFound (HTTP 404) and ignores SSE and storage classes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError, NoCredentialsError
from s3_faults import FaultyClient, client_error

from mongosnap._errors import (
    AccessDenied,
    BucketNotFound,
    ObjectArchived,
    ObjectExists,
    ObjectNotFound,
    StorageError,
    UsageError,
)
from mongosnap.storage import S3Config, S3Storage, _s3_writer
from mongosnap.storage._s3_errors import translate
from mongosnap.storage._s3_writer import (
    MAX_PART_SIZE,
    MAX_PARTS,
    object_size_ceiling,
    part_size,
)

MiB = 1024 * 1024
GiB = 1024 * MiB
TiB = 1024 * GiB
PART = 5 * MiB


def config_for(endpoint: Any, **overrides: Any) -> S3Config:
    fields: dict[str, Any] = {
        "endpoint_url": endpoint.endpoint_url,
        "region": endpoint.region,
        "access_key_id": endpoint.access_key,
        "secret_access_key": endpoint.secret_key,
        "addressing_style": "path",
        "part_size": PART,
        "max_concurrency": 2,
        "max_attempts": 1,
    }
    fields.update(overrides)
    return S3Config(**fields)


@pytest.fixture
async def s3(s3_endpoint: Any, new_bucket: Any) -> AsyncIterator[S3Storage]:
    async with S3Storage(new_bucket(s3_endpoint), "p", config_for(s3_endpoint)) as storage:
        yield storage


async def pending_uploads(storage: S3Storage) -> list[str]:
    client = await storage.client()
    answer = await client.list_multipart_uploads(Bucket=storage.bucket)
    return [upload["Key"] for upload in answer.get("Uploads", [])]


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


# -- the part-size schedule -------------------------------------------------------


def test_part_size_schedule() -> None:
    base = 8 * MiB
    assert [part_size(n, base) for n in (1, 1000, 1001, 2000, 2001)] == [
        base,
        base,
        2 * base,
        2 * base,
        4 * base,
    ]
    assert part_size(MAX_PARTS, base) == 512 * base == 4 * GiB
    assert part_size(MAX_PARTS, 64 * MiB) == MAX_PART_SIZE  # capped at 5 GiB
    assert all(part_size(n, 5 * MiB) >= 5 * MiB for n in range(1, MAX_PARTS + 1))


def test_part_schedule_ceiling() -> None:
    def total(base: int) -> int:
        return sum(part_size(n, base) for n in range(1, MAX_PARTS + 1))

    # The default 8 MiB start reaches past S3's 5 TiB object limit ...
    assert object_size_ceiling(8 * MiB) == total(8 * MiB) == 8 * MiB * 1000 * 1023
    assert object_size_ceiling(8 * MiB) > 5 * TiB
    # ... the smallest allowed start stops at ~4.9 TiB (documented), and
    # 8 MiB parts at a constant size would stop at ~78 GiB.
    assert 4.8 * TiB < object_size_ceiling(5 * MiB) < 5 * TiB
    assert object_size_ceiling(5 * GiB) == MAX_PARTS * 5 * GiB


async def test_outgrowing_the_part_limit_aborts(
    s3: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_s3_writer, "MAX_PARTS", 2)
    writer = s3.open_writer("too-big")
    with pytest.raises(StorageError, match="outgrows"):
        await writer.write(payload(3 * PART))
    assert await pending_uploads(s3) == []


# -- configuration -----------------------------------------------------------------


def test_config_repr_hides_secrets() -> None:
    config = S3Config(
        access_key_id="AKIAEXAMPLEKEY", secret_access_key="s3cr3t", session_token="t0ken"
    )
    text = repr(config) + repr(S3Storage("bucket", "", config))
    for secret in ("AKIAEXAMPLEKEY", "s3cr3t", "t0ken"):
        assert secret not in text


@pytest.mark.parametrize(
    "fields",
    [
        {"part_size": 4 * MiB},
        {"part_size": 6 * GiB},
        {"max_concurrency": 0},
        {"access_key_id": "only-the-id"},
        {"sse": "rot13"},
        {"sse_kms_key_id": "k"},
        {"endpoint_url": "ftp://example.org"},
        {"endpoint_url": "http://user:pass@example.org"},
        {"addressing_style": "sideways"},
        {"checksum": "always"},
    ],
)
def test_config_rejects_bad_values(fields: dict[str, Any]) -> None:
    with pytest.raises(UsageError) as caught:
        S3Config(**fields)
    assert "pass" not in str(caught.value)


def test_checksum_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REQUEST_CHECKSUM_CALCULATION"):
        monkeypatch.delenv(name, raising=False)
    assert S3Config().checksum_mode() == "when_supported"
    assert S3Config(endpoint_url="http://127.0.0.1:9").checksum_mode() == "when_required"
    assert S3Config(checksum="when_supported", endpoint_url="http://h").checksum_mode() == (
        "when_supported"
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    assert S3Config().checksum_mode() == "when_required"
    config = S3Config(endpoint_url="http://127.0.0.1:9").botocore_config()
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_supported")
    assert S3Config().checksum_mode() is None  # botocore reads the variable itself


async def test_endpoint_from_environment(
    s3_endpoint: Any, new_bucket: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint.endpoint_url)
    config = config_for(s3_endpoint, endpoint_url=None)
    async with S3Storage(new_bucket(s3_endpoint), "", config) as storage:
        await storage.put("via-env", b"1")
        assert (await storage.stat("via-env")).size == 1
        assert storage.host == s3_endpoint.endpoint_url.split("://", 1)[1]


@pytest.mark.parametrize("checksum", ["when_supported", "when_required"])
async def test_checksum_modes_on_multipart_uploads(
    s3_endpoint: Any, new_bucket: Any, checksum: str
) -> None:
    config = config_for(s3_endpoint, checksum=checksum)
    async with S3Storage(new_bucket(s3_endpoint), "", config) as storage:
        data = payload(2 * PART + 3)
        writer = storage.open_writer("summed")
        await writer.write(data)
        await writer.commit()
        await storage.put("small", b"abc")
        assert b"".join([c async for c in storage.read("summed")]) == data
        assert await storage.read_bytes("small", limit=3) == b"abc"


async def test_object_settings_are_sent(s3_endpoint: Any, new_bucket: Any) -> None:
    bucket = new_bucket(s3_endpoint)
    config = config_for(s3_endpoint, sse="AES256", storage_class="STANDARD_IA")
    async with S3Storage(bucket, "", config) as storage:
        await storage.put("small", b"x")
        writer = storage.open_writer("large")
        await writer.write(payload(PART + 1))
        await writer.commit()
        client = await storage.client()
        for key in ("small", "large"):
            head = await client.head_object(Bucket=bucket, Key=key)
            if s3_endpoint.name == "moto":
                assert head["ServerSideEncryption"] == "AES256"
                assert head["StorageClass"] == "STANDARD_IA"
            else:  # versitygw accepts both headers and keeps neither
                assert head.get("StorageClass", "STANDARD") == "STANDARD"


# -- errors from the servers ---------------------------------------------------------


async def test_missing_bucket(s3_endpoint: Any) -> None:
    name = f"mongosnap-missing-{random.randrange(10**9)}"
    async with S3Storage(name, "p", config_for(s3_endpoint)) as storage:
        with pytest.raises(BucketNotFound, match=name):
            await storage.check()
        with pytest.raises(BucketNotFound):
            await storage.stat("k")  # a HEAD says only 404: asked again with a GET
        with pytest.raises(BucketNotFound):
            await storage.put("k", b"x")
        with pytest.raises(BucketNotFound):
            _ = [info async for info in storage.list()]
        with pytest.raises(BucketNotFound):
            _ = [chunk async for chunk in storage.read("k")]
        writer = storage.open_writer("k")
        with pytest.raises(BucketNotFound):
            await writer.write(payload(PART))  # the first part creates the upload


async def test_a_missing_key_in_a_probed_bucket_costs_one_head(s3: S3Storage) -> None:
    # Once a probe found the bucket, a HEAD's bare 404 is the key's: a backup's
    # name check does not pay a second listing.
    await s3.check()
    faulty = await FaultyClient.install(s3)
    with pytest.raises(ObjectNotFound):
        await s3.stat("absent")
    assert faulty.calls == ["head_object"]


@pytest.mark.parametrize("wrong", ["access_key_id", "secret_access_key"])
async def test_wrong_credentials(s3_endpoint: Any, new_bucket: Any, wrong: str) -> None:
    bucket = new_bucket(s3_endpoint)
    config = config_for(s3_endpoint, **{wrong: "wrong-" + wrong})
    async with S3Storage(bucket, "", config) as storage:
        if s3_endpoint.name == "moto":
            # moto's server mode does not authenticate requests: it accepts any
            # key. The mapping of the codes AWS sends is tested without a server.
            await storage.check()
            return
        for attempt in (
            storage.check(),
            storage.stat("k"),
            storage.put("k", b"x"),
            storage.read_bytes("k", limit=1),
        ):
            with pytest.raises(AccessDenied) as caught:
                await attempt
            assert "wrong-" not in str(caught.value)
            assert s3_endpoint.secret_key not in str(caught.value)


async def test_unreachable_endpoint() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once it is closed
    config = S3Config(
        endpoint_url=f"http://127.0.0.1:{port}",
        access_key_id="a",
        secret_access_key="b",
        region="us-east-1",
        max_attempts=1,
        connect_timeout=2,
    )
    async with S3Storage("bucket", "", config) as storage:
        with pytest.raises(StorageError, match=f"127.0.0.1:{port}") as caught:
            await storage.check()
    assert type(caught.value) is StorageError


def _translated(code: str, status: int, operation: str = "GetObject") -> type[Exception]:
    error = translate(client_error(code, status, operation), bucket="b", where="s3://b/k", host="h")
    return type(error)


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchBucket", 404, BucketNotFound),
        ("AccessDenied", 403, AccessDenied),
        ("InvalidAccessKeyId", 403, AccessDenied),
        ("SignatureDoesNotMatch", 403, AccessDenied),
        ("XAdminUserNotFound", 404, AccessDenied),
        ("403", 403, AccessDenied),
        ("NoSuchKey", 404, ObjectNotFound),
        ("404", 404, ObjectNotFound),
        ("PreconditionFailed", 412, ObjectExists),
        ("ConditionalRequestConflict", 409, ObjectExists),
        ("InvalidObjectState", 403, ObjectArchived),
        ("InternalError", 500, StorageError),
    ],
)
def test_error_translation(code: str, status: int, expected: type[Exception]) -> None:
    assert _translated(code, status) is expected


def test_transport_error_translation() -> None:
    unreachable = translate(
        EndpointConnectionError(endpoint_url="http://h:1/b"), bucket="b", where="w", host="h:1"
    )
    assert type(unreachable) is StorageError and "h:1" in str(unreachable)
    no_credentials = translate(NoCredentialsError(), bucket="b", where="s3://b", host="h")
    assert isinstance(no_credentials, AccessDenied)


# -- faults ----------------------------------------------------------------------------


async def test_parts_outside_reservations_upload_at_once(s3: S3Storage) -> None:
    faulty = await FaultyClient.install(s3)
    writer = s3.open_writer("held")
    offset = await writer.reserve(b"\0" * 100)
    data = payload(4 * PART)
    await writer.write(data[100:])
    # Four full parts: part 1 holds the reservation and stays in memory, parts
    # 2-4 go up without waiting for the fill.
    client = await s3.client()
    answer = await client.list_multipart_uploads(Bucket=s3.bucket)
    (upload,) = answer["Uploads"]
    uploaded: list[int] = []
    for _ in range(100):
        parts = await client.list_parts(
            Bucket=s3.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
        )
        uploaded = [p["PartNumber"] for p in parts.get("Parts", [])]
        if len(uploaded) == 3:
            break
        await asyncio.sleep(0.1)
    assert uploaded == [2, 3, 4]
    await writer.fill(offset, data[:100])
    await writer.commit()
    assert faulty.calls.count("upload_part") == 4
    assert b"".join([c async for c in s3.read("held")]) == data


async def test_failed_part_aborts_the_upload(s3: S3Storage) -> None:
    await FaultyClient.install(s3, fail_part=3)
    writer = s3.open_writer("broken")
    with pytest.raises(StorageError, match="InternalError"):
        for i in range(8):
            await writer.write(payload(PART, seed=i))
        await writer.commit()
    assert await pending_uploads(s3) == []
    with pytest.raises(ObjectNotFound):
        await s3.stat("broken")


async def test_cancellation_inside_write_aborts(s3: S3Storage) -> None:
    faulty = await FaultyClient.install(s3, part_delay=0.3)
    writer = s3.open_writer("slow")
    in_write = asyncio.Event()

    async def produce() -> None:
        for i in range(8):
            if i == 4:
                in_write.set()  # parts 1-2 are in flight: this write must wait
            await writer.write(payload(PART, seed=i))

    task = asyncio.create_task(produce())
    await in_write.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "abort_multipart_upload" in faulty.calls
    assert await pending_uploads(s3) == []
    with pytest.raises(StorageError, match="aborted"):
        await writer.write(b"x")


async def test_without_if_none_match_a_head_check_guards(s3: S3Storage) -> None:
    faulty = await FaultyClient.install(s3, reject_if_none_match=True)
    await s3.put("first", b"1")
    assert faulty.calls[:2] == ["PutObject rejected", "head_object"]
    with pytest.raises(ObjectExists):
        await s3.put("first", b"2")
    writer = s3.open_writer("first")
    await writer.write(payload(PART + 1))
    with pytest.raises(ObjectExists):
        await writer.commit()
    writer = s3.open_writer("second")
    await writer.write(payload(PART + 1))
    await writer.commit()
    assert faulty.calls.count("PutObject rejected") == 1  # remembered per storage
    assert await s3.read_bytes("first", limit=1) == b"1"
    assert (await s3.stat("second")).size == PART + 1
    assert await pending_uploads(s3) == []


# -- a 200 response with an error inside (CompleteMultipartUpload) --------------------


class _ErrorIn200(BaseHTTPRequestHandler):
    """Just enough S3 for one multipart upload whose completion fails inside a 200."""

    requests: list[str]
    protocol_version = "HTTP/1.1"  # answers "Expect: 100-continue" on part uploads

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _consume(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_POST(self) -> None:
        self._consume()
        if self.path.endswith("?uploads"):
            self.requests.append("create")
            body = (
                b"<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key>"
                b"<UploadId>U1</UploadId></InitiateMultipartUploadResult>"
            )
            self._reply(200, body)
        else:
            self.requests.append("complete")
            body = (
                b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
                b"<Message>We encountered an internal error.</Message></Error>"
            )
            self._reply(200, body)

    def do_PUT(self) -> None:
        self._consume()
        self.requests.append("part")
        self._reply(200, headers={"ETag": '"abc"'})

    def do_DELETE(self) -> None:
        self.requests.append("abort")
        self._reply(204)

    def do_GET(self) -> None:
        self.requests.append("list_parts")
        self._reply(
            404,
            b"<Error><Code>NoSuchUpload</Code><Message>gone</Message></Error>",
        )


@pytest.fixture
def error_in_200_server() -> Iterator[tuple[str, list[str]]]:
    requests: list[str] = []
    handler = type("Handler", (_ErrorIn200,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("attempts", [1, 2])
async def test_error_inside_a_200_completion_is_an_error(
    error_in_200_server: tuple[str, list[str]], attempts: int
) -> None:
    # botocore turns the 200 into a 500 (retried like one); the writer then aborts.
    url, requests = error_in_200_server
    config = S3Config(
        endpoint_url=url,
        access_key_id="a",
        secret_access_key="b",
        region="us-east-1",
        addressing_style="path",
        part_size=PART,
        max_attempts=attempts,
    )
    async with S3Storage("b", "", config) as storage:
        writer = storage.open_writer("k")
        await writer.write(payload(PART + 1))
        with pytest.raises(StorageError, match="InternalError"):
            await writer.commit()
    completions = ["complete"] * attempts
    assert requests == ["create", "part", "part", *completions, "abort", "list_parts"]


def test_messages_never_show_the_secret_of_an_endpoint_url() -> None:
    with pytest.raises(UsageError) as caught:
        S3Config(endpoint_url="https://AKIA:topsecret@s3.example.org")
    assert not re.search("topsecret|AKIA", str(caught.value))


class _PeakClient(FaultyClient):
    """Counts the part uploads running at once."""

    current = peak = 0

    async def upload_part(self, **kwargs: Any) -> Any:
        self.current += 1
        self.peak = max(self.peak, self.current)
        try:
            return await super().upload_part(**kwargs)
        finally:
            self.current -= 1


@pytest.mark.parametrize(("max_in_flight", "peak"), [(PART, 1), (2 * PART, 2), (64 * MiB, 4)])
async def test_bytes_in_flight_are_bounded(
    s3_endpoint: Any, new_bucket: Any, max_in_flight: int, peak: int
) -> None:
    config = config_for(s3_endpoint, max_concurrency=4, max_in_flight=max_in_flight)
    async with S3Storage(new_bucket(s3_endpoint), "p", config) as storage:
        client = await _PeakClient.install(storage, part_delay=0.2)
        data = payload(7 * PART + 123)
        async with storage.open_writer("bounded") as writer:
            await writer.write(data)
            await writer.commit()
        assert client.peak == peak
        assert await storage.read_bytes("bounded", limit=len(data)) == data


# -- settings the server ignores ------------------------------------------------------


@pytest.mark.parametrize("first", ["multipart", "put"])
async def test_ignored_sse_and_storage_class_are_warned_once(
    s3_endpoint: Any, new_bucket: Any, caplog: pytest.LogCaptureFixture, first: str
) -> None:
    # versitygw accepts both settings and applies neither; moto applies them.
    config = config_for(s3_endpoint, sse="AES256", storage_class="STANDARD_IA")
    with caplog.at_level(logging.WARNING, logger="mongosnap.storage"):
        async with S3Storage(new_bucket(s3_endpoint), "p", config) as storage:
            if first == "multipart":
                writer = storage.open_writer("big")
                await writer.write(payload(PART + 7))
                await writer.commit()
            for key in ("one", "two"):
                await storage.put(key, b"small")
            writer = storage.open_writer("another")
            await writer.write(payload(PART + 7))
            await writer.commit()
    warned = [
        r.getMessage()
        for r in caplog.records
        if r.name == "mongosnap.storage" and r.levelno >= logging.WARNING
    ]
    if s3_endpoint.name == "versitygw":
        assert len(warned) == 1, warned
        assert "AES256" in warned[0] and "STANDARD_IA" in warned[0], warned
        assert s3_endpoint.secret_key not in warned[0]
    else:
        assert warned == []
