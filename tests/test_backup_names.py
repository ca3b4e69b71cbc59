"""Backups started in the same second into the same place all succeed: each
claims a free name before its dump, across tasks and across processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from helpers import Destination, seed

from mongosnap import backup
from mongosnap.archive.manifest import archive_name, parse_archive_name
from mongosnap.catalog import ArchiveStatus, list_archives
from mongosnap.pipelines.backup import CLAIM_SUFFIX

# Sleeps until an agreed instant, then runs ``python -m mongosnap ARGS``: two
# processes started this way begin their backups within the same second.
LAUNCH = (
    "import runpy, sys, time; import mongosnap.cli; "
    "time.sleep(max(0.0, float(sys.argv[1]) - time.time())); "
    "sys.argv = ['mongosnap', *sys.argv[2:]]; "
    "runpy.run_module('mongosnap', run_name='__main__', alter_sys=True)"
)


@pytest.fixture
def seeded(mongo_uri: str, new_database: str) -> str:
    seed(mongo_uri, new_database, {"things": 3000, "more": 500})
    return new_database


def claims(dest: Destination) -> list[str]:
    listed = dest.keys()
    return [k for k in listed if k.endswith(CLAIM_SUFFIX)]


def cli_args(dest: Destination, mongo_uri: str, database: str) -> tuple[list[str], dict[str, str]]:
    host = mongo_uri.split("://", 1)[1].rstrip("/")
    args = ["backup", dest.url, host, database, "--json", "--quiet"]
    env = dict(os.environ)
    if dest.endpoint is not None:
        endpoint = dest.endpoint
        args += ["--endpoint-url", endpoint.endpoint_url, "--addressing-style", "path"]
        env.update(
            AWS_ACCESS_KEY_ID=endpoint.access_key,
            AWS_SECRET_ACCESS_KEY=endpoint.secret_key,
            AWS_DEFAULT_REGION=endpoint.region,
        )
    return args, env


def run_together(args: list[str], env: dict[str, str], count: int) -> list[dict[str, Any]]:
    """Start ``count`` CLI backups at one instant; their JSON results (all must succeed)."""
    at = int(time.time()) + 3.05  # past everyone's imports, early in a second
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LAUNCH, str(at), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    return results


async def test_processes_starting_in_the_same_second_all_succeed(
    destination: Destination, mongo_uri: str, seeded: str
) -> None:
    args, env = cli_args(destination, mongo_uri, seeded)
    same_second = False
    keys: list[str] = []
    for _ in range(3):  # a loaded machine may split the start over two seconds: retry
        results = run_together(args, env, 2)
        keys += [r["archive_key"] for r in results]
        starts = {r["started"][:19] for r in results}
        if len(starts) == 1:
            same_second = True
            break
    assert same_second, "the processes never started within one second"
    assert len(set(keys)) == len(keys)
    assert all(parse_archive_name(k) is not None for k in keys)
    assert claims(destination) == []
    async with destination.storage() as storage:
        listed = await list_archives(storage)
    assert sorted(i.key for i in listed) == sorted(keys)
    assert {i.status for i in listed} == {ArchiveStatus.COMPLETE}


async def test_tasks_in_one_process_all_succeed_and_claims_stay_unlisted(
    destination: Destination, mongo_uri: str, seeded: str
) -> None:
    storage = destination.storage()
    seen_claims: list[str] = []
    listed_meanwhile: list[str] = []

    async def watch() -> None:
        while not seen_claims:
            seen_claims.extend(claims(destination))
            await asyncio.sleep(0.01)
        listed_meanwhile.extend(i.key for i in await list_archives(storage))

    try:
        watcher = asyncio.create_task(watch())
        results = await asyncio.gather(
            *(backup(mongo_uri, storage, database=seeded, batch_size=100) for _ in range(3))
        )
        await asyncio.wait_for(watcher, 30)
    finally:
        await storage.aclose()
    keys = [r.archive_key for r in results]
    assert len(set(keys)) == 3
    assert seen_claims and all(not k.endswith(CLAIM_SUFFIX) for k in listed_meanwhile)
    assert claims(destination) == []


async def test_a_claim_left_behind_costs_only_its_second(
    destination: Destination, mongo_uri: str, seeded: str
) -> None:
    """A backup killed with -9 leaves its claim; later backups take the next free name."""
    now = datetime.now(UTC).replace(microsecond=0)
    stale = [archive_name(now + timedelta(seconds=s), "gzip") + CLAIM_SUFFIX for s in range(6)]
    async with destination.storage() as storage:
        for key in stale:
            await storage.put(key, b"{}\n")
        result = await backup(mongo_uri, storage, database=seeded)
        listed = await list_archives(storage)
    assert result.archive_key + CLAIM_SUFFIX not in stale
    when = parse_archive_name(result.archive_key)
    assert when is not None and when >= now + timedelta(seconds=6)
    assert [i.key for i in listed] == [result.archive_key]
    assert sorted(claims(destination)) == sorted(
        f"nightly/{k}" if destination.bucket else k for k in stale
    )
