"""S3Storage: objects in an S3 bucket, on AWS or any S3-compatible server.

Streaming writes use a multipart upload whose part size grows with the
object (see ``part_size``), at most ``max_concurrency`` parts in flight. Every
failure or cancellation aborts the upload: no orphaned parts stay billed.
New objects are created with ``If-None-Match: *`` so nothing is overwritten;
on a server that answers that header with 501 Not Implemented, a HEAD check
just before creation takes its place. That check leaves a short race: an
object written by someone else between the HEAD and the completion is
overwritten. Servers that silently ignore the header cannot be detected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from aiobotocore.session import AioSession
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ProfileNotFound

from .._errors import ObjectExists, ObjectNotFound, StorageError, UsageError
from ._keys import CHUNK_SIZE, check_key, check_range
from ._s3_errors import (
    TRANSPORT_ERRORS,
    error_code,
    is_bare_head_error,
    is_not_implemented,
    translate,
)
from ._s3_writer import MAX_PART_SIZE, MIN_PART_SIZE, S3Writer
from .base import ObjectInfo

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger("mongosnap.storage")

MiB = 1024 * 1024


@dataclass(frozen=True)
class S3Config:
    """How to reach S3. Every field is optional; the defaults suit AWS.

    endpoint_url: None means AWS, or whatever the standard AWS_ENDPOINT_URL_S3 /
        AWS_ENDPOINT_URL environment variables name (botocore reads them).
    region, profile: as in the AWS config files; None uses the usual chain.
    addressing_style: "auto", "path" (most self-hosted servers) or "virtual".
    access_key_id, secret_access_key, session_token: explicit credentials;
        None uses the standard chain (environment, profile, instance role).
        Never shown by repr().
    sse: None, "AES256" or "aws:kms" (with sse_kms_key_id, or the AWS key).
    storage_class: e.g. "STANDARD_IA"; None is the bucket's default.
    checksum: "when_supported" (botocore's CRC32 on every upload) or
        "when_required" (only where an operation demands one; what many
        S3-compatible servers need). None: "when_required" when an endpoint
        is configured, here or in the environment, else "when_supported"; an
        AWS_REQUEST_CHECKSUM_CALCULATION variable is then left to botocore.
    connect_timeout, read_timeout: seconds. max_attempts: per request,
        retries included (botocore "standard" retry mode).
    part_size: first part size of a streamed upload, 5 MiB to 5 GiB; parts
        double every 1000 (see ``part_size`` in this module).
    max_concurrency: parts uploading at once, and never more than
        ``max_in_flight`` bytes of them (at least one part): a writer holds
        the parts in flight, the part it is filling, and a part held back by
        an unfilled reservation.
    max_in_flight: bytes of parts uploading at once (default 64 MiB), so the
        larger parts of a very large upload do not multiply memory.
    """

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    sse: Literal["AES256", "aws:kms"] | None = None
    sse_kms_key_id: str | None = None
    storage_class: str | None = None
    checksum: Literal["when_supported", "when_required"] | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_attempts: int = 5
    part_size: int = 8 * MiB
    max_concurrency: int = 4
    max_in_flight: int = 64 * MiB

    def __post_init__(self) -> None:
        if self.endpoint_url is not None:
            parts = urlsplit(self.endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UsageError("endpoint_url must be an http:// or https:// URL")
            if parts.username is not None or parts.password is not None:
                raise UsageError("endpoint_url must not hold credentials")
        if self.addressing_style not in ("auto", "path", "virtual"):
            raise UsageError(
                f"addressing_style must be auto, path or virtual, not {self.addressing_style!r}"
            )
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise UsageError("give both access_key_id and secret_access_key, or neither")
        if self.sse not in (None, "AES256", "aws:kms"):
            raise UsageError(f"sse must be AES256 or aws:kms, not {self.sse!r}")
        if self.sse_kms_key_id is not None and self.sse != "aws:kms":
            raise UsageError("sse_kms_key_id needs sse='aws:kms'")
        if self.checksum not in (None, "when_supported", "when_required"):
            raise UsageError(
                f"checksum must be when_supported or when_required, not {self.checksum!r}"
            )
        if not MIN_PART_SIZE <= self.part_size <= MAX_PART_SIZE:
            raise UsageError(f"part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes")
        if self.max_concurrency < 1 or self.max_attempts < 1 or self.max_in_flight < 1:
            raise UsageError("max_concurrency, max_in_flight and max_attempts must be at least 1")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise UsageError("timeouts must be positive")

    def checksum_mode(self) -> str | None:
        """The checksum setting to give botocore (None: leave it to botocore)."""
        if self.checksum is not None:
            return self.checksum
        if os.environ.get("AWS_REQUEST_CHECKSUM_CALCULATION"):
            return None
        custom = (
            self.endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        return "when_required" if custom else "when_supported"

    def botocore_config(self) -> Config:
        options: dict[str, Any] = {
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "retries": {"total_max_attempts": self.max_attempts, "mode": "standard"},
            "s3": {"addressing_style": self.addressing_style},
            "max_pool_connections": max(10, 2 * self.max_concurrency),
            "user_agent_extra": "mongosnap",
        }
        if self.region:
            options["region_name"] = self.region
        mode = self.checksum_mode()
        if mode is not None:
            options["request_checksum_calculation"] = mode
            options["response_checksum_validation"] = mode
        return Config(**options)


class S3Storage:
    """Objects under ``prefix/`` in ``bucket``. Use ``async with`` or aclose()."""

    def __init__(self, bucket: str, prefix: str = "", config: S3Config | None = None) -> None:
        if not bucket or "/" in bucket:
            raise UsageError(f"invalid bucket name {bucket!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.config = config or S3Config()
        self._root = f"{self.prefix}/" if self.prefix else ""
        self._client: S3Client | None = None
        self._stack: AsyncExitStack | None = None
        self._lock = asyncio.Lock()
        self._conditional_writes = True

    def __repr__(self) -> str:
        return f"S3Storage({self.url!r}, endpoint={self.host!r})"

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def host(self) -> str:
        """The endpoint's host (and port), for messages."""
        endpoint = self._client.meta.endpoint_url if self._client else self.config.endpoint_url
        return urlsplit(endpoint).netloc if endpoint else "AWS S3"

    async def check(self) -> None:
        client = await self.client()
        try:
            await client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if is_bare_head_error(exc):
                await self._probe()  # a HEAD has no error body: ask again with a GET
            raise self._error(exc, None) from exc
        except TRANSPORT_ERRORS as exc:
            raise self._error(exc, None) from exc

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        client = await self.client()
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._root + prefix
        )
        with self._translating(None):
            async for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"][len(self._root) :]
                    yield ObjectInfo(key, item["Size"], item.get("LastModified"))

    async def stat(self, key: str) -> ObjectInfo:
        name = self._name(key)
        client = await self.client()
        try:
            head = await client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if is_bare_head_error(exc):
                await self._probe()
            raise self._error(exc, key) from exc
        except TRANSPORT_ERRORS as exc:
            raise self._error(exc, key) from exc
        return ObjectInfo(key, head["ContentLength"], head.get("LastModified"))

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        check_range(start, end)
        name = self._name(key)
        if end == start:
            await self.stat(key)
            return
        extra: dict[str, Any] = {}
        if start or end is not None:
            extra["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        client = await self.client()
        try:
            response = await client.get_object(Bucket=self.bucket, Key=name, **extra)
        except ClientError as exc:
            if error_code(exc) == "InvalidRange":
                return  # the object exists and ends before start
            raise self._error(exc, key) from exc
        except TRANSPORT_ERRORS as exc:
            raise self._error(exc, key) from exc
        with self._translating(key):
            async with response["Body"] as body:
                while chunk := await body.read(CHUNK_SIZE):
                    yield chunk

    async def read_bytes(self, key: str, *, limit: int) -> bytes:
        client = await self.client()
        with self._translating(key):
            response = await client.get_object(Bucket=self.bucket, Key=self._name(key))
            async with response["Body"] as body:
                if response["ContentLength"] > limit:
                    raise StorageError(
                        f"{self._where(key)} holds {response['ContentLength']} bytes,"
                        f" over the {limit} limit"
                    )
                data: bytes = await body.read()
                return data

    async def put(self, key: str, data: bytes) -> ObjectInfo:
        name = self._name(key)
        client = await self.client()
        body = bytes(data)
        await self.create_new(
            key, lambda **cond: client.put_object(**self.object_args(name), Body=body, **cond)
        )
        return ObjectInfo(key, len(body))

    def open_writer(self, key: str) -> S3Writer:
        return S3Writer(self, key)

    async def delete(self, key: str) -> None:
        client = await self.client()
        with self._translating(key):
            await client.delete_object(Bucket=self.bucket, Key=self._name(key))

    async def aclose(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> S3Storage:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- used by S3Writer ------------------------------------------------------

    async def client(self) -> S3Client:
        """The aiobotocore client, created on first use in the running loop."""
        async with self._lock:
            if self._client is None:
                self._client = await self._open_client()
            return self._client

    def object_args(self, name: str) -> dict[str, Any]:
        """Bucket, key and the settings every new object gets."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": name}
        if self.config.sse:
            args["ServerSideEncryption"] = self.config.sse
        if self.config.sse_kms_key_id:
            args["SSEKMSKeyId"] = self.config.sse_kms_key_id
        if self.config.storage_class:
            args["StorageClass"] = self.config.storage_class
        return args

    def sends_checksums(self) -> bool:
        """Whether uploads carry CRC32 checksums (botocore's when_supported)."""
        assert self._client is not None
        return bool(self._client.meta.config.request_checksum_calculation == "when_supported")

    async def create_new(self, key: str, request: Callable[..., Awaitable[object]]) -> None:
        """Run a request that creates the object key, refusing to overwrite.

        request(**cond) is PutObject or CompleteMultipartUpload; cond is
        IfNoneMatch="*" unless the server is known not to implement it.
        """
        if self._conditional_writes:
            try:
                await request(IfNoneMatch="*")
                return
            except ClientError as exc:
                if not is_not_implemented(exc):
                    raise self._error(exc, key) from exc
            except TRANSPORT_ERRORS as exc:
                raise self._error(exc, key) from exc
            self._conditional_writes = False
            log.info("%s does not implement If-None-Match; checking with HEAD", self.host)
        with contextlib.suppress(ObjectNotFound):
            await self.stat(key)
            raise ObjectExists(f"{self._where(key)} already exists")
        with self._translating(key):
            await request()

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload; repeat once if parts arrived meanwhile."""
        client = await self.client()
        name = self._name(key)
        for _ in range(2):
            try:
                await client.abort_multipart_upload(
                    Bucket=self.bucket, Key=name, UploadId=upload_id
                )
                listing = await client.list_parts(Bucket=self.bucket, Key=name, UploadId=upload_id)
            except ClientError as exc:
                if error_code(exc) == "NoSuchUpload":
                    return
                raise self._error(exc, key) from exc
            except TRANSPORT_ERRORS as exc:
                raise self._error(exc, key) from exc
            if not listing.get("Parts"):
                return
        raise StorageError(
            f"upload {upload_id} of {self._where(key)} still holds parts after abort"
        )

    @contextlib.contextmanager
    def _translating(self, key: str | None) -> Iterator[None]:
        try:
            yield
        except (ClientError, *TRANSPORT_ERRORS) as exc:
            raise self._error(exc, key) from exc

    # -- internals -------------------------------------------------------------

    async def _open_client(self) -> S3Client:
        cfg = self.config
        stack = AsyncExitStack()
        try:
            session = AioSession(profile=cfg.profile)
            client: S3Client = await stack.enter_async_context(
                session.create_client(
                    "s3",
                    endpoint_url=cfg.endpoint_url,
                    aws_access_key_id=cfg.access_key_id,
                    aws_secret_access_key=cfg.secret_access_key,
                    aws_session_token=cfg.session_token,
                    config=cfg.botocore_config(),
                )
            )
        except ProfileNotFound as exc:
            raise UsageError(f"AWS profile {cfg.profile!r} not found") from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot set up the S3 client for {self.url}: {exc}") from exc
        self._stack = stack
        return client

    async def _probe(self) -> None:
        """Raise the precise error a bucket-level GET gives, if any."""
        client = await self.client()
        with self._translating(None):
            await client.list_objects_v2(Bucket=self.bucket, Prefix=self._root, MaxKeys=1)

    def _name(self, key: str) -> str:
        return self._root + check_key(key)

    def _where(self, key: str | None) -> str:
        return self.url if key is None else f"{self.url}/{key}"

    def _error(self, exc: BaseException, key: str | None) -> StorageError:
        return translate(exc, bucket=self.bucket, where=self._where(key), host=self.host)
