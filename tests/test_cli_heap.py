"""Restore and heal leave what they loaded to reference counting (cli._common.freeze_loaded)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import seed, server_documents
from pymongo import MongoClient

RUN = (
    "import gc, sys\n"
    "from mongosnap.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('frozen', gc.get_freeze_count(), file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def frozen_after(*args: str) -> int:
    """Run the CLI in its own process; how many objects it had frozen at the end."""
    done = subprocess.run(
        [sys.executable, "-c", RUN, *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return int(done.stderr.rsplit("frozen ", 1)[1])


def test_restore_and_heal_freeze_what_they_loaded(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    seed(mongo_uri, new_database, {"apps": 30})
    original = sorted(server_documents(mongo_uri, new_database, "apps"))
    common = ["--uri", mongo_uri, new_database, "-q"]
    assert frozen_after("backup", str(tmp_path), *common) == 0  # backup leaves it alone

    restored = f"{new_database}_copy"
    try:
        args = ["restore", "latest", str(tmp_path), *common, "--to-database", restored]
        assert frozen_after(*args) > 0
        assert sorted(server_documents(mongo_uri, restored, "apps")) == original
    finally:
        with MongoClient(mongo_uri) as client:
            client.drop_database(restored)

    with MongoClient(mongo_uri) as client:
        client[new_database].drop_collection("apps")
    assert frozen_after("heal", str(tmp_path), *common, "apps") > 0
    assert sorted(server_documents(mongo_uri, new_database, "apps")) == original
