"""S3Storage: objects in an S3 bucket, on AWS or any S3-compatible server.

Streaming writes use a multipart upload whose part size grows with the
object (see ``part_size``), at most ``max_concurrency`` parts in flight. Every
failure or cancellation aborts the upload, retrying for about a minute
(``ABORT_RETRY_DELAYS``); what a killed process or a longer outage leaves is
listed by ``uploads()`` and removed by ``abort_upload()``.
New objects are created with ``If-None-Match: *`` so nothing is overwritten;
on a server that answers that header with 501 Not Implemented, a HEAD check
just before creation takes its place. That check leaves a short race: an
object written by someone else between the HEAD and the completion is
overwritten. Servers that silently ignore the header cannot be detected.
When SSE or a storage class is configured and the server's answer shows it
was not applied, a warning is logged once per storage ("mongosnap.storage").

A storage is one level: ``list`` and ``uploads`` use the delimiter ``/`` and
never show keys under a deeper prefix.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from .._aio import shielded
from .._errors import StorageError, UsageError
from ._keys import CHUNK_SIZE, check_range
from ._s3_client import ABORT_RETRY_DELAYS, S3Client
from ._s3_config import S3Config
from ._s3_errors import TRANSPORT_ERRORS, error_code
from ._s3_writer import MAX_PARTS, S3Writer, content_md5
from .base import ObjectInfo, Retention, UploadInfo

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client as BotoS3Client

__all__ = ["S3Config", "S3Storage"]


class S3Storage:
    """Objects under ``prefix/`` in ``bucket``. Use ``async with`` or aclose()."""

    def __init__(self, bucket: str, prefix: str = "", config: S3Config | None = None) -> None:
        if not bucket or "/" in bucket:
            raise UsageError(f"invalid bucket name {bucket!r}")
        self._s3 = S3Client(bucket, prefix.strip("/"), config or S3Config())

    def __repr__(self) -> str:
        return f"S3Storage({self.url!r}, endpoint={self.host!r})"

    @property
    def bucket(self) -> str:
        return self._s3.bucket

    @property
    def prefix(self) -> str:
        return self._s3.prefix

    @property
    def config(self) -> S3Config:
        return self._s3.config

    @property
    def url(self) -> str:
        return self._s3.url

    @property
    def host(self) -> str:
        """The endpoint's host (and port), for messages."""
        return self._s3.host

    async def client(self) -> BotoS3Client:
        """The aiobotocore client, created on first use in the running loop."""
        return await self._s3.client()

    async def check_lock(self) -> datetime | None:
        """Raise LockUnavailable unless the bucket has Object Lock enabled; the
        server's clock when it said (its ``Date``)."""
        return await self._s3.check_lock()

    async def check(self) -> None:
        # A one-key listing under the prefix, not HeadBucket: HeadBucket needs
        # s3:ListBucket on the whole bucket, which a policy scoped to the
        # prefix (docs/operations.md, "Least privilege") does not grant.
        await self._s3.probe()

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        client = await self.client()
        root = self._s3.root
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=root + prefix, Delimiter="/"
        )
        with self._s3.translating(None):
            async for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"][len(root) :]
                    if "/" not in key[len(prefix) :]:
                        yield ObjectInfo(
                            key, item["Size"], item.get("LastModified"), item.get("StorageClass")
                        )

    async def stat(self, key: str) -> ObjectInfo:
        head = await self._s3.head(key)
        return ObjectInfo(
            key,
            head["ContentLength"],
            head.get("LastModified"),
            retain_until=head.get("ObjectLockRetainUntilDate"),
        )

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        check_range(start, end)
        name = self._s3.name(key)
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
            raise self._s3.error(exc, key) from exc
        except TRANSPORT_ERRORS as exc:
            raise self._s3.error(exc, key) from exc
        with self._s3.translating(key):
            async with response["Body"] as body:
                while chunk := await body.read(CHUNK_SIZE):
                    yield chunk

    async def read_bytes(self, key: str, *, limit: int) -> bytes:
        client = await self.client()
        with self._s3.translating(key):
            response = await client.get_object(Bucket=self.bucket, Key=self._s3.name(key))
            async with response["Body"] as body:
                if response["ContentLength"] > limit:
                    raise StorageError(
                        f"{self._s3.where(key)} holds {response['ContentLength']} bytes,"
                        f" over the {limit} limit"
                    )
                data: bytes = await body.read()
                return data

    async def put(self, key: str, data: bytes, *, retention: Retention | None = None) -> ObjectInfo:
        args = self._s3.object_args(key, retention)
        client = await self.client()
        # A bytearray, not bytes: botocore would turn bytes into a file object,
        # sent only after a round trip for "Expect: 100-continue".
        body = bytearray(data)
        if retention is not None:
            args["ContentMD5"] = content_md5(body)  # S3 demands it (or a checksum) with a lock
        await self._s3.create_new(key, lambda **cond: client.put_object(**args, Body=body, **cond))
        if retention is not None:
            await self._s3.ensure_locked(key, retention)
        return ObjectInfo(key, len(body))

    def open_writer(self, key: str, *, retention: Retention | None = None) -> S3Writer:
        return S3Writer(self._s3, key, retention)

    def shares_endpoint(self, other: object) -> bool:
        """Whether a server-side copy from ``other`` can work: an S3Storage on
        the same endpoint with the same credentials and settings."""
        return isinstance(other, S3Storage) and other.config == self.config

    async def copy_in(
        self, source: S3Storage, key: str, size: int, *, retention: Retention | None = None
    ) -> ObjectInfo:
        """Copy ``source``'s object ``key`` (``size`` bytes) here under the same
        key, server-side: a multipart upload of UploadPartCopy parts (up to
        5 GiB each, so any size works), completed without overwriting and
        aborted on any failure, like a streamed write."""
        client = await self.client()
        args = self._s3.object_args(key, retention)
        with self._s3.translating(key):
            upload_id = (await client.create_multipart_upload(**args))["UploadId"]
        try:
            parts = await self._copy_parts(source, key, size, upload_id)
            request = {**args, "UploadId": upload_id, "MultipartUpload": {"Parts": parts}}
            for name in ("ObjectLockMode", "ObjectLockRetainUntilDate", "StorageClass"):
                request.pop(name, None)
            for name in ("ServerSideEncryption", "SSEKMSKeyId"):
                request.pop(name, None)
            await self._s3.create_new(
                key, lambda **cond: client.complete_multipart_upload(**request, **cond)
            )
        except BaseException:  # shielded: a cancellation must not leave the upload billed
            await shielded(self._s3.abort(key, upload_id, retry_delays=ABORT_RETRY_DELAYS))
            raise
        if retention is not None:
            await self._s3.ensure_locked(key, retention)
        return ObjectInfo(key, size)

    async def _copy_parts(
        self, source: S3Storage, key: str, size: int, upload_id: str
    ) -> builtins.list[dict[str, Any]]:
        client = await self.client()
        step = max(self.config.part_size, -(-size // MAX_PARTS))
        parts: builtins.list[dict[str, Any]] = []
        for number, start in enumerate(range(0, max(size, 1), step), start=1):
            end = min(start + step, size) - 1
            span: dict[str, Any] = {"CopySourceRange": f"bytes={start}-{end}"} if size else {}
            with self._s3.translating(key):
                answer = await client.upload_part_copy(
                    Bucket=self.bucket,
                    Key=self._s3.name(key),
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": source.bucket, "Key": source._s3.name(key)},
                    **span,
                )
            parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
        return parts

    async def splice(self, key: str, head: bytes, source: str, start: int) -> ObjectInfo:
        """Create key as ``head + source[start:]``, the tail copied by the server
        (splice.py). Aborts its upload on any failure; never overwrites."""
        from .splice import copy_ranges

        size = (await self.stat(source)).size
        first_end, ranges = copy_ranges(start, size)
        first = b""
        if head:  # new bytes go in a first part of their own and at least 5 MiB
            first = head + b"".join([p async for p in self.read(source, start, first_end)])
            if not ranges:
                return await self.put(key, first)
        else:  # a plain copy: every part is copied by the server
            ranges = [(start, first_end), *ranges] if first_end > start else []
            if not ranges:
                return await self.put(key, b"")
        client = await self.client()
        args = {**self._s3.object_args(key), **self._s3.checksum_args()}
        with self._s3.translating(key):
            upload_id = (await client.create_multipart_upload(**args))["UploadId"]
        try:
            parts = [await self._part(key, upload_id, first)] if head else []
            for number, (a, b) in enumerate(ranges, len(parts) + 1):
                parts.append(await self._copy_part(key, upload_id, number, source, a, b))
            request: dict[str, Any] = {
                "Bucket": self.bucket,
                "Key": self._s3.name(key),
                "UploadId": upload_id,
                "MultipartUpload": {"Parts": parts},
            }
            await self._s3.create_new(
                key, lambda **cond: client.complete_multipart_upload(**request, **cond)
            )
        except BaseException:
            await asyncio.shield(self._s3.abort(key, upload_id))
            raise
        return ObjectInfo(key, len(head) + size - start)

    async def _part(self, key: str, upload_id: str, data: bytes) -> dict[str, Any]:
        client = await self.client()
        with self._s3.translating(key):
            response = await client.upload_part(
                Bucket=self.bucket,
                Key=self._s3.name(key),
                UploadId=upload_id,
                PartNumber=1,
                Body=data,
                **self._s3.checksum_args(),
            )
        part: dict[str, Any] = {"PartNumber": 1, "ETag": response["ETag"]}
        if "ChecksumCRC32" in response:
            part["ChecksumCRC32"] = response["ChecksumCRC32"]
        return part

    async def _copy_part(
        self, key: str, upload_id: str, number: int, source: str, start: int, end: int
    ) -> dict[str, Any]:
        client = await self.client()
        with self._s3.translating(key):
            response = await client.upload_part_copy(
                Bucket=self.bucket,
                Key=self._s3.name(key),
                UploadId=upload_id,
                PartNumber=number,
                CopySource={"Bucket": self.bucket, "Key": self._s3.name(source)},
                CopySourceRange=f"bytes={start}-{end - 1}",
            )
        result = response["CopyPartResult"]
        part: dict[str, Any] = {"PartNumber": number, "ETag": result["ETag"]}
        if "ChecksumCRC32" in result:
            part["ChecksumCRC32"] = result["ChecksumCRC32"]
        return part

    async def delete(self, key: str) -> None:
        client = await self.client()
        with self._s3.translating(key):
            await client.delete_object(Bucket=self.bucket, Key=self._s3.name(key))

    async def uploads(self, prefix: str = "") -> AsyncIterator[UploadInfo]:
        client = await self.client()
        root = self._s3.root
        pages = client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=root + prefix, Delimiter="/"
        )
        found: list[UploadInfo] = []
        with self._s3.translating(None):
            async for page in pages:
                for item in page.get("Uploads", []):
                    key = item["Key"][len(root) :]
                    if "/" not in key[len(prefix) :]:  # some servers ignore the delimiter
                        found.append(UploadInfo(key, item["UploadId"], item.get("Initiated")))
        for upload in sorted(found, key=lambda u: (u.key, u.upload_id)):
            yield UploadInfo(
                upload.key, upload.upload_id, upload.initiated, await self._last_part(upload)
            )

    async def abort_upload(self, upload: UploadInfo) -> None:
        await self._s3.abort(upload.key, upload.upload_id)

    async def aclose(self) -> None:
        await self._s3.aclose()

    async def __aenter__(self) -> S3Storage:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _last_part(self, upload: UploadInfo) -> datetime | None:
        """When the upload's newest part arrived (None: it has none, or is gone)."""
        client = await self.client()
        pages = client.get_paginator("list_parts").paginate(
            Bucket=self.bucket, Key=self._s3.name(upload.key), UploadId=upload.upload_id
        )
        newest: datetime | None = None
        try:
            async for page in pages:
                for part in page.get("Parts", []):
                    when = part.get("LastModified")
                    if when is not None and (newest is None or when > newest):
                        newest = when
        except ClientError as exc:
            if error_code(exc) == "NoSuchUpload":
                return None
            raise self._s3.error(exc, upload.key) from exc
        except TRANSPORT_ERRORS as exc:
            raise self._s3.error(exc, upload.key) from exc
        return newest
