"""No orphaned uploads: a failed backup aborts its upload even when S3 comes
back only after the retries; what a killed backup leaves, the next backup or
prune aborts (this tool's archive names, at the destination's level, stale
only); ``list --uploads`` shows them. Real FerretDB, moto, versitygw, and a
local directory; a fault-injecting TCP proxy before S3 for the outages."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from faultproxy import FaultProxy
from helpers import run_cli, s3_client, s3_config
from pymongo import MongoClient

import mongosnap
from mongosnap import StorageError
from mongosnap.archive.manifest import archive_name
from mongosnap.pipelines import uploads as uploads_module
from mongosnap.progress import Progress, Stage
from mongosnap.storage import S3Config, S3Storage, open_storage

MiB = 1024 * 1024
PART = 5 * MiB
ARCHIVE = "2025-01-01-03-00-00-mongodb-dump.tar.gz"


def seed_random(uri: str, database: str, mib: int) -> None:
    """Incompressible documents, so the archive needs several 5 MiB parts."""
    rng = random.Random(7)
    with MongoClient(uri) as client:
        coll = client[database].blobs
        for start in range(0, mib * 8, 8):
            coll.insert_many([{"i": start + i, "b": rng.randbytes(128 * 1024)} for i in range(8)])


def s3_pending(endpoint: Any, bucket: str) -> list[str]:
    answer = s3_client(endpoint).list_multipart_uploads(Bucket=bucket)
    return sorted(u["Key"] for u in answer.get("Uploads", []))


@pytest.fixture
def proxied(s3_endpoint: Any) -> Iterator[tuple[FaultProxy, Any]]:
    target = urlsplit(s3_endpoint.endpoint_url)
    assert target.hostname is not None and target.port is not None
    with FaultProxy((target.hostname, target.port)) as proxy:
        yield proxy, s3_endpoint


def through(proxy: FaultProxy, endpoint: Any, **overrides: Any) -> S3Config:
    fields: dict[str, Any] = {"part_size": PART, "max_attempts": 2, "connect_timeout": 2.0}
    fields.update(overrides)
    return s3_config(endpoint, endpoint_url=f"http://{proxy.address}", **fields)


async def test_outage_during_a_part_upload_leaves_no_upload(
    proxied: tuple[FaultProxy, Any], new_bucket: Any, mongo_uri: str, new_database: str
) -> None:
    proxy, endpoint = proxied
    bucket = new_bucket(endpoint)
    seed_random(mongo_uri, new_database, 16)
    started = False

    def outage_after_the_first_part(event: Progress) -> None:
        nonlocal started
        if not started and event.stage is Stage.BATCH and event.bytes > PART + MiB:
            started = True  # the upload exists and its first part is on its way
            proxy.outage(15)

    with pytest.raises(StorageError):
        await mongosnap.backup(
            mongo_uri,
            f"s3://{bucket}/nightly",
            database=new_database,
            s3=through(proxy, endpoint),
            progress=outage_after_the_first_part,
        )
    assert started
    assert s3_pending(endpoint, bucket) == []


async def test_outage_during_complete_leaves_no_upload(
    proxied: tuple[FaultProxy, Any], new_bucket: Any
) -> None:
    proxy, endpoint = proxied
    bucket = new_bucket(endpoint)
    async with S3Storage(bucket, "nightly", through(proxy, endpoint)) as storage:
        writer = storage.open_writer(ARCHIVE)
        await writer.write(random.Random(1).randbytes(2 * PART))  # two parts, both launched
        client = s3_client(endpoint)
        while True:  # wait until the server holds both parts: only Complete is left
            [upload] = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
            parts = client.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            if len(parts.get("Parts", [])) == 2:
                break
            await asyncio.sleep(0.05)
        proxy.outage(15)
        with pytest.raises(StorageError):
            await writer.commit()
    assert s3_pending(endpoint, bucket) == []
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


@dataclass
class Place:
    url: str
    s3: S3Config | None
    pending: Any  # () -> list of pending upload keys, every level
    flags: list[str]
    env: dict[str, str]


@pytest.fixture(params=["local", "moto", "versitygw"])
def place(request: pytest.FixtureRequest, tmp_path: Path, testbed: Any, new_bucket: Any) -> Place:
    if request.param == "local":
        root = tmp_path / "backups"

        def local_pending() -> list[str]:
            return sorted(
                str(p.relative_to(root).parent / p.name[1:].rsplit(".", 2)[0]).removeprefix("./")
                for p in root.rglob(".*.partial")
            )

        return Place(str(root), None, local_pending, [], dict(os.environ))
    endpoint = testbed.s3[request.param]
    bucket = new_bucket(endpoint)

    def pending() -> list[str]:
        return [k.removeprefix("nightly/") for k in s3_pending(endpoint, bucket)]

    env = dict(
        os.environ, AWS_ACCESS_KEY_ID=endpoint.access_key, AWS_SECRET_ACCESS_KEY=endpoint.secret_key
    )
    flags = ["--endpoint-url", endpoint.endpoint_url, "--region", endpoint.region]
    config = s3_config(endpoint, part_size=PART)
    return Place(
        f"s3://{bucket}/nightly", config, pending, [*flags, "--addressing-style", "path"], env
    )


ORPHANS = [ARCHIVE, "notes.bin", f"staging/{ARCHIVE}"]

_KILLED_WRITER = """
import asyncio, os, sys, time
from mongosnap.storage import S3Config, open_storage

async def main():
    s3 = S3Config(**{k: v for k, v in eval(sys.argv[2]).items()}) if sys.argv[2] != "None" else None
    storage = open_storage(sys.argv[1], s3=s3)
    writers = [storage.open_writer(key) for key in sys.argv[3:]]
    for writer in writers:
        await writer.write(os.urandom(5 * 1024 * 1024 + 1))
    # An S3 upload is created in the background: be killed only once each one
    # is listed, as a live backup's would be (a local file exists at once).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        levels = {key.rpartition("/")[0] for key in sys.argv[3:]}
        listed = {u.key for level in levels async for u in storage.uploads(level and level + "/")}
        if set(sys.argv[3:]) <= listed:
            break
        await asyncio.sleep(0.1)
    print("ready", flush=True)
    time.sleep(600)

asyncio.run(main())
"""


def killed_backup(place: Place) -> None:
    """A process that started uploads (one at each key of ORPHANS), then SIGKILL."""
    fields = None
    if place.s3 is not None:
        names = ("endpoint_url", "region", "access_key_id", "secret_access_key", "part_size")
        fields = {n: getattr(place.s3, n) for n in names} | {"addressing_style": "path"}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_KILLED_WRITER), place.url, repr(fields), *ORPHANS],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


async def test_a_killed_backups_upload_is_aborted_by_the_next_backup(
    place: Place, mongo_uri: str, new_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with MongoClient(mongo_uri) as client:
        client[new_database].users.insert_many([{"i": i} for i in range(10)])
    killed_backup(place)
    assert place.pending() == sorted(ORPHANS)

    listed = run_cli("list", place.url, "--uploads", "--json", *place.flags, env=place.env)
    assert listed.returncode == 0, listed.stderr
    shown = json.loads(listed.stdout)
    assert [(u["key"], u["ours"]) for u in shown] == [(ARCHIVE, True), ("notes.bin", False)]
    assert all(u["idle_seconds"] is not None for u in shown)
    table = run_cli("list", place.url, "--uploads", *place.flags, env=place.env)
    assert table.returncode == 0 and ARCHIVE in table.stdout and "initiated" in table.stdout

    # Fresh: it could be a concurrent backup's live upload, so it is left alone.
    first = await mongosnap.backup(mongo_uri, place.url, database=new_database, s3=place.s3)
    assert first.stale_uploads_aborted == 0
    assert place.pending() == sorted(ORPHANS)

    monkeypatch.setattr(uploads_module, "STALE_AFTER", timedelta(0))
    second = await mongosnap.backup(mongo_uri, place.url, database=new_database, s3=place.s3)
    assert second.stale_uploads_aborted == 1
    assert second.to_dict()["stale_uploads_aborted"] == 1
    # Not ours (another name) or not at this level: never touched.
    assert place.pending() == ["notes.bin", f"staging/{ARCHIVE}"]
    archives = await mongosnap.list_archives(open_storage(place.url, s3=place.s3))
    assert {a.key for a in archives} == {first.archive_key, second.archive_key}


async def test_prune_aborts_stale_uploads_but_never_a_live_one(
    place: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = open_storage(place.url, s3=place.s3)
    try:
        # A backup that started now; its first part may still be on its way.
        key = archive_name(datetime.now(UTC), "gzip")
        live = storage.open_writer(key)
        await live.write(random.Random(2).randbytes(PART + 1))
        report = await mongosnap.prune(storage, keep_last=1)
        assert report.stale_uploads_aborted == 0
        assert report.to_dict()["stale_uploads_aborted"] == 0
        await live.commit()  # the live upload survived the prune
        assert [a.key for a in await mongosnap.list_archives(storage)] == [key]

        orphan = storage.open_writer("2025-01-02-03-00-00-mongodb-dump.tar.zst")
        await orphan.write(random.Random(3).randbytes(PART + 1))  # never finished
        monkeypatch.setattr(uploads_module, "STALE_AFTER", timedelta(0))
        dry = await mongosnap.prune(storage, keep_last=1, dry_run=True)
        assert dry.stale_uploads_aborted == 0 and place.pending() != []
        report = await mongosnap.prune(storage, keep_last=1)
        assert report.stale_uploads_aborted == 1
        assert place.pending() == []
        with pytest.raises(StorageError):
            await orphan.commit()
    finally:
        await storage.aclose()


def _archive_uploads(place: Place) -> list[str]:
    return [key for key in place.pending() if not key.endswith(".claim")]


async def _until_the_upload_exists(
    proc: subprocess.Popen[bytes], proxy: FaultProxy, place: Place
) -> None:
    """Return once the backup's archive upload exists and the backup cannot finish.

    Each listCollections the backup sends (the collection checks around every
    dump) is held until looked at. Once the collection's 24 MiB went through,
    the held check keeps the backup from completing however fast it is, and
    its parts are already on their way: the upload appears, then the kill comes.
    """
    held = proxy.hold("up", b"listCollections\x00")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the backup ended before it could be killed"
        if not held.reached.wait(0.05):
            continue
        if proxy.counters.bytes_down > 20 * MiB:
            for _ in range(1200):
                if _archive_uploads(place):
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("no upload after the collection was dumped")
        following = proxy.hold("up", b"listCollections\x00")
        held.release()
        held = following
    raise AssertionError("the backup never reached its upload")


async def test_a_backup_killed_mid_upload_is_cleaned_up_by_the_next_one(
    place: Place, mongo_uri: str, new_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_random(mongo_uri, new_database, 24)
    port = int(mongo_uri.rsplit(":", 1)[1].split("/")[0])
    with FaultProxy(("127.0.0.1", port)) as proxy:
        command = [sys.executable, "-m", "mongosnap", "backup", place.url, proxy.address]
        proc = subprocess.Popen(
            [*command, new_database, "-q", "--part-size", "5", *place.flags], env=place.env
        )
        try:
            await _until_the_upload_exists(proc, proxy, place)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    [orphan] = _archive_uploads(place)

    monkeypatch.setattr(uploads_module, "STALE_AFTER", timedelta(0))
    result = await mongosnap.backup(mongo_uri, place.url, database=new_database, s3=place.s3)

    assert result.stale_uploads_aborted == 1
    assert place.pending() == []
    archives = await mongosnap.list_archives(open_storage(place.url, s3=place.s3))
    assert [a.key for a in archives] == [result.archive_key] != [orphan]
