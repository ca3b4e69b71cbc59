"""Orphan sidecars and name claims that interrupted backups leave: list finds
them, prune removes the stale ones and never a running backup's claim.

On every destination kind, with real storage: what counts as stale is asked
with a clock moved a day on (``now``); on a directory, where a file's time
can be set, the CLI's prune runs on files made old with ``os.utime``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import Destination, run_cli, seed

from mongosnap import backup
from mongosnap.archive.manifest import archive_name
from mongosnap.catalog import ArchiveStatus, list_archives
from mongosnap.pipelines.leftovers import (
    CLAIM,
    ORPHAN_SIDECAR,
    find_leftovers,
    remove_stale_leftovers,
)

DAY = timedelta(hours=25)


def _put(dest: Destination, key: str, body: bytes) -> None:
    async def put() -> None:
        storage = dest.storage()
        try:
            await storage.put(key, body)
        finally:
            await storage.aclose()

    asyncio.run(put())


async def _leftovers(dest: Destination, now: datetime | None = None, dry: bool = False) -> Any:
    storage = dest.storage()
    try:
        found = {x.key: x.kind for x in await find_leftovers(storage)}
        removed = [x.key for x in await remove_stale_leftovers(storage, dry_run=dry, now=now)]
        return found, sorted(removed)
    finally:
        await storage.aclose()


def test_stale_orphan_sidecars_and_claims_are_found_then_removed(
    destination: Destination, mongo_uri: str, new_database: str
) -> None:
    seed(mongo_uri, new_database, {"users": 3})
    done = asyncio.run(backup(mongo_uri, destination.url, database=new_database, s3=destination.s3))
    key = done.archive_key
    prefix = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
    gone = prefix + archive_name(datetime(2026, 1, 2, tzinfo=UTC), "gzip")
    sidecar = asyncio.run(_read(destination, done.manifest_key))
    _put(destination, gone + ".manifest.json", sidecar)  # its archive was withdrawn
    _put(destination, key + ".claim", b"{}")  # the release of a finished backup's claim failed
    orphans = {gone + ".manifest.json": ORPHAN_SIDECAR, key + ".claim": CLAIM}

    found, removed = asyncio.run(_leftovers(destination))
    assert found == orphans  # the complete archive's own sidecar is no orphan
    assert removed == []  # all fresh
    found, removed = asyncio.run(_leftovers(destination, datetime.now(UTC) + DAY, dry=True))
    assert removed == sorted(orphans) and found == orphans  # dry run: named, kept
    found, removed = asyncio.run(_leftovers(destination, datetime.now(UTC) + DAY))
    assert removed == sorted(orphans)
    assert asyncio.run(_leftovers(destination))[0] == {}
    statuses = [a.status for a in asyncio.run(list_archives(destination.url, s3=destination.s3))]
    assert statuses == [ArchiveStatus.COMPLETE]  # the archive and its sidecar untouched


async def _read(dest: Destination, key: str) -> bytes:
    storage = dest.storage()
    try:
        return b"".join([chunk async for chunk in storage.read(key)])
    finally:
        await storage.aclose()


@pytest.mark.parametrize("kind", ["local"])
def test_prune_cli_removes_stale_leftovers_never_a_running_backups_claim(
    kind: str, tmp_path: Path
) -> None:
    root = tmp_path / "backups"
    root.mkdir()
    old = datetime.now(UTC) - timedelta(days=3)
    stamp = time.time() - 3 * 86400

    def old_file(name: str, body: bytes = b"{}") -> Path:
        path = root / name
        path.write_bytes(body)
        os.utime(path, (stamp, stamp))
        return path

    dead = archive_name(old, "gzip")
    running = archive_name(old + timedelta(seconds=1), "gzip")
    old_file(dead + ".claim")
    old_file(archive_name(old + timedelta(seconds=2), "gzip") + ".manifest.json")
    old_file(running + ".claim")
    # The running backup's unfinished write, which grew a moment ago.
    (root / f".{running}.x1.partial").write_bytes(b"x" * 10)
    fresh = archive_name(datetime.now(UTC), "gzip") + ".claim"
    (root / fresh).write_bytes(b"{}")

    listed = run_cli("list", str(root))
    assert "4 leftovers of interrupted backups" in listed.stdout, listed.stdout
    shown = json.loads(run_cli("list", str(root), "--leftovers", "--json").stdout)
    assert {x["key"]: x["stale"] for x in shown} == {
        dead + ".claim": True,
        running + ".claim": False,
        archive_name(old + timedelta(seconds=2), "gzip") + ".manifest.json": True,
        fresh: False,
    }
    done = run_cli("prune", str(root), "--keep-last", "1", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert sorted(report["leftovers_removed"]) == sorted(
        [dead + ".claim", archive_name(old + timedelta(seconds=2), "gzip") + ".manifest.json"]
    )
    left = sorted(p.name for p in root.iterdir())
    assert left == sorted([f".{running}.x1.partial", running + ".claim", fresh])
