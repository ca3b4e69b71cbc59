"""-q: nothing on stdout or stderr when a command succeeds (a cron line mails
whatever it prints); a failure still shows its error and its report."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import seed
from pymongo import MongoClient

from mongosnap.cli import main

SIZES = {"apps": 25, "users": 4}


def mongosnap(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The command line in this process (no interpreter start): exit code, stdout, stderr."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_command_prints_nothing_on_success(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, mongo_uri: str, new_database: str
) -> None:
    seed(mongo_uri, new_database, SIZES)
    dest, copy = str(tmp_path / "backups"), f"{new_database}_copy"
    source = ("--uri", mongo_uri, new_database)
    runs = [
        ("backup", dest, *source),
        ("list", dest),
        ("verify", "latest", dest),
        ("restore", "latest", dest, *source, "--to-database", copy),
        ("heal", dest, *source, "apps", "users"),
        ("heal", dest, "--uri", mongo_uri, copy, "apps", "--dry-run"),
        ("prune", dest, "--keep-last", "3"),
        ("check", dest, new_database, "--max-age", "1h"),
        ("oplog", dest, "--list"),
    ]
    try:
        for args in runs:
            assert mongosnap(capsys, *args, "-q") == (0, "", ""), args
        code, out, _ = mongosnap(capsys, "list", dest)  # without -q: the listing
        assert code == 0 and out.count("-mongodb-dump.tar.gz") == 1
    finally:
        with MongoClient(mongo_uri) as client:
            client.drop_database(copy)


def test_a_failure_under_q_shows_its_error_then_its_report(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, mongo_uri: str, new_database: str
) -> None:
    seed(mongo_uri, new_database, SIZES)
    dest = str(tmp_path / "backups")
    assert mongosnap(capsys, "backup", dest, "--uri", mongo_uri, new_database, "-q")[0] == 0
    code, out, err = mongosnap(
        capsys, "heal", dest, "--uri", mongo_uri, new_database, "apps", "never", "-q"
    )
    assert code == 41
    assert err == "mongosnap: error: no backup among the newest archives holds never\n"
    assert "never: still missing" in out
    code, out, _ = mongosnap(capsys, "check", dest, f"{new_database}_none", "-q")
    assert code == 2 and out.startswith("MONGOSNAP CRITICAL - ")
