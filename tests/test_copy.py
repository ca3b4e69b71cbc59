"""``mongosnap copy``: a second copy of complete archives, to another bucket,
another endpoint or a directory, checked at the target, sidecar last,
resumable, never overwriting. Against moto and versitygw, a target behind a
FaultProxy for the failures."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from catalog_support import at, backup_at
from faultproxy import FaultProxy
from helpers import Destination, make_destination, run_cli
from pymongo import MongoClient
from test_json_schemas import documented, problems

import mongosnap
from mongosnap import ObjectExists
from mongosnap.archive.manifest import manifest_key
from mongosnap.catalog import ArchiveStatus

BLOB = 1 << 20
BLOBS = 7  # ~7 MB of incompressible data: two 5 MiB parts at the target


@pytest.fixture(scope="module")
def blobs(mongo_uri: str) -> Iterator[str]:
    """One database of ~7 MB, shared: copies only read its archives."""
    name = f"copy_{uuid.uuid4().hex[:10]}"
    with MongoClient(mongo_uri) as client:
        client[name]["blobs"].insert_many([{"i": i, "b": os.urandom(BLOB)} for i in range(BLOBS)])
        client[name]["small"].insert_many([{"i": i} for i in range(10)])
        yield name
        client.drop_database(name)


async def _two_archives(mongo_uri: str, dest: Destination, database: str) -> list[str]:
    return [await backup_at(at(day), mongo_uri, dest, database) for day in (1, 2)]


def _same(source: Destination, target: Destination, keys: list[str], at_target: str) -> None:
    """Byte for byte: every archive and its sidecar (the source under nightly/,
    the target under ``at_target``)."""
    for key in keys:
        for name in (key, manifest_key(key)):
            assert target.get(at_target + name) == source.get("nightly/" + name), name


def _cli_s3(endpoint: Any) -> tuple[dict[str, str], list[str]]:
    env = dict(os.environ, AWS_ACCESS_KEY_ID=endpoint.access_key)
    env["AWS_SECRET_ACCESS_KEY"] = endpoint.secret_key
    flags = ["--endpoint-url", endpoint.endpoint_url, "--region", endpoint.region]
    return env, [*flags, "--addressing-style", "path"]


async def test_copy_to_another_endpoint_resumes_and_never_overwrites(
    testbed: Any, new_bucket: Any, tmp_path: Path, mongo_uri: str, blobs: str
) -> None:
    source = make_destination("moto", tmp_path, testbed, new_bucket)
    target = make_destination("versitygw", tmp_path, testbed, new_bucket, prefix="copies")
    old, new = await _two_archives(mongo_uri, source, blobs)

    latest = await mongosnap.copy(source.url, target.url, s3=source.s3, target_s3=target.s3)
    assert [(a.key, a.outcome) for a in latest.archives] == [(new, "copied")]
    _same(source, target, [new], "copies/")

    every = await mongosnap.copy(
        source.url, target.url, select="all", s3=source.s3, target_s3=target.s3
    )
    assert [(a.key, a.outcome) for a in every.archives] == [(old, "copied"), (new, "skipped")]
    assert every.bytes_copied == every.archives[0].size
    _same(source, target, [old, new], "copies/")
    listed = await mongosnap.list_archives(target.url, s3=target.s3)
    assert {a.key: a.status for a in listed} == {
        old: ArchiveStatus.COMPLETE,
        new: ArchiveStatus.COMPLETE,
    }

    # A run cut off between the archive and its sidecar: the rerun checks the
    # archive at the target and writes the sidecar.
    target.client().delete_object(Bucket=target.bucket, Key=f"copies/{manifest_key(old)}")
    again = await mongosnap.copy(
        source.url, target.url, select="all", s3=source.s3, target_s3=target.s3
    )
    assert [(a.key, a.outcome) for a in again.archives] == [(old, "completed"), (new, "skipped")]
    assert again.bytes_copied == 0
    _same(source, target, [old, new], "copies/")

    # Another archive under the same name at the target is never overwritten.
    third = make_destination("moto", tmp_path, testbed, new_bucket, prefix="other")
    await backup_at(at(2), mongo_uri, third, blobs)  # same name as `new`, other bytes
    before = third.get(f"other/{manifest_key(new)}")
    with pytest.raises(ObjectExists, match=new):
        await mongosnap.copy(source.url, third.url, select="all", s3=source.s3)
    assert third.get(f"other/{manifest_key(new)}") == before
    assert third.get(f"other/{manifest_key(old)}") == source.get(f"nightly/{manifest_key(old)}")


def test_copy_cli_to_a_directory(
    testbed: Any, new_bucket: Any, tmp_path: Path, mongo_uri: str, blobs: str
) -> None:
    source = make_destination("moto", tmp_path, testbed, new_bucket)
    env, flags = _cli_s3(testbed.s3["moto"])
    done = run_cli("backup", source.url, "--uri", mongo_uri, blobs, "--json", *flags, env=env)
    assert done.returncode == 0, done.stderr
    target = tmp_path / "second"
    since = "2000-01-01T00:00:00Z"
    copied = run_cli("copy", source.url, str(target), "--since", since, "--json", *flags, env=env)
    assert copied.returncode == 0, copied.stderr
    report = json.loads(copied.stdout)
    assert problems(report, documented()["copy"]) == []  # as docs/cli.md's schema says
    keys = [a["key"] for a in report["archives"]]
    assert report["copied"] == len(keys) >= 1 and report["skipped"] == 0
    _same(source, Destination(str(target), None, root=target), keys, "")
    again = run_cli("copy", source.url, str(target), "--all", *flags, env=env)
    assert again.returncode == 0, again.stderr
    assert f"copied 0 archives (0 B), skipped {len(keys)}" in again.stdout
    refused = run_cli("copy", source.url, str(target), "--lock-days", "1", *flags, env=env)
    assert refused.returncode == 2 and "--lock-days needs an s3:// DEST" in refused.stderr


@pytest.mark.parametrize("kind", ["moto", "versitygw"])
async def test_a_target_failing_mid_object_leaves_nothing_and_the_rerun_resumes(
    kind: str, testbed: Any, new_bucket: Any, tmp_path: Path, mongo_uri: str, blobs: str
) -> None:
    source = make_destination("moto", tmp_path, testbed, new_bucket)
    target = make_destination(kind, tmp_path, testbed, new_bucket, prefix="copies")
    [_, new] = await _two_archives(mongo_uri, source, blobs)
    endpoint = testbed.s3[kind]
    port = int(endpoint.endpoint_url.rsplit(":", 1)[1])
    assert target.s3 is not None
    with FaultProxy(("127.0.0.1", port)) as proxy:
        # No retries: the first reset part fails the copy (then the abort runs).
        proxied = replace(
            target.s3, endpoint_url=f"http://{proxy.address}", max_attempts=1, part_size=5 << 20
        )
        proxy.reset_after(up=2 << 20, count=20)  # any connection carrying a part
        with pytest.raises(mongosnap.StorageError):
            await mongosnap.copy(source.url, target.url, s3=source.s3, target_s3=proxied)
        proxy.heal()
        proxy.settle()
        assert target.keys() == []  # no archive, no sidecar
        assert target.pending_uploads() == []  # the upload was aborted

        resumed = await mongosnap.copy(source.url, target.url, s3=source.s3, target_s3=proxied)
    assert [(a.key, a.outcome) for a in resumed.archives] == [(new, "copied")]
    _same(source, target, [new], "copies/")


async def test_one_endpoint_copies_server_side(
    s3_endpoint: Any, testbed: Any, new_bucket: Any, tmp_path: Path, mongo_uri: str, blobs: str
) -> None:
    source = make_destination(s3_endpoint.name, tmp_path, testbed, new_bucket)
    assert source.s3 is not None
    source = replace(source, s3=replace(source.s3, part_size=5 << 20))  # two ranged parts
    target = make_destination(s3_endpoint.name, tmp_path, testbed, new_bucket, prefix="copies")
    [key] = [await backup_at(at(1), mongo_uri, source, blobs)]
    report = await mongosnap.copy(source.url, target.url, s3=source.s3)
    assert [(a.key, a.outcome) for a in report.archives] == [(key, "copied")]
    assert (report.server_side, report.bytes_copied) == (1, 0)
    assert report.archives[0].size > 5 << 20
    _same(source, target, [key], "copies/")
    assert target.pending_uploads() == []
    again = await mongosnap.copy(source.url, target.url, s3=source.s3)
    assert [a.outcome for a in again.archives] == ["skipped"] and again.server_side == 0
