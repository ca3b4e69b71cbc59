"""The public API: list_archives like the other entry points, one way to open a destination."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import Destination, seed

import mongosnap
from mongosnap import LocalStorage, backup, list_archives, open_storage, opened
from mongosnap.storage import Storage


@pytest.fixture
def backed_up(mongo_uri: str, new_database: str) -> str:
    seed(mongo_uri, new_database, {"apps": 5})
    return new_database


async def test_list_archives_takes_a_url_and_s3_settings(
    destination: Destination, mongo_uri: str, backed_up: str
) -> None:
    result = await backup(mongo_uri, destination.url, database=backed_up, s3=destination.s3)
    listed = await list_archives(destination.url, s3=destination.s3)
    assert [a.key for a in listed] == [result.archive_key]
    assert listed[0].status is mongosnap.ArchiveStatus.COMPLETE


async def test_list_archives_leaves_a_given_storage_open(
    destination: Destination, mongo_uri: str, backed_up: str
) -> None:
    await backup(mongo_uri, destination.url, database=backed_up, s3=destination.s3)
    storage = open_storage(destination.url, s3=destination.s3)
    try:
        first = await list_archives(storage)
        again = await list_archives(storage)  # still usable: not closed behind our back
    finally:
        await storage.aclose()
    assert [a.key for a in first] == [a.key for a in again] and len(first) == 1


async def test_list_archives_on_s3_leaves_no_session_open(
    destination: Destination, mongo_uri: str, backed_up: str
) -> None:
    """In a fresh interpreter: aiohttp warns on stderr of any session left open."""
    await backup(mongo_uri, destination.url, database=backed_up, s3=destination.s3)
    script = (
        "import asyncio, json, sys\n"
        "from mongosnap import S3Config, list_archives\n"
        "url, s3 = sys.argv[1], json.loads(sys.argv[2])\n"
        "found = asyncio.run(list_archives(url, s3=S3Config(**s3) if s3 else None))\n"
        "print(len(found))\n"
    )
    s3: dict[str, Any] | None = None
    if destination.s3 is not None:
        s3 = {
            k: getattr(destination.s3, k)
            for k in ("endpoint_url", "region", "access_key_id", "secret_access_key")
        }
        s3["addressing_style"] = "path"
    done = subprocess.run(
        [
            sys.executable,
            "-W",
            "always::ResourceWarning",
            "-c",
            script,
            destination.url,
            json.dumps(s3),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
    assert "Unclosed" not in done.stderr and "ResourceWarning" not in done.stderr, done.stderr


class _Recording(LocalStorage):
    closed = 0

    async def aclose(self) -> None:
        type(self).closed += 1
        await super().aclose()


async def test_opened_closes_only_what_it_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mongosnap.storage as storage_module

    made: list[Storage] = []

    def recording_open(destination: Any, *, s3: Any = None) -> Storage:
        if isinstance(destination, Storage):
            return destination  # as open_storage does
        made.append(_Recording(str(destination)))
        return made[-1]

    monkeypatch.setattr(storage_module, "open_storage", recording_open)
    _Recording.closed = 0
    async with opened(str(tmp_path)) as storage:
        assert storage is made[0]
    assert _Recording.closed == 1
    with pytest.raises(mongosnap.NoBackupsFound):
        async with opened(str(tmp_path)):
            raise mongosnap.NoBackupsFound("x")
    assert _Recording.closed == 2  # closed on the way out of an error too

    mine = _Recording(str(tmp_path))
    async with opened(mine) as storage:
        assert storage is mine
    assert _Recording.closed == 2  # the caller's: left open


def test_report_element_types_are_exported() -> None:
    from mongosnap.pipelines import engine, heal, prune, verify

    assert mongosnap.Status is engine.Status and mongosnap.Status.RESTORED == "restored"
    assert mongosnap.SkippedArchive is heal.SkippedArchive
    assert mongosnap.PruneDecision is prune.PruneDecision
    assert mongosnap.CollectionCheck is verify.CollectionCheck
    assert mongosnap.Problem is verify.Problem
