"""Two runs restoring one collection at once never publish part of it.

Each scenario runs the real CLI in two processes against FerretDB. The first
goes through a FaultProxy that is stalled once two of its insert batches have
reached the server, so the second always starts while the first's staging
copy is live and half full; the order of the rest is then set by the test
(stall, SIGSTOP/SIGCONT), not by timing. The published collection is compared
with the source, document for document, as raw bytes.
"""

from __future__ import annotations

import asyncio
import json
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
from helpers import server_documents
from pymongo import MongoClient

from mongosnap import backup, heal
from mongosnap.pipelines.lease import LEASES
from mongosnap.pipelines.staging import TEMP_PREFIX

BATCH = 1000
DOCUMENTS = 8000
PAD = 2000


@pytest.fixture
def archived(mongo_uri: str, new_database: str, tmp_path: Path) -> dict[str, Any]:
    """``big`` (8,000 documents of 2 kB: 8 insert batches), backed up, still present."""
    with MongoClient(mongo_uri) as client:
        for start in range(0, DOCUMENTS, BATCH):
            client[new_database].big.insert_many(
                [{"n": n, "pad": os.urandom(PAD)} for n in range(start, start + BATCH)]
            )
    store = tmp_path / "store"
    asyncio.run(backup(mongo_uri, store, database=new_database))
    return {
        "database": new_database,
        "store": str(store),
        "before": sorted(server_documents(mongo_uri, new_database, "big")),
    }


def _host(uri: str) -> str:
    return uri.split("://", 1)[1].rstrip("/")


def _port(uri: str) -> int:
    return int(_host(uri).rsplit(":", 1)[1])


def _names(uri: str, database: str) -> set[str]:
    with MongoClient(uri) as client:
        return set(client[database].list_collection_names())


def _staged(uri: str, database: str) -> list[str]:
    return sorted(c for c in _names(uri, database) if c.startswith(TEMP_PREFIX))


def _wait(condition: Callable[[], bool], what: str, *procs: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        for proc in procs:
            assert proc.poll() is None, f"ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.005)


def _start(host: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mongosnap", *args, "--workers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _first_stalled_mid_load(
    proxy: FaultProxy, uri: str, database: str, args: list[str]
) -> tuple[subprocess.Popen[str], str]:
    """Start the first run through the proxy; stall it once two batches are in.

    Returns the process and its staging copy's name.
    """
    first = _start(proxy.address, *args)
    _wait(lambda: proxy.counters.bytes_up >= 2 * BATCH * PAD, "two batches sent", first)
    proxy.stall = True
    staged = _staged(uri, database)
    assert len(staged) == 1, staged
    return first, staged[0]


def _assert_whole_and_clean(uri: str, state: dict[str, Any]) -> None:
    database = state["database"]
    published = sorted(server_documents(uri, database, "big"))
    assert len(published) == DOCUMENTS
    assert published == state["before"]
    assert not [c for c in _names(uri, database) if c.startswith(TEMP_PREFIX) or c == LEASES]


def test_two_heals_at_once_publish_the_whole_collection(
    mongo_uri: str, archived: dict[str, Any]
) -> None:
    """The second heal starts while the first is half way: it leaves the
    collection to the first (exit 15) instead of dropping its staging copy."""
    database = archived["database"]
    with MongoClient(mongo_uri) as client:
        client[database].drop_collection("big")
    heal_args = ["heal", archived["store"]]
    with FaultProxy(("127.0.0.1", _port(mongo_uri))) as proxy:
        first, first_staging = _first_stalled_mid_load(
            proxy, mongo_uri, database, [*heal_args, proxy.address, database, "big"]
        )
        second = _start(_host(mongo_uri), *heal_args, _host(mongo_uri), database, "big")
        # Until the second has either given up or dropped the first's copy;
        # then the first finishes before the second may publish.
        _wait(
            lambda: second.poll() is not None or first_staging not in _names(mongo_uri, database),
            "second run decided",
        )
        if second.poll() is None:
            second.send_signal(signal.SIGSTOP)
        proxy.stall = False
        out, err = first.communicate(timeout=120)
        second.send_signal(signal.SIGCONT)
        second_out, second_err = second.communicate(timeout=120)

    _assert_whole_and_clean(mongo_uri, archived)
    assert first.returncode == 0, err
    assert "big: restored from" in out
    assert second.returncode == 15, second_err
    assert "big: being restored by another run; left to it" in second_out
    assert "being healed by another run" in second_err and "Traceback" not in second_err


def test_two_restores_with_drop_at_once_publish_the_whole_collection(
    mongo_uri: str, archived: dict[str, Any]
) -> None:
    """``restore --drop`` twice at once: the second leaves the collection to
    the first, which replaces it with the whole archived copy."""
    database = archived["database"]
    with MongoClient(mongo_uri) as client:
        client[database].big.delete_many({"n": {"$lt": 10}})  # the copy to be replaced
    restore_args = ["restore", "latest", archived["store"]]
    with FaultProxy(("127.0.0.1", _port(mongo_uri))) as proxy:
        first, _ = _first_stalled_mid_load(
            proxy, mongo_uri, database, [*restore_args, proxy.address, database, "--drop"]
        )
        second = _start(
            _host(mongo_uri), *restore_args, _host(mongo_uri), database, "--drop", "--json"
        )
        second_out, second_err = second.communicate(timeout=120)
        proxy.stall = False  # the first publishes last
        _, err = first.communicate(timeout=120)

    _assert_whole_and_clean(mongo_uri, archived)
    assert first.returncode == 0, err
    assert second.returncode == 15, second_err
    assert "busy" in {c["status"] for c in json.loads(second_out.splitlines()[0])["collections"]}
    assert "another run is restoring them: big" in second_err


async def test_a_staging_copy_dropped_by_someone_else_is_never_published(
    mongo_uri: str, archived: dict[str, Any]
) -> None:
    """Someone without a lease (an older mongosnap, a person) drops the live
    staging copy mid-load; the next insert re-creates it with the rest of the
    documents. All inserts were acknowledged, but its UUID is not the one
    created: the remnant is dropped, never renamed into place."""
    database = archived["database"]
    with MongoClient(mongo_uri) as client:
        client[database].drop_collection("big")
    dropped: list[str] = []

    def drop_after_two_batches(event: Any) -> None:
        if event.documents >= 2 * BATCH and not dropped:
            with MongoClient(mongo_uri) as client:
                dropped.extend(_staged(mongo_uri, database))
                for name in dropped:
                    client[database].drop_collection(name)

    report = await heal(
        mongo_uri,
        archived["store"],
        database=database,
        collections=["big"],
        workers=1,
        progress=drop_after_two_batches,
    )
    assert dropped
    assert [f.name for f in report.failures] == ["big"]
    assert "dropped by someone else" in report.failures[0].error
    assert report.missing == ["big"]
    assert "big" not in _names(mongo_uri, database)
    assert not [c for c in _names(mongo_uri, database) if c.startswith(TEMP_PREFIX) or c == LEASES]
