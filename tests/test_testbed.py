"""The test servers are real: FerretDB answers both async drivers, each S3 server does multipart."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import AsyncMongoClient
from testbed import S3Endpoint, Testbed, TestbedError

MIB = 1024 * 1024


async def test_ferretdb_with_pymongo_async(mongo_uri: str, new_database: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    try:
        assert (await client.admin.command("ping"))["ok"] == 1.0
        items = client[new_database]["items"]
        await items.insert_many([{"_id": i, "name": f"item-{i}"} for i in range(10)])
        found = await items.find({"_id": {"$gte": 7}}).sort("_id", 1).to_list()
        assert found == [{"_id": i, "name": f"item-{i}"} for i in (7, 8, 9)]
        assert new_database in await client.list_database_names()
    finally:
        await client.close()


async def test_ferretdb_with_motor(mongo_uri: str, new_database: str) -> None:
    client: Any = AsyncIOMotorClient(mongo_uri)
    try:
        assert (await client.admin.command("ping"))["ok"] == 1.0
        items = client[new_database]["items"]
        await items.insert_one({"_id": "a", "n": 1})
        assert await items.find_one({"_id": "a"}) == {"_id": "a", "n": 1}
        assert await items.count_documents({}) == 1
    finally:
        client.close()


def _s3(endpoint: S3Endpoint) -> Any:
    config = AioConfig(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return get_session().create_client("s3", config=config, **endpoint.client_kwargs())


async def test_s3_multipart_upload(s3_endpoint: S3Endpoint, new_bucket: Any) -> None:
    bucket = new_bucket(s3_endpoint)
    first, second = os.urandom(5 * MIB), b"tail" * 1000
    async with _s3(s3_endpoint) as s3:
        upload = await s3.create_multipart_upload(Bucket=bucket, Key="dir/archive.tar")
        upload_id = upload["UploadId"]
        parts = []
        for number, body in ((1, first), (2, second)):
            part = await s3.upload_part(
                Bucket=bucket,
                Key="dir/archive.tar",
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
            )
            parts.append({"PartNumber": number, "ETag": part["ETag"]})
        await s3.complete_multipart_upload(
            Bucket=bucket,
            Key="dir/archive.tar",
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
        )

        listing = await s3.list_objects_v2(Bucket=bucket)
        assert [(o["Key"], o["Size"]) for o in listing["Contents"]] == [
            ("dir/archive.tar", len(first) + len(second))
        ]
        got = await s3.get_object(
            Bucket=bucket, Key="dir/archive.tar", Range="bytes=5242878-5242881"
        )
        async with got["Body"] as body:
            assert await body.read() == first[-2:] + second[:2]


async def test_s3_abort_multipart_upload(s3_endpoint: S3Endpoint, new_bucket: Any) -> None:
    bucket = new_bucket(s3_endpoint)
    async with _s3(s3_endpoint) as s3:
        upload = await s3.create_multipart_upload(Bucket=bucket, Key="partial")
        await s3.upload_part(
            Bucket=bucket, Key="partial", UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * MIB
        )
        pending = await s3.list_multipart_uploads(Bucket=bucket)
        assert [u["UploadId"] for u in pending["Uploads"]] == [upload["UploadId"]]

        await s3.abort_multipart_upload(Bucket=bucket, Key="partial", UploadId=upload["UploadId"])

        assert (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", []) == []
        assert (await s3.list_objects_v2(Bucket=bucket)).get("Contents", []) == []


def test_missing_binary_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TestbedError, match=r"missing ferretdb, versitygw.*build"):
        Testbed(binaries=tmp_path).start()


def test_server_that_does_not_start_is_an_error(tmp_path: Path) -> None:
    for name in ("ferretdb", "versitygw"):
        fake = tmp_path / name
        fake.write_text("#!/bin/sh\necho 'cannot open data directory' >&2\nexit 3\n")
        fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    testbed = Testbed(binaries=tmp_path, base_dir=tmp_path)
    with pytest.raises(TestbedError, match=r"(?s)ferretdb exited with code 3.*cannot open data"):
        testbed.start()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("mongosnap-testbed-")]
