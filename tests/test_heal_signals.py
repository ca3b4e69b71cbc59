"""Interrupted or failing mid-load, heal leaves no staging collection and says so truthfully.

Each test stops a heal at a chosen point (k batches in the staging copy, or
a byte offset of the archive's ranged GET), then checks the real server: no
``mongosnap_tmp_*`` collection, and the healed collection either absent or
byte-identical to the original.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FaultProxy
from helpers import make_destination, server_documents
from pymongo import MongoClient

from mongosnap import backup, heal
from mongosnap.pipelines.ledger import StagingLedger
from mongosnap.pipelines.staging import TEMP_PREFIX

BATCH = 1000
DOCUMENTS = 8000
PAD = 2000
EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130, signal.SIGHUP: 129}
"""docs/cli.md: Terminated, Interrupted, HungUp."""


@pytest.fixture
def backed_up(mongo_uri: str, new_database: str, tmp_path: Path) -> dict[str, Any]:
    """``big`` (8,000 documents of 2 kB, 8 insert batches) and ``side``, backed up, then dropped."""
    with MongoClient(mongo_uri) as client:
        db = client[new_database]
        for start in range(0, DOCUMENTS, BATCH):
            db.big.insert_many(
                [{"n": n, "pad": os.urandom(PAD)} for n in range(start, start + BATCH)]
            )
        db.side.insert_many([{"s": n} for n in range(50)])
    before = {n: sorted(server_documents(mongo_uri, new_database, n)) for n in ("big", "side")}
    store = tmp_path / "store"
    asyncio.run(backup(mongo_uri, store, database=new_database))
    _drop(mongo_uri, new_database, "big", "side")
    return {"database": new_database, "store": store, "before": before}


def _drop(uri: str, database: str, *names: str) -> None:
    with MongoClient(uri) as client:
        for name in names:
            client[database].drop_collection(name)


def _staged(client: MongoClient[Any], database: str) -> list[str]:
    return [c for c in client[database].list_collection_names() if c.startswith(TEMP_PREFIX)]


def _reached(uri: str, database: str, batches: int, proxy: FaultProxy) -> Callable[[], bool]:
    """True once a staging copy exists and ``batches`` insert batches went to the server.

    Batches are counted in bytes through the proxy (each is about 2 MB):
    cheap enough to poll without slowing the heal down.
    """
    client: MongoClient[Any] = MongoClient(uri)
    started = proxy.counters.bytes_up

    def check() -> bool:
        if batches:
            return proxy.counters.bytes_up - started >= batches * BATCH * PAD
        return bool(_staged(client, database))

    return check


def _port(uri: str) -> int:
    return int(uri.rsplit(":", 1)[1].split("/")[0])


def _assert_clean(uri: str, state: dict[str, Any]) -> None:
    """No staging copy; each collection absent or exactly the original."""
    database = state["database"]
    with MongoClient(uri) as client:
        assert _staged(client, database) == []
        present = set(client[database].list_collection_names())
    for name in ("big", "side"):
        if name in present:
            assert sorted(server_documents(uri, database, name)) == state["before"][name], name


@pytest.mark.parametrize(
    ("sig", "batches"),
    [
        (signal.SIGTERM, 0),
        (signal.SIGTERM, 1),
        (signal.SIGTERM, 2),
        (signal.SIGTERM, 4),
        (signal.SIGTERM, 6),
        (signal.SIGINT, 1),
        (signal.SIGINT, 5),
        (signal.SIGHUP, 0),
        (signal.SIGHUP, 1),
        (signal.SIGHUP, 4),
    ],
)
def test_a_signal_mid_heal_leaves_nothing(
    mongo_uri: str, backed_up: dict[str, Any], sig: signal.Signals, batches: int
) -> None:
    database = backed_up["database"]
    with FaultProxy(("127.0.0.1", _port(mongo_uri))) as proxy:
        command = [sys.executable, "-m", "mongosnap", "heal", str(backed_up["store"])]
        proc = subprocess.Popen(
            [*command, proxy.address, database, "big", "side", "--workers", "2"],
            stderr=subprocess.PIPE,
            text=True,
        )
        reached = _reached(mongo_uri, database, batches, proxy)
        deadline = time.monotonic() + 120
        while not reached():
            assert proc.poll() is None, f"heal ended before {batches} batches: {proc.communicate()}"
            assert time.monotonic() < deadline, "heal never got there"
            time.sleep(0.001)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)

    assert proc.returncode == EXIT_CODES[sig], err
    assert "Traceback" not in err
    _assert_clean(mongo_uri, backed_up)
    assert "nothing was left behind" in err  # true: checked just above


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"])
def test_a_signal_mid_heal_of_a_watch_ends_it_cleanly(
    mongo_uri: str, backed_up: dict[str, Any], sig: signal.Signals
) -> None:
    """A watch stopped mid-heal drops its staging copy and exits 0."""
    database = backed_up["database"]
    with FaultProxy(("127.0.0.1", _port(mongo_uri))) as proxy:
        command = [sys.executable, "-m", "mongosnap", "heal", str(backed_up["store"])]
        proc = subprocess.Popen(
            [*command, proxy.address, database, "big", "side", "--interval", "3600"],
            stderr=subprocess.PIPE,
            text=True,
        )
        reached = _reached(mongo_uri, database, 2, proxy)
        deadline = time.monotonic() + 120
        while not reached():
            assert proc.poll() is None, f"watch ended early: {proc.communicate()}"
            assert time.monotonic() < deadline, "watch never got there"
            time.sleep(0.001)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)

    assert proc.returncode == 0, err
    assert "watch stopped; nothing was left behind" in err and "Traceback" not in err
    _assert_clean(mongo_uri, backed_up)


@pytest.mark.parametrize("batches", [0, 2, 5])
@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_a_cancelled_heal_leaves_nothing(
    mongo_uri: str, backed_up: dict[str, Any], batches: int, how: str
) -> None:
    ledger = StagingLedger()
    proxy = FaultProxy(("127.0.0.1", _port(mongo_uri))).start()
    reached = _reached(mongo_uri, backed_up["database"], batches, proxy)

    async def run() -> None:
        await heal(
            f"mongodb://{proxy.address}/",
            backed_up["store"],
            database=backed_up["database"],
            collections=["big", "side"],
            workers=2,
            ledger=ledger,
        )

    task = asyncio.ensure_future(run())
    try:
        await _stop(task, reached, how)
    finally:
        proxy.close()
    _assert_clean(mongo_uri, backed_up)
    assert ledger.statement() == "nothing was left behind"


async def _stop(task: asyncio.Future[None], reached: Callable[[], bool], how: str) -> None:
    """Cancel ``task``, or let a timeout around it expire, once ``reached``."""
    if how == "cancel":
        while not reached():
            assert not task.done(), task
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(None) as scope:
                while not reached():
                    assert not task.done(), task
                    await asyncio.sleep(0.001)
                scope.reschedule(asyncio.get_running_loop().time())  # time is up, now
                await task


@pytest.mark.parametrize("batches", [1, 3, 6])
async def test_a_mongodb_connection_reset_fails_that_collection_only(
    mongo_uri: str, backed_up: dict[str, Any], batches: int
) -> None:
    with FaultProxy(("127.0.0.1", _port(mongo_uri))) as proxy:
        reached = _reached(mongo_uri, backed_up["database"], batches, proxy)
        task = asyncio.ensure_future(
            heal(
                f"mongodb://{proxy.address}/",
                backed_up["store"],
                database=backed_up["database"],
                collections=["big", "side"],
                workers=2,
            )
        )
        while not reached():
            assert not task.done(), task
            await asyncio.sleep(0.001)
        assert proxy.reset_all() >= 1
        report = await task

    assert report.failed == ["big"], report
    assert "cannot reach MongoDB" in report.failures[0].error
    assert [o.name for o in report.restored] == ["side"]
    _assert_clean(mongo_uri, backed_up)


@pytest.mark.parametrize("offset", [200_000, 4_000_000, 11_000_000])
@pytest.mark.parametrize("server", ["moto", "versitygw"])
async def test_an_s3_reset_mid_read_takes_the_next_archive(
    mongo_uri: str,
    new_database: str,
    testbed: Any,
    new_bucket: Any,
    tmp_path: Path,
    server: str,
    offset: int,
) -> None:
    with MongoClient(mongo_uri) as client:
        client[new_database].big.insert_many(
            [{"n": n, "pad": os.urandom(2000)} for n in range(DOCUMENTS)]
        )
        client[new_database].side.insert_many([{"s": n} for n in range(50)])
    before = {n: sorted(server_documents(mongo_uri, new_database, n)) for n in ("big", "side")}
    dest = make_destination(server, tmp_path, testbed, new_bucket)
    older = await backup(mongo_uri, dest.url, database=new_database, s3=dest.s3)
    newer = await backup(mongo_uri, dest.url, database=new_database, s3=dest.s3)
    assert newer.archive_key > older.archive_key
    _drop(mongo_uri, new_database, "big", "side")
    assert dest.s3 is not None and dest.s3.endpoint_url is not None
    endpoint = dest.s3.endpoint_url
    host, port = endpoint.split("://", 1)[1].rsplit(":", 1)

    with FaultProxy((host, int(port))) as proxy:
        # Whichever connection carries that many bytes down is reset: only the
        # ranged GET of ``big`` does. After the first reset the network is fine.
        proxy.reset_after(down=offset, count=100)
        via_proxy = dataclasses.replace(dest.s3, endpoint_url=f"http://{proxy.address}")
        task = asyncio.ensure_future(
            heal(
                mongo_uri,
                dest.url,
                database=new_database,
                collections=["big", "side"],
                s3=via_proxy,
            )
        )
        while not proxy.counters.resets and not task.done():
            await asyncio.sleep(0.001)
        proxy.heal()
        report = await task
        assert proxy.counters.resets == 1

    assert report.ok, report
    assert [(f.name, f.archive) for f in report.failures] == [("big", newer.archive_key)]
    archives = {o.name: o.archive for o in report.restored}
    assert archives == {"big": older.archive_key, "side": newer.archive_key}
    _assert_clean(mongo_uri, {"database": new_database, "before": before})
    for name in ("big", "side"):
        assert sorted(server_documents(mongo_uri, new_database, name)) == before[name]


def test_what_could_not_be_dropped_is_named_not_denied(
    mongo_uri: str, backed_up: dict[str, Any]
) -> None:
    """SIGTERM while the server is unreachable: the message names the staging
    copy. Its lease could not be given back either: a rerun once it has
    expired takes it over and drops the copy."""
    database = backed_up["database"]
    host = mongo_uri.split("://", 1)[1].rstrip("/")
    env = {**os.environ, "MONGOSNAP_LEASE_SECONDS": "3"}
    with FaultProxy(("127.0.0.1", _port(mongo_uri))) as proxy:
        command = [sys.executable, "-m", "mongosnap", "heal", str(backed_up["store"])]
        proc = subprocess.Popen(
            [*command, proxy.address, database, "big", "--connect-timeout", "1"],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        reached = _reached(mongo_uri, database, 2, proxy)
        while not reached():
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.001)
        proxy.outage(600)
        cut_off = time.monotonic()  # no renewal reaches the server after this
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=180)

    assert proc.returncode == 143, err
    assert "nothing was left behind" not in err
    with MongoClient(mongo_uri) as client:
        left = _staged(client, database)
    assert len(left) == 1 and f"{database}.{left[0]}" in err, err

    time.sleep(max(0.0, cut_off + 3 - time.monotonic()))
    rerun = subprocess.run(
        [*command, host, database, "big"], capture_output=True, text=True, env=env
    )
    assert rerun.returncode == 0, rerun.stderr
    _assert_clean(mongo_uri, backed_up)
    assert sorted(server_documents(mongo_uri, database, "big")) == backed_up["before"]["big"]
