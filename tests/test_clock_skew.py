"""An archive written by a host whose clock runs a year ahead (``faketime``)
never outranks the real archives: heal, prune, check and list on the test bed.

The skewed backup is a real ``faketime -f +365d mongosnap backup`` subprocess:
its name, its claim and its S3 request signatures all carry the wrong year.
moto accepts such requests (an S3-compatible that does not check request
time); versitygw refuses them (RequestTimeTooSkewed), which is checked too.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    Destination,
    make_destination,
    s3_client,
    sample_document,
    server_documents,
    subprocess_env,
)
from pymongo import MongoClient

from mongosnap.archive.manifest import archive_name

FAKETIME = shutil.which("faketime") or "faketime"  # missing: the run fails, never skips
OK, WARNING, CRITICAL = 0, 1, 2


def host_of(uri: str) -> str:
    return uri.split("://", 1)[1].rstrip("/")


def s3_flags(dest: Destination) -> list[str]:
    if dest.endpoint is None:
        return []
    return ["--endpoint-url", dest.endpoint.endpoint_url, "--addressing-style", "path"]


def cli(dest: Destination, *args: str, ahead: str = "") -> subprocess.CompletedProcess[str]:
    """``mongosnap ARGS`` against ``dest``; with ``ahead``, under ``faketime -f AHEAD``."""
    faked = [FAKETIME, "-f", ahead] if ahead else []
    return subprocess.run(
        [*faked, sys.executable, "-m", "mongosnap", *args, *s3_flags(dest)],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(dest),
    )


def grow_to(uri: str, database: str, count: int) -> None:
    """Add documents to ``things`` until it holds ``count``."""
    with MongoClient(uri) as client:
        things = client[database]["things"]
        have = things.count_documents({})
        things.insert_many([sample_document(i) for i in range(have, count)])


def backup(dest: Destination, uri: str, database: str, ahead: str = "") -> str:
    done = cli(dest, "backup", dest.url, host_of(uri), database, "--json", ahead=ahead)
    assert done.returncode == 0, done.stderr
    key: str = json.loads(done.stdout)["archive_key"]
    time.sleep(1.1)  # names and the storage's times have one-second resolution
    return key


@dataclass(frozen=True)
class Scenario:
    """Three backups of ``things``: 100 documents, 200 from a clock a year
    ahead, 300; and the 300 documents the source held at the last one."""

    dest: Destination
    database: str
    first: str
    skewed: str
    newest: str
    at_newest: list[bytes]


def destination_of(request: pytest.FixtureRequest, tmp_path: Path, testbed: Any) -> Destination:
    kind = request.param
    if kind == "local":
        return make_destination(kind, tmp_path, testbed, None)
    bucket = f"mongosnap-test-{uuid.uuid4().hex[:16]}"
    s3_client(testbed.s3[kind]).create_bucket(Bucket=bucket)
    return Destination(f"s3://{bucket}/nightly", None, testbed.s3[kind], bucket, kind=kind)


@pytest.fixture(scope="module", params=["local", "moto"])
def scenario(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, testbed: Any
) -> Iterator[Scenario]:
    dest = destination_of(request, tmp_path_factory.mktemp("skew"), testbed)
    database = f"mongosnap_test_{uuid.uuid4().hex[:12]}"
    uri = testbed.mongo_uri
    try:
        grow_to(uri, database, 100)
        first = backup(dest, uri, database)
        grow_to(uri, database, 200)
        skewed = backup(dest, uri, database, ahead="+365d")
        assert skewed > first  # named a year ahead
        grow_to(uri, database, 300)
        newest = backup(dest, uri, database)
        at_newest = sorted(server_documents(uri, database, "things"))
        assert len(at_newest) == 300
        yield Scenario(dest, database, first, skewed, newest, at_newest)
    finally:
        with MongoClient(uri) as client:
            client.drop_database(database)
        if dest.bucket is not None:
            remove_bucket(dest)


def remove_bucket(dest: Destination) -> None:
    client, stored = dest.client(), dest.keys()
    for key in stored:
        client.delete_object(Bucket=dest.bucket, Key=key)
    client.delete_bucket(Bucket=dest.bucket)


def test_list_flags_it_and_orders_it_by_when_it_was_written(scenario: Scenario) -> None:
    dest, skewed = scenario.dest, scenario.skewed
    listed = json.loads(cli(dest, "list", dest.url, "--json").stdout)
    assert [a["key"] for a in listed] == [scenario.newest, skewed, scenario.first]
    assert [a["skewed"] is not None for a in listed] == [False, True, False]
    assert "the writer's clock ran ahead" in listed[1]["skewed"]
    assert listed[0]["ordered_at"] > listed[1]["ordered_at"] > listed[2]["ordered_at"]
    text = cli(dest, "list", dest.url).stdout
    assert f"{skewed}: the writer's clock ran ahead" in text
    marked = [line.split()[1].endswith("!") for line in text.splitlines()[1:4]]
    assert marked == [False, True, False]


def test_heal_restores_the_newest_real_archive(scenario: Scenario, mongo_uri: str) -> None:
    dest, database = scenario.dest, scenario.database
    with MongoClient(mongo_uri) as client:
        client[database].drop_collection("things")
    done = cli(dest, "heal", dest.url, host_of(mongo_uri), database, "things", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["searched"] == [scenario.newest]
    assert sorted(server_documents(mongo_uri, database, "things")) == scenario.at_newest


@pytest.mark.parametrize(
    ("rule", "kept"),
    [(["--keep-within", "7d"], ["newest", "skewed", "first"]), (["--keep-last", "1"], ["newest"])],
)
def test_prune_keeps_the_newest_real_archive(
    scenario: Scenario, rule: list[str], kept: list[str]
) -> None:
    dest = scenario.dest
    done = cli(dest, "prune", dest.url, *rule, "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    decisions = json.loads(done.stdout)["archives"]
    assert [a["key"] for a in decisions if a["keep"]] == [getattr(scenario, k) for k in kept]
    assert f"{scenario.skewed}: the writer's clock ran ahead" in done.stderr


def test_check_counts_the_newest_real_archive(scenario: Scenario) -> None:
    done = cli(scenario.dest, "check", scenario.dest.url, "--json")
    assert done.returncode == OK, done.stdout
    assert json.loads(done.stdout)["archive"] == scenario.newest


@pytest.fixture(params=["local", "moto"])
def dest(
    request: pytest.FixtureRequest, tmp_path: Path, testbed: Any, new_bucket: Any
) -> Destination:
    return make_destination(request.param, tmp_path, testbed, new_bucket)


def test_check_is_never_fresh_on_a_clock_ahead(
    dest: Destination, mongo_uri: str, new_database: str
) -> None:
    grow_to(mongo_uri, new_database, 10)
    first = backup(dest, mongo_uri, new_database)
    skewed = backup(dest, mongo_uri, new_database, ahead="+365d")

    # newest by when it was written, it cannot vouch for freshness: WARNING, and why
    done = cli(dest, "check", dest.url, "--json")
    verdict = json.loads(done.stdout)
    assert done.returncode == WARNING, done.stdout
    assert verdict["archive"] == first
    assert [s["archive"] for s in verdict["clock_skewed"]] == [skewed]
    assert f"{skewed}: the writer's clock ran ahead" in verdict["message"]

    # alone (only keys of its year), it is no backup at all: CRITICAL, and why
    year = skewed.rsplit("/", 1)[-1][:4]
    done = cli(dest, "check", dest.url, new_database, "--prefix", year)
    assert done.returncode == CRITICAL, done.stdout
    assert done.stdout.startswith(f"MONGOSNAP CRITICAL - no complete archive of {new_database}")
    assert f"{skewed}: the writer's clock ran ahead" in done.stdout


def test_the_skewed_backup_records_the_servers_clock(
    tmp_path: Path, testbed: Any, new_bucket: Any, mongo_uri: str, new_database: str
) -> None:
    dest = make_destination("local", tmp_path, testbed, new_bucket)
    grow_to(mongo_uri, new_database, 10)
    done = cli(dest, "backup", dest.url, host_of(mongo_uri), new_database, ahead="+365d")
    assert done.returncode == 0, done.stderr
    assert "this host's clock" in done.stderr and "fix the clock" in done.stderr
    (sidecar,) = (p for p in Path(dest.url).iterdir() if p.name.endswith(".manifest.json"))
    manifest = json.loads(sidecar.read_bytes())
    ahead = _time(manifest["created"]) - _time(manifest["server_time"])
    assert abs(ahead - timedelta(days=365)) < timedelta(minutes=1)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_store_that_checks_request_time_refuses_the_skewed_backup(
    tmp_path: Path, testbed: Any, new_bucket: Any, mongo_uri: str, new_database: str
) -> None:
    dest = make_destination("versitygw", tmp_path, testbed, new_bucket)
    grow_to(mongo_uri, new_database, 10)
    done = cli(dest, "backup", dest.url, host_of(mongo_uri), new_database, ahead="+365d")
    assert done.returncode != 0
    assert "RequestTimeTooSkewed" in done.stderr
    assert dest.keys() == [] and dest.pending_uploads() == []


def test_a_clock_behind_is_flagged_and_keeps_its_place(
    tmp_path: Path, testbed: Any, new_bucket: Any, mongo_uri: str, new_database: str
) -> None:
    dest = make_destination("local", tmp_path, testbed, new_bucket)
    grow_to(mongo_uri, new_database, 10)
    real = backup(dest, mongo_uri, new_database)
    behind = backup(dest, mongo_uri, new_database, ahead="-30d")

    listed = json.loads(cli(dest, "list", dest.url, "--json").stdout)
    assert [a["key"] for a in listed] == [real, behind]  # by its name: it looks older
    assert "the writer's clock ran behind" in listed[1]["skewed"]
    assert listed[1]["ordered_at"] == listed[1]["created"]
    assert listed[0]["skewed"] is None

    # it looks 30 days old: stale, the safe side
    done = cli(dest, "check", dest.url, "--prefix", behind[:10])  # its day only
    assert done.returncode == CRITICAL, done.stdout


@pytest.mark.parametrize("kind", ["local", "moto"])
async def test_a_backup_from_a_clock_ahead_never_aborts_a_live_upload(
    kind: str, tmp_path: Path, testbed: Any, new_bucket: Any, mongo_uri: str, new_database: str
) -> None:
    """Measured by a clock a year ahead, another backup's live upload looks
    idle for a year: the backup judges staleness by the server's clock too."""
    dest = make_destination(kind, tmp_path, testbed, new_bucket)
    grow_to(mongo_uri, new_database, 10)
    live = archive_name(datetime.now(UTC), "gzip")
    storage = dest.storage()
    writer = storage.open_writer(live)
    try:
        await writer.write(random.Random(7).randbytes(17 * 1024 * 1024))  # past a part
        for _ in range(100):  # its first part may still be on its way
            if live in await asyncio.to_thread(uploads, dest):
                break
            await asyncio.sleep(0.1)
        assert live in await asyncio.to_thread(uploads, dest)
        args = ("backup", dest.url, host_of(mongo_uri), new_database)
        done = await asyncio.to_thread(cli, dest, *args, ahead="+365d")
        assert done.returncode == 0, done.stderr
        assert live in await asyncio.to_thread(uploads, dest), "a live upload was aborted"
    finally:
        await writer.abort()
        await storage.aclose()


def uploads(dest: Destination) -> list[str]:
    listed = cli(dest, "list", dest.url, "--uploads", "--json")
    assert listed.returncode == 0, listed.stderr
    return [u["key"] for u in json.loads(listed.stdout)]


def test_a_drill_from_a_clock_ahead_vouches_only_for_when_it_ran(
    dest: Destination, mongo_uri: str, new_database: str
) -> None:
    grow_to(mongo_uri, new_database, 10)
    backup(dest, mongo_uri, new_database)
    drilled = cli(dest, "drill", dest.url, host_of(mongo_uri), new_database, ahead="+30d")
    assert drilled.returncode == 0, drilled.stderr
    check = ["check", dest.url, new_database, "--max-drill-age", "8d", "--json"]

    # today the drill is fresh: it ran just now, whatever its record's name says
    today = cli(dest, *check)
    assert today.returncode == OK, today.stdout
    # nine days on, it ran nine days ago: no passed drill within 8 days, though
    # the record is named three weeks later still
    later = cli(dest, *check, ahead="+9d")
    assert later.returncode == CRITICAL, later.stdout
    assert "no restore drill passed within" in json.loads(later.stdout)["message"]
    assert "the drilling host's clock ran ahead" in later.stderr
