"""Helpers for the oplog tests: a steady writer, a `mongosnap oplog` subprocess,
and both sides of the comparison (the server's oplog, the archived chunks)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bson import decode
from bson.raw_bson import RawBSONDocument
from helpers import split_bson
from pymongo import MongoClient

from mongosnap.oplog import chunks
from mongosnap.oplog.position import Ts

WAIT = 120.0  # a hang guard, not a speed assertion


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def server_entries(uri: str) -> list[bytes]:
    """Every entry of the server's oplog, raw, in natural (oplog) order."""
    with MongoClient(uri) as client:
        raw = b"".join(client.local["oplog.rs"].find_raw_batches({}))
    return split_bson(raw)


def newest_ts(uri: str) -> Ts:
    """The newest entry's ts (waiting for a first entry in an empty oplog)."""
    found: list[bytes] = []

    def some() -> bool:
        found[:] = server_entries(uri)[-1:]
        return bool(found)

    wait_for(some, "a first oplog entry")
    return ts_of(found[0])


def ts_of(entry: bytes) -> Ts:
    return Ts.from_bson(RawBSONDocument(entry)["ts"])


def ns_of(entry: bytes) -> str:
    return str(decode(entry)["ns"])


def chunk_entries(root: Path) -> list[bytes]:
    """Every entry of every complete chunk under root/oplog, in chunk order."""
    out: list[bytes] = []
    for info in sidecars(root):
        data = (root / info.object_key).read_bytes()
        out += chunks.split_entries(chunks.decode_chunk(data, info))
    return out


def sidecars(root: Path) -> list[chunks.ChunkInfo]:
    found = []
    for path in sorted((root / "oplog").glob("*.bson.*.json")):
        key = str(path.relative_to(root))
        found.append(chunks.ChunkInfo.from_json(path.read_bytes(), key))
    return sorted(found, key=lambda c: (c.first_ts, c.last_ts))


class Writer:
    """Sequential inserts/updates/deletes on one collection, in a thread, until stopped."""

    def __init__(self, uri: str, database: str, collection: str = "events") -> None:
        self.client: MongoClient[dict[str, Any]] = MongoClient(uri)
        self.coll = self.client[database][collection]
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def write(self, n: int) -> None:
        for _ in range(n):
            self._one()

    def _one(self) -> None:
        k = self.count
        if k % 5 == 3:
            self.coll.update_one({"_id": k - 1}, {"$set": {"k": k, "updated": True}})
        elif k % 5 == 4:
            self.coll.delete_one({"_id": k - 4})
        else:
            self.coll.insert_one({"_id": k, "k": k, "pad": "x" * (k % 50)})
        self.count += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._one()
            time.sleep(0.005)

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=WAIT)
        self.client.close()


class ArchiverProcess:
    """`python -m mongosnap oplog DEST URI -v ...` with its stderr read line by line."""

    def __init__(self, dest: Path, uri: str, *extra: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-m", "mongosnap", "oplog", str(dest), "--uri", uri, "-v", *extra]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_line(self, needle: str) -> str:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.log.append(line)
            if needle in line:
                return line
        raise AssertionError(f"no {needle!r} in the archiver's log:\n{''.join(self.log)}")

    def wait_read_past(self, ts: Ts) -> None:
        """Until the archiver logs that it has read an entry at or after ts."""
        while True:
            line = self.wait_line("read ")
            last = Ts.parse(line.rsplit(" ", 1)[1].strip())
            if last >= ts:
                return

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=WAIT)

    def kill(self) -> int:
        self.proc.kill()
        return self.proc.wait(timeout=WAIT)
