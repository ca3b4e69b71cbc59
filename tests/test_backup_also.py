"""``backup --also DEST2``: one dump, the same archive at several destinations.
A destination that is down from the start, or fails mid-upload (a FaultProxy
before versitygw or moto), costs only its copy: its upload is aborted, its
claim removed, the main archive is complete, and the CLI exits 42."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FaultProxy
from helpers import make_destination, run_cli
from pymongo import MongoClient

import mongosnap
from mongosnap.archive.manifest import manifest_key
from mongosnap.storage import S3Storage

BLOB = 1 << 20
BLOBS = 7  # ~7 MB of incompressible data: two 5 MiB parts


@pytest.fixture(scope="module")
def blobs(mongo_uri: str) -> Iterator[str]:
    name = f"also_{uuid.uuid4().hex[:10]}"
    with MongoClient(mongo_uri) as client:
        client[name]["blobs"].insert_many([{"i": i, "b": os.urandom(BLOB)} for i in range(BLOBS)])
        client[name]["small"].insert_many([{"i": i} for i in range(10)])
        yield name
        client.drop_database(name)


def test_the_same_archive_at_every_destination(
    testbed: Any, new_bucket: Any, tmp_path: Path, mongo_uri: str, blobs: str
) -> None:
    main = make_destination("moto", tmp_path, testbed, new_bucket)
    bucket2 = new_bucket(testbed.s3["moto"])
    moto = testbed.s3["moto"]
    env = dict(os.environ, AWS_ACCESS_KEY_ID=moto.access_key, AWS_SECRET_ACCESS_KEY=moto.secret_key)
    flags = ["--endpoint-url", moto.endpoint_url, "--region", moto.region]
    flags += ["--addressing-style", "path", "--part-size", "5"]
    second = tmp_path / "second"
    done = run_cli(
        "backup", main.url, "--uri", mongo_uri, blobs, "--json", *flags,
        "--also", str(second), "--also", f"s3://{bucket2}/copy", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    key = report["archive_key"]
    assert [(m["complete"], m["error"]) for m in report["also"]] == [(True, None)] * 2
    archive = main.get(f"nightly/{key}")
    sidecar = main.get(f"nightly/{manifest_key(key)}")
    assert sorted(p.name for p in second.iterdir()) == sorted([key, manifest_key(key)])
    assert (second / key).read_bytes() == archive
    assert (second / manifest_key(key)).read_bytes() == sidecar
    s3 = main.client()
    listed = s3.list_objects_v2(Bucket=bucket2)["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted([f"copy/{key}", f"copy/{manifest_key(key)}"])
    assert s3.get_object(Bucket=bucket2, Key=f"copy/{key}")["Body"].read() == archive


def test_a_destination_that_cannot_be_written_exits_42(
    testbed: Any, new_bucket: Any, tmp_path: Path, mongo_uri: str, blobs: str
) -> None:
    main = tmp_path / "main"
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    done = run_cli(
        "backup", str(main), "--uri", mongo_uri, blobs, "--also", str(blocked / "second")
    )
    assert done.returncode == 42, done.stderr
    assert "the archive is complete at" in done.stderr and str(blocked / "second") in done.stderr
    assert "backed up 2 collections" in done.stdout
    names = sorted(p.name for p in main.iterdir())
    assert len(names) == 2 and names[1] == names[0] + ".manifest.json"
    twice = run_cli("backup", str(main), "--uri", mongo_uri, blobs, "--also", str(main))
    assert twice.returncode == 2 and "is given twice" in twice.stderr, twice.stderr
    assert sorted(p.name for p in main.iterdir()) == names


@pytest.mark.parametrize("kind", ["moto", "versitygw"])
@pytest.mark.parametrize("when", ["down from the start", "failing mid-upload"])
async def test_one_destination_down_keeps_the_good_copy(
    kind: str, when: str, testbed: Any, new_bucket: Any, tmp_path: Path, mongo_uri: str,
    blobs: str,
) -> None:  # fmt: skip
    main = make_destination("local", tmp_path, testbed, new_bucket)
    mirror = make_destination(kind, tmp_path, testbed, new_bucket, prefix="mirror")
    assert mirror.s3 is not None and mirror.bucket is not None
    port = int(mirror.s3.endpoint_url.rsplit(":", 1)[1])  # type: ignore[union-attr]
    with FaultProxy(("127.0.0.1", port)) as proxy:
        config = replace(
            mirror.s3, endpoint_url=f"http://{proxy.address}", max_attempts=1, part_size=5 << 20
        )
        if when == "down from the start":
            proxy.outage(3600)
        else:
            proxy.reset_after(up=2 << 20, count=50)  # any connection carrying a part
        async with S3Storage(mirror.bucket, "mirror", config) as down:
            report = await mongosnap.backup(mongo_uri, main.url, database=blobs, also=[down])
        proxy.heal()
        proxy.settle()
    [status] = report.also
    assert status["complete"] is False and status["error"]
    assert sorted(main.keys()) == sorted([report.archive_key, report.manifest_key])
    listed = await mongosnap.list_archives(main.url)
    assert [(a.key, a.status.value) for a in listed] == [(report.archive_key, "complete")]
    assert mirror.keys() == []  # no archive, no sidecar, no claim
    assert mirror.pending_uploads() == []  # the upload was aborted
