"""SIGTERM to a real ``mongosnap backup`` at each phase: what it says is what is left.

A fault proxy holds one request (to FerretDB or to S3) so that the signal
lands in a known phase: mid-stream (a getMore held), after the last part but
before CompleteMultipartUpload, between the archive's completion and its
sidecar PUT (the completion's answer held), during the sidecar PUT, and after
the sidecar (the claim's DELETE, or the source's endSessions, held). The
request is released half a second after the signal, as a slow network would,
and lands whatever the client did meanwhile. Afterwards the destination holds
either one archive that lists COMPLETE, or nothing (no object, sidecar,
multipart upload or claim), and the message says which.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from faultproxy import FaultProxy, Hold
from helpers import Destination, make_destination, subprocess_env
from pymongo import MongoClient

from mongosnap.catalog import ArchiveStatus, newest_archives

BLOB = 1 << 20
BLOBS = 7  # ~7 MB of incompressible data: two 5 MiB parts

NOTHING = "nothing was left behind"
COMPLETE = "is complete (it lists as COMPLETE)"

# phase -> (who is held: "mongo" or "s3", way, patterns, outcome)
PHASES: dict[str, tuple[str, str, tuple[bytes, ...], str]] = {
    "mid-stream": ("mongo", "up", (b"getMore",), NOTHING),
    "before CompleteMultipartUpload": ("s3", "up", (b"POST ", b"uploadId="), COMPLETE),
    "between archive and sidecar": ("s3", "down", (b"CompleteMultipartUploadResult",), COMPLETE),
    "during the sidecar PUT": ("s3", "up", (b"PUT ", b".manifest.json"), COMPLETE),
    "after the sidecar (claim DELETE)": ("s3", "up", (b"DELETE ", b".claim"), COMPLETE),
    "after the sidecar (endSessions)": ("mongo", "up", (b"endSessions",), COMPLETE),
}
CASES = [
    pytest.param(kind, phase, id=f"{kind}-{phase}")
    for kind in ("local", "moto", "versitygw")
    for phase in PHASES
    if kind != "local" or PHASES[phase][0] == "mongo"
]


@pytest.fixture(scope="module")
def blobs(mongo_uri: str) -> Any:
    """One database of ~7 MB, backed up by every case (backups only read it)."""
    name = f"sig_{os.getpid()}_{time.monotonic_ns()}"
    with MongoClient(mongo_uri) as client:
        client[name].blobs.insert_many([{"n": n, "data": os.urandom(BLOB)} for n in range(BLOBS)])
        yield name
        client.drop_database(name)


def _port(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


@pytest.mark.parametrize(("kind", "phase"), CASES)
def test_sigterm_says_what_it_leaves(
    kind: str, phase: str, tmp_path: Any, testbed: Any, new_bucket: Any, mongo_uri: str, blobs: str
) -> None:
    dest = make_destination(kind, tmp_path, testbed, new_bucket)
    held_side, way, patterns, outcome = PHASES[phase]
    mongo = FaultProxy(("127.0.0.1", _port(mongo_uri))).start()
    s3 = (
        FaultProxy(("127.0.0.1", _port(dest.endpoint.endpoint_url))).start()
        if dest.endpoint
        else None
    )
    try:
        hold = (mongo if held_side == "mongo" else s3).hold(way, *patterns)  # type: ignore[union-attr]
        args = [dest.url, mongo.address, blobs, "--batch-size", "1", "--quiet"]
        if s3 is not None:
            args += ["--endpoint-url", f"http://{s3.address}", "--addressing-style", "path"]
            args += ["--part-size", "5"]
        err = _terminate_when_held(args, dest, hold)
        for proxy in (mongo, s3):
            if proxy is not None:
                proxy.settle()  # a released request has landed, or failed
    finally:
        mongo.close()
        if s3 is not None:
            s3.close()
    assert "terminated (SIGTERM); " in err, err
    assert "Traceback" not in err
    if outcome == NOTHING:
        assert NOTHING in err, err
        assert dest.keys() == [] and dest.pending_uploads() == [], err
        return
    keys = dest.keys()
    (archive,) = [k for k in keys if k.endswith(".tar.gz")]
    assert f"/{archive.rsplit('/', 1)[-1]} {COMPLETE}" in err, err
    assert "left behind" not in err, err
    assert sorted(keys) == [archive, archive + ".manifest.json"]
    assert dest.pending_uploads() == []
    assert _statuses(dest) == [ArchiveStatus.COMPLETE]


def _terminate_when_held(args: list[str], dest: Destination, hold: Hold) -> str:
    """Start the backup, SIGTERM it once the hold is reached, release half a
    second later; its stderr once it has ended (exit 143)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mongosnap", "backup", *args],
        env=subprocess_env(dest),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert hold.reached.wait(60), proc.communicate(timeout=60)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        hold.release()
        _, err = proc.communicate(timeout=60)
    finally:
        hold.release()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    return err


def _statuses(dest: Destination) -> list[ArchiveStatus]:
    async def collect() -> list[ArchiveStatus]:
        storage = dest.storage()
        try:
            return [info.status async for info in newest_archives(storage)]
        finally:
            await storage.aclose()

    return asyncio.run(collect())
