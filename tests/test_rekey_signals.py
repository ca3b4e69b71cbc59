"""SIGTERM or SIGHUP while ``mongosnap rekey`` runs, on moto behind a proxy
that holds one request (the point) until the signal has come.

Before the swap the old archive stays, its ``.rekey`` objects and upload
gone; once the swap has begun it is finished first. Either way the lock is
removed, the archive complete and readable (old or new recipients), and the
next rekey runs clean.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bson import Binary
from faultproxy import FaultProxy, Hold
from helpers import Destination, make_destination, run_cli, seed, subprocess_env
from pymongo import MongoClient
from test_rekey import _key, _opens

import mongosnap
from mongosnap import Encryption
from mongosnap.catalog import ArchiveStatus, list_archives
from mongosnap.storage import opened

EXIT_CODES = {signal.SIGTERM: 143, signal.SIGHUP: 129}
POINTS = {
    "copy": (b"PUT ", b".rekey?", b"partNumber=1"),  # the new archive's first part
    "temporaries": (b"PUT ", b".manifest.json.rekey HTTP/1.1"),  # the last one, cut
    "swap": (b"DELETE ", b".manifest.json HTTP/1.1"),  # the swap's first step
}


@pytest.fixture(scope="module")
def database(mongo_uri: str) -> Iterator[str]:
    name = f"rekeysig_{uuid.uuid4().hex[:10]}"
    seed(mongo_uri, name, {"small": 30})
    with MongoClient(mongo_uri) as client:  # incompressible, over one 5 MiB part: a multipart copy
        client[name]["big"].insert_many(
            [{"_id": i, "blob": Binary(os.urandom(4000))} for i in range(1400)]
        )
    yield name
    with MongoClient(mongo_uri) as client:
        client.drop_database(name)


async def _status(dest: Destination) -> ArchiveStatus:
    async with opened(dest.url, dest.s3) as storage:
        [info] = await list_archives(storage)
    return info.status


def _wait_held(held: Hold, proc: subprocess.Popen[str]) -> None:
    while not held.reached.wait(0.01):
        assert proc.poll() is None, f"rekey ended first: {proc.communicate()}"


def _left(dest: Destination) -> list[str]:
    """The locks and ``.rekey`` objects in the bucket."""
    return [k for k in dest.keys() if "locks/" in k or k.endswith(".rekey")]  # noqa: SIM118


@pytest.mark.parametrize(
    ("point", "sig"),
    [("copy", signal.SIGTERM), ("temporaries", signal.SIGHUP), ("swap", signal.SIGTERM)],
    ids=["copy-SIGTERM", "temporaries-SIGHUP", "swap-SIGTERM"],
)
def test_a_signal_mid_rekey_leaves_a_complete_archive_and_no_lock(
    mongo_uri: str,
    database: str,
    testbed: Any,
    new_bucket: Any,
    tmp_path: Path,
    point: str,
    sig: signal.Signals,
) -> None:
    dest = make_destination("moto", tmp_path, testbed, new_bucket)
    (a_file, a), (b_file, b), (c_file, c) = (_key(tmp_path / f"{n}.txt") for n in "abc")
    report = asyncio.run(
        mongosnap.backup(
            mongo_uri, dest.url, database=database, s3=dest.s3, encryption=Encryption([a])
        )
    )
    archive = report.archive_key
    host, port = dest.endpoint.endpoint_url.split("://", 1)[1].rsplit(":", 1)
    argv = [sys.executable, "-m", "mongosnap", "rekey", dest.url, "--all"]
    argv += ["--identity", str(a_file), "--encrypt-to", b]
    with FaultProxy((host, int(port))) as proxy:
        env = subprocess_env(dest, AWS_ENDPOINT_URL_S3=f"http://{proxy.address}")
        held = proxy.hold("up", *POINTS[point])
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
        try:
            _wait_held(held, proc)
            proc.send_signal(sig)
            if point == "swap":  # the swap is finished before the run ends: let it
                held.release()
                _, err = proc.communicate(timeout=60)
            else:
                _, err = proc.communicate(timeout=60)
                if point == "copy":  # the part lands after the run has gone
                    held.release()
                else:  # the temporary sidecar never lands
                    proxy.reset_all()
        finally:
            proc.kill()
        proxy.settle()

    assert proc.returncode == EXIT_CODES[sig], err
    assert "Traceback" not in err
    assert _left(dest) == [] and dest.pending_uploads() == []
    assert asyncio.run(_status(dest)) is ArchiveStatus.COMPLETE
    assert asyncio.run(_opens(dest, archive, a_file))
    assert asyncio.run(_opens(dest, archive, b_file)) is (point == "swap")  # old or new

    again = ["rekey", dest.url, "--all", "--identity", str(a_file), "--encrypt-to", c, "--json"]
    done = run_cli(*again, env=subprocess_env(dest))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["finished"] == []
    assert [r["recipients"] for r in result["archives"]] == [3 if point == "swap" else 2]
    assert _left(dest) == [] and asyncio.run(_opens(dest, archive, c_file))
