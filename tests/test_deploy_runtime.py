"""The systemd units' MemoryDenyWriteExecute=yes, tried for real: the kernel's
own switch (prctl PR_SET_MDWE, Linux 6.3+) refuses writable-executable memory
from the interpreter's start, as systemd's filter does; a backup to S3 and a
heal from it must still work, byte for byte."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path
from typing import Any

from bson.raw_bson import RawBSONDocument
from helpers import make_destination, seed, subprocess_env
from pymongo import MongoClient

PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1
LIBC = ctypes.CDLL(None, use_errno=True)


def refuse_write_execute() -> None:
    """In the child, before exec: inherited by the new program."""
    if LIBC.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE) failed: Linux 6.3 or newer needed")


# One interpreter (each start costs seconds on a loaded machine): the switch is
# in force (flag set, a W+X mapping refused), then backup, a loss, and heal
# as the units run them.
SCRIPT = f"""
import ctypes, mmap, sys
from pymongo import MongoClient
from mongosnap.cli import main

print("mdwe", ctypes.CDLL(None).prctl({PR_GET_MDWE}, 0, 0, 0, 0))
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("mmap allowed")
except OSError:
    print("mmap refused")
url, uri_file, uri, database, metrics = sys.argv[1:]
common = ["--uri-file", uri_file, database]
print("exit", main(["backup", url, *common, "--metrics-file", metrics, "-q"]))
with MongoClient(uri) as client:
    client[database].drop_collection("apps")
print("exit", main(["heal", url, *common, "apps", "--log-format", "json", "-q"]))
"""


def raw_documents(uri: str, database: str, name: str) -> list[bytes]:
    with MongoClient(uri, document_class=RawBSONDocument) as client:
        return sorted(doc.raw for doc in client[database][name].find())


def test_backup_and_heal_run_with_memory_deny_write_execute(
    tmp_path: Path, testbed: Any, new_bucket: Any, mongo_uri: str, new_database: str
) -> None:
    seed(mongo_uri, new_database, {"apps": 30, "users": 4})
    before = raw_documents(mongo_uri, new_database, "apps")
    where = make_destination("moto", tmp_path, testbed, new_bucket)
    uri = tmp_path / "uri"
    uri.write_text(mongo_uri)
    uri.chmod(0o600)
    metrics = tmp_path / "backup.prom"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, where.url, str(uri), mongo_uri, new_database, str(metrics)],
        preexec_fn=refuse_write_execute,
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(where),
    )
    marked = [
        line for line in done.stdout.splitlines() if line.startswith(("mdwe", "mmap", "exit"))
    ]
    assert marked == ["mdwe 1", "mmap refused", "exit 0", "exit 0"], done.stdout + done.stderr
    assert "mongosnap_last_success_timestamp_seconds" in metrics.read_text()
    assert raw_documents(mongo_uri, new_database, "apps") == before
