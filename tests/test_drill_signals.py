"""A drill stopped by SIGTERM, SIGINT or SIGHUP drops its scratch database.

Each test stops ``mongosnap drill`` at a chosen point: once its scratch
database exists, after k insert batches went to the server (counted through
a fault proxy), or while its check reads the restored copy back (that read
held by the proxy). Then the real server must hold no scratch database, and
the live database must be as it was.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FaultProxy, Hold
from pymongo import MongoClient

from mongosnap import backup

BATCH = 1000
DOCUMENTS = 4000
PAD = 2000
EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130, signal.SIGHUP: 129}
CHECK_READ = b"\x02find\x00\x04\x00\x00\x00big\x00"
"""The find command the drill's check sends for the scratch copy of ``big``."""


@pytest.fixture(scope="module")
def backed_up(mongo_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    database = f"mongosnap_test_{uuid.uuid4().hex[:12]}"
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    db = client[database]
    for start in range(0, DOCUMENTS, BATCH):
        db.big.insert_many([{"n": n, "pad": os.urandom(PAD)} for n in range(start, start + BATCH)])
    db.side.insert_many([{"s": n} for n in range(50)])
    store = tmp_path_factory.mktemp("drill-signals") / "store"
    asyncio.run(backup(mongo_uri, store, database=database))
    yield {"database": database, "store": store, "client": client}
    client.drop_database(database)
    client.close()


def _port(uri: str) -> int:
    return int(uri.rsplit(":", 1)[1].split("/")[0])


def _scratch(client: MongoClient[Any], database: str) -> list[str]:
    return [n for n in client.list_database_names() if n.startswith(f"{database}__drill_")]


def _point(
    where: str, client: MongoClient[Any], database: str, proxy: FaultProxy
) -> tuple[Callable[[], bool], Hold | None]:
    if where == "check":
        hold = proxy.hold("up", CHECK_READ)
        return hold.reached.is_set, hold
    if where == "scratch":
        return lambda: bool(_scratch(client, database)), None
    batches = int(where.split()[0])
    started = proxy.counters.bytes_up
    return lambda: proxy.counters.bytes_up - started >= batches * BATCH * PAD, None


@pytest.mark.parametrize(
    ("sig", "where"),
    [
        (signal.SIGTERM, "scratch"),
        (signal.SIGTERM, "2 batches"),
        (signal.SIGTERM, "check"),
        (signal.SIGINT, "1 batches"),
        (signal.SIGINT, "check"),
        (signal.SIGHUP, "scratch"),
        (signal.SIGHUP, "3 batches"),
        (signal.SIGHUP, "check"),
    ],
)
def test_a_signal_mid_drill_leaves_nothing(
    mongo_uri: str, backed_up: dict[str, Any], sig: signal.Signals, where: str
) -> None:
    database, client = backed_up["database"], backed_up["client"]
    with FaultProxy(("127.0.0.1", _port(mongo_uri))) as proxy:
        reached, hold = _point(where, client, database, proxy)
        command = [sys.executable, "-m", "mongosnap", "drill", str(backed_up["store"])]
        proc = subprocess.Popen(
            [*command, proxy.address, database, "--workers", "2"],
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parent.parent,
        )
        deadline = time.monotonic() + 120
        while not reached():
            assert proc.poll() is None, f"drill ended before {where}: {proc.communicate()}"
            assert time.monotonic() < deadline, f"drill never reached {where}"
            time.sleep(0.001)
        proc.send_signal(sig)
        if hold is not None:
            hold.release()
        _, err = proc.communicate(timeout=120)

    assert proc.returncode == EXIT_CODES[sig], err
    assert "Traceback" not in err
    assert _scratch(client, database) == []
    assert "nothing was left behind" in err  # true: checked just above
    db = client[database]
    assert sorted(db.list_collection_names()) == ["big", "side"]
    assert (db.big.count_documents({}), db.side.count_documents({})) == (DOCUMENTS, 50)
