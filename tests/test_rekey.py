"""``rekey``: recipients added and removed without re-encrypting, on a directory,
moto and versitygw; interrupted rekeys (docs/format.md, "Rekeying").

The archive is over 5 MiB of incompressible data, so on S3 the payload after
the first part is copied by the server (UploadPartCopy). A crash is made by
a storage that raises at one chosen request, on the real backends.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bson import Binary
from helpers import Destination, make_destination, run_cli, seed, server_documents, subprocess_env
from pymongo import MongoClient
from test_json_schemas import check as check_schema

import mongosnap
from mongosnap import DestinationBusy, Encryption, Keys, NoIdentity
from mongosnap.catalog import ArchiveStatus, list_archives
from mongosnap.crypto.header import Header
from mongosnap.crypto.keys import X25519Identity
from mongosnap.pipelines import runlock
from mongosnap.pipelines.leftovers import REKEY_COPY, find_leftovers, remove_stale_leftovers
from mongosnap.pipelines.rekey import rekey
from mongosnap.storage import Storage, opened

BIG_DOCS = 1600
DOC_BYTES = 4000  # random: the archive is about 6.4 MB, over one 5 MiB part


class Crash(Exception):
    """Stands for the process dying at that request."""


class CrashingStorage:
    """The real storage, raising Crash when ``method`` is called with ``key``."""

    def __init__(self, inner: Storage, method: str, key: str) -> None:
        self._inner, self._method, self._key = inner, method, key

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name != self._method:
            return attr

        async def crashing(key: str, *args: Any, **kwargs: Any) -> Any:
            if key == self._key:
                raise Crash(f"{name} {key}")
            return await attr(key, *args, **kwargs)

        return crashing


def _key(path: Path) -> tuple[Path, str]:
    identity = X25519Identity.generate()
    path.write_text(identity.export() + "\n")
    return path, str(identity.recipient)


@pytest.fixture(scope="module")
def database(mongo_uri: str) -> Iterator[str]:
    name = f"rekey_{uuid.uuid4().hex[:10]}"
    seed(mongo_uri, name, {"small": 30})
    with MongoClient(mongo_uri) as client:
        client[name]["big"].insert_many(
            [{"_id": i, "blob": Binary(os.urandom(DOC_BYTES))} for i in range(BIG_DOCS)]
        )
    yield name
    with MongoClient(mongo_uri) as client:
        client.drop_database(name)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    return {name: _key(tmp_path / f"{name}.txt") for name in ("a", "b", "c")}


async def _backup(uri: str, dest: Destination, database: str, recipient: str) -> str:
    report = await mongosnap.backup(
        uri, dest.url, database=database, s3=dest.s3, encryption=Encryption([recipient])
    )
    return report.archive_key


def _stored(dest: Destination) -> list[str]:
    return list(dest.keys())


def _copies(dest: Destination) -> list[str]:
    names = dest.keys()
    return [k for k in names if k.endswith(".rekey")]


def _object_key(dest: Destination, key: str) -> str:
    return key if dest.root is not None else f"nightly/{key}"


def _payload(data: bytes) -> bytes:
    """The nonce and payload: everything after the age header."""
    return data[Header.parse(data[:65536])[1] :]


async def _on(dest: Destination, call: Any, *args: Any, **kwargs: Any) -> Any:
    """call(storage, ...) on the destination's storage, closed afterwards."""
    async with opened(dest.url, dest.s3) as storage:
        return await call(storage, *args, **kwargs)


async def _opens(dest: Destination, archive: str, key_file: Path) -> bool:
    try:
        report = await mongosnap.verify(dest.url, archive, s3=dest.s3, keys=Keys([key_file]))
    except NoIdentity:
        return False
    assert report.ok, report.to_dict()
    return True


async def test_rekey_adds_then_removes_a_recipient(
    mongo_uri: str,
    database: str,
    keys: dict[str, tuple[Path, str]],
    testbed: Any,
    new_bucket: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    for kind in ("local", "moto", "versitygw"):
        dest = make_destination(kind, tmp_path / kind, testbed, new_bucket)
        (a_file, a), (b_file, b) = keys["a"], keys["b"]
        archive = await _backup(mongo_uri, dest, database, a)
        old = dest.get(_object_key(dest, archive))
        assert len(old) > 6 << 20
        assert not await _opens(dest, archive, b_file)

        added = await rekey(
            dest.url, [archive], keys=Keys([a_file]), add=Encryption([b]), s3=dest.s3
        )
        assert [(r.key, r.stanzas, r.added) for r in added.archives] == [(archive, 2, 1)]
        new = dest.get(_object_key(dest, archive))
        assert _payload(new) == _payload(old) and new != old, kind
        assert await _opens(dest, archive, b_file) and await _opens(dest, archive, a_file)
        assert not _copies(dest) and not dest.pending_uploads()

        removed = await rekey(
            dest.url, [archive], keys=Keys([a_file, b_file]), remove=[a], s3=dest.s3
        )
        assert [(r.stanzas, r.removed) for r in removed.archives] == [(1, 1)]
        assert not await _opens(dest, archive, a_file)
        assert _payload(dest.get(_object_key(dest, archive))) == _payload(old)
        target = f"{database}_{kind}"
        await mongosnap.restore(
            mongo_uri, dest.url, archive, database=database, s3=dest.s3,
            keys=Keys([b_file]), to_database=target,
        )  # fmt: skip
        try:
            for name in ("small", "big"):
                restored = server_documents(mongo_uri, target, name)
                assert sorted(restored) == sorted(server_documents(mongo_uri, database, name))
        finally:
            with MongoClient(mongo_uri) as client:
                client.drop_database(target)


@pytest.mark.parametrize("kind", ["local", "moto"])
async def test_a_crash_before_the_swap_leaves_the_old_archive_trusted(
    mongo_uri: str,
    database: str,
    keys: dict[str, tuple[Path, str]],
    testbed: Any,
    new_bucket: Any,
    tmp_path: Path,
    kind: str,
) -> None:
    dest = make_destination(kind, tmp_path, testbed, new_bucket)
    (a_file, a), (b_file, b) = keys["a"], keys["b"]
    archive = await _backup(mongo_uri, dest, database, a)
    old = dest.get(_object_key(dest, archive))
    async with opened(dest.url, dest.s3) as inner:
        storage = CrashingStorage(inner, "put", f"{archive}.manifest.json.rekey")
        with pytest.raises(Crash):
            await rekey(storage, [archive], keys=Keys([a_file]), add=Encryption([b]))  # type: ignore[arg-type]
    assert dest.get(_object_key(dest, archive)) == old
    [info] = await _on(dest, list_archives)
    assert info.status is ArchiveStatus.COMPLETE and info.trusted
    assert await _opens(dest, archive, a_file) and not await _opens(dest, archive, b_file)

    leftovers = await _on(dest, find_leftovers)
    assert {x.kind for x in leftovers} == {REKEY_COPY} and len(leftovers) == 2
    listed = run_cli("list", dest.url, "--leftovers", "--json", env=subprocess_env(dest))
    assert listed.returncode == 0, listed.stderr
    assert REKEY_COPY in listed.stdout
    later = datetime.now(UTC) + timedelta(days=3)
    removed = await _on(dest, remove_stale_leftovers, now=later)
    assert len(removed) == 2
    assert not _copies(dest)


@pytest.mark.parametrize("kind", ["local", "moto"])
async def test_a_crash_inside_the_swap_is_finished_by_the_next_rekey(
    mongo_uri: str,
    database: str,
    keys: dict[str, tuple[Path, str]],
    testbed: Any,
    new_bucket: Any,
    tmp_path: Path,
    kind: str,
) -> None:
    dest = make_destination(kind, tmp_path, testbed, new_bucket)
    (a_file, a), (b_file, b), (c_file, c) = keys["a"], keys["b"], keys["c"]
    archive = await _backup(mongo_uri, dest, database, a)
    old = dest.get(_object_key(dest, archive))
    async with opened(dest.url, dest.s3) as inner:
        storage = CrashingStorage(inner, "delete", archive)
        with pytest.raises(Crash):
            await rekey(storage, [archive], keys=Keys([a_file]), add=Encryption([b]))  # type: ignore[arg-type]
    [info] = await _on(dest, list_archives)
    assert info.status is not ArchiveStatus.COMPLETE  # no reader uses a half-swapped archive
    later = datetime.now(UTC) + timedelta(days=3)
    assert await _on(dest, remove_stale_leftovers, now=later) == []  # prune keeps them

    done = run_cli(
        "rekey", dest.url, "--all", "--identity", str(a_file), "--encrypt-to", c, "--json",
        env=subprocess_env(dest),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    check_schema("rekey", result)
    assert result["finished"] == [archive]
    assert [r["recipients"] for r in result["archives"]] == [3]
    assert _payload(dest.get(_object_key(dest, archive))) == _payload(old)
    for key_file in (a_file, b_file, c_file):
        assert await _opens(dest, archive, key_file)
    assert not _copies(dest) and not dest.pending_uploads()


def test_rekey_refusals(tmp_path: Path, keys: dict[str, tuple[Path, str]]) -> None:
    a_file, b = keys["a"][0], keys["b"][1]
    root = tmp_path / "empty"
    root.mkdir()
    cases = [
        (["rekey", str(root), "--all", "--encrypt-to", b], 2, "--identity"),
        (["rekey", str(root), "--all", "--identity", str(a_file)], 2, "nothing to change"),
        (["rekey", str(root), "--identity", str(a_file), "--encrypt-to", b], 2, "--all"),
        (
            ["rekey", str(root), "--all", "--identity", str(a_file), "--remove-recipient", b],
            2,
            "give its identity",
        ),
    ]
    for argv, code, needle in cases:
        done = run_cli(*argv)
        assert done.returncode == code, (argv, done.stderr)
        assert needle in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("kind", ["local", "moto"])
async def test_a_second_rekey_of_a_destination_is_refused_while_one_runs(
    mongo_uri: str,
    database: str,
    keys: dict[str, tuple[Path, str]],
    testbed: Any,
    new_bucket: Any,
    tmp_path: Path,
    kind: str,
) -> None:
    dest = make_destination(kind, tmp_path, testbed, new_bucket)
    (a_file, a), (_, b) = keys["a"], keys["b"]
    archive = await _backup(mongo_uri, dest, database, a)
    old = dest.get(_object_key(dest, archive))
    argv = ["rekey", dest.url, "--all", "--identity", str(a_file), "--encrypt-to", b]
    async with opened(dest.url, dest.s3) as storage, runlock.holding(storage, "rekey"):
        busy = run_cli(*argv, env=subprocess_env(dest))
        assert busy.returncode == 27, busy.stderr  # DestinationBusy
        assert "another rekey of" in busy.stderr and "Traceback" not in busy.stderr
        assert dest.get(_object_key(dest, archive)) == old and not _copies(dest)
        held = [k for k in _stored(dest) if "locks/rekey-" in k]
        assert len(held) == 1  # the refused run removed its own lock, not ours
    assert not [k for k in _stored(dest) if "locks/" in k]  # the holder's is gone too
    done = run_cli(*argv, "--json", env=subprocess_env(dest))
    assert done.returncode == 0, done.stderr
    assert [r["recipients"] for r in json.loads(done.stdout)["archives"]] == [2]
    assert not [k for k in _stored(dest) if "locks/" in k]


async def test_two_runs_taking_the_lock_at_once_never_both_hold_it(tmp_path: Path) -> None:
    from mongosnap.storage import LocalStorage

    inside: list[str] = []
    overlaps = 0

    async def one(storage: Storage, name: str) -> bool:
        nonlocal overlaps
        try:
            async with runlock.holding(storage, "rekey"):
                inside.append(name)
                overlaps += len(inside) > 1
                await asyncio.sleep(0.01)
                inside.remove(name)
                return True
        except DestinationBusy:
            return False

    for _ in range(50):
        first, second = LocalStorage(tmp_path), LocalStorage(tmp_path)
        await asyncio.gather(one(first, "a"), one(second, "b"))
        assert not list(tmp_path.glob("locks/*"))
    assert overlaps == 0


async def test_a_stale_lock_is_removed_and_a_live_one_refreshed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mongosnap.storage import LocalStorage

    storage = LocalStorage(tmp_path)
    locks = tmp_path / "locks"
    locks.mkdir()
    dead = locks / "rekey-20261201T000000000-0123456789ab.json"
    dead.write_text("{}")
    long_ago = (datetime.now(UTC) - timedelta(hours=2)).timestamp()
    os.utime(dead, (long_ago, long_ago))
    (locks / "rekey-nonsense.json").write_text("{}")  # not a lock: left alone
    monkeypatch.setattr(runlock, "REFRESH", timedelta(seconds=0.05))

    def stored() -> list[str]:  # not the temporary file of a write under way
        return sorted(p.name for p in locks.iterdir() if not p.name.startswith("."))

    async with runlock.holding(storage, "rekey"):
        first = stored()
        await asyncio.sleep(0.5)
        later = stored()
    assert dead.name not in first and "rekey-nonsense.json" in first
    ours = [n for n in later if n != "rekey-nonsense.json"]
    # refreshed: a new object (with, for an instant, the old one not yet deleted)
    assert 1 <= len(ours) <= 2 and ours[-1] not in first
    assert stored() == ["rekey-nonsense.json"]
