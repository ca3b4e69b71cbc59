"""Test-only fault injection for S3Storage: a proxy around its aiobotocore client.

    faulty = await FaultyClient.install(storage, fail_part=3)

replaces the storage's client; every call not overridden here goes through.
``garble_reads`` / ``fail_reads`` (predicates on the object key) make a
GetObject answer 200 with a garbled body of the right length, or fail with 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from mongosnap.storage import S3Storage


def client_error(code: str, status: int, operation: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": "injected by the test"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


class FaultyClient:
    def __init__(
        self,
        client: Any,
        *,
        fail_part: int | None = None,
        part_delay: float = 0.0,
        reject_if_none_match: bool = False,
        garble_reads: Callable[[str], bool] | None = None,
        fail_reads: Callable[[str], bool] | None = None,
    ) -> None:
        self._client = client
        self.garble_reads = garble_reads
        self.fail_reads = fail_reads
        self.fail_part = fail_part
        self.part_delay = part_delay
        self.reject_if_none_match = reject_if_none_match
        self.parts_started = 0
        self.calls: list[str] = []

    @classmethod
    async def install(cls, storage: S3Storage, **faults: Any) -> FaultyClient:
        faulty = cls(await storage.client(), **faults)
        storage._s3._client = faulty  # type: ignore[assignment]
        return faulty

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if callable(attr) and not name.startswith(("get_", "meta")):

            async def recorded(*args: Any, **kwargs: Any) -> Any:
                self.calls.append(name)
                return await attr(*args, **kwargs)

            return recorded
        return attr

    async def upload_part(self, **kwargs: Any) -> Any:
        self.calls.append("upload_part")
        self.parts_started += 1
        if self.fail_part is not None and kwargs["PartNumber"] == self.fail_part:
            raise client_error("InternalError", 500, "UploadPart")
        if self.part_delay:
            await asyncio.sleep(self.part_delay)
        return await self._client.upload_part(**kwargs)

    async def put_object(self, **kwargs: Any) -> Any:
        self._check_condition(kwargs, "PutObject")
        self.calls.append("put_object")
        return await self._client.put_object(**kwargs)

    async def complete_multipart_upload(self, **kwargs: Any) -> Any:
        self._check_condition(kwargs, "CompleteMultipartUpload")
        self.calls.append("complete_multipart_upload")
        return await self._client.complete_multipart_upload(**kwargs)

    async def get_object(self, **kwargs: Any) -> Any:
        key = kwargs["Key"]
        if self.fail_reads is not None and self.fail_reads(key):
            self.calls.append("get_object failed")
            raise client_error("InternalError", 500, "GetObject")
        response = await self._client.get_object(**kwargs)
        if self.garble_reads is not None and self.garble_reads(key):
            self.calls.append("get_object garbled")
            response["Body"] = GarbledBody(response["Body"])
        return response

    def _check_condition(self, kwargs: dict[str, Any], operation: str) -> None:
        if self.reject_if_none_match and "IfNoneMatch" in kwargs:
            self.calls.append(f"{operation} rejected")
            raise client_error("NotImplemented", 501, operation)


class GarbledBody:
    """A response body whose bytes arrive flipped: same length, not the data."""

    def __init__(self, body: Any) -> None:
        self._body = body

    async def __aenter__(self) -> GarbledBody:
        await self._body.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> Any:
        return await self._body.__aexit__(*exc)

    async def read(self, *args: Any) -> bytes:
        return bytes(b ^ 0x5A for b in await self._body.read(*args))
