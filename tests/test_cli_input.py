"""Destination typos and invalid option values are usage errors (exit 2) that
name what was wrong, from the command line and from the API; no value reaches
the server or the disk as an "internal error" (70) or a silent success."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli, seed
from pymongo import MongoClient

import mongosnap
from mongosnap import LocalStorage, MemoryStorage, UsageError, open_storage
from mongosnap.source import Source

TYPOS = ["s3:/bucket", "s3:bucket", "S3://bucket", "gs://bucket", "http://bucket", "backups:2024"]


@pytest.fixture
def host(mongo_uri: str) -> str:
    return mongo_uri.split("://", 1)[1].rstrip("/")


@pytest.fixture
def seeded(mongo_uri: str, new_database: str) -> str:
    seed(mongo_uri, new_database, {"users": 5})
    return new_database


# ------------------------------------------------------------ destinations


@pytest.mark.parametrize("typo", TYPOS)
def test_destination_typos_are_refused_by_open_storage(typo: str) -> None:
    with pytest.raises(UsageError) as caught:
        open_storage(typo)
    message = str(caught.value)
    assert "s3://bucket[/prefix]" in message and "file:///absolute/path" in message


def test_local_directories_are_plain_paths_or_file_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for local in ("./s3:/bucket", "dir/with:colon", str(tmp_path / "a:b"), "file:///srv/x"):
        assert isinstance(open_storage(local), LocalStorage), local


def run_in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mongosnap", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.mark.parametrize("typo", TYPOS)
def test_backup_to_a_destination_typo_exits_2_and_writes_nothing(
    typo: str, tmp_path: Path, host: str, seeded: str
) -> None:
    done = run_in(tmp_path, "backup", typo, host, seeded)
    assert done.returncode == 2, done.stderr
    assert "s3://bucket[/prefix]" in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "command",
    [
        ["list", "s3:/bucket"],
        ["verify", "latest", "s3:bucket"],
        ["prune", "S3://bucket", "--keep-last", "1"],
        ["heal", "gs://bucket", "127.0.0.1:1", "db", "coll", "--connect-timeout", "1"],
        ["restore", "latest", "s3:/bucket", "127.0.0.1:1", "db", "--connect-timeout", "1"],
    ],
)
def test_every_command_refuses_destination_typos(command: list[str], tmp_path: Path) -> None:
    done = run_in(tmp_path, *command)
    assert done.returncode == 2, done.stderr
    assert "expected s3://bucket[/prefix]" in done.stderr
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------ option values

BAD_VALUES = [
    ("backup", "--batch-size", "-5"),
    ("backup", "--batch-size", "0"),
    ("backup", "--batch-size", "1e3"),
    ("backup", "--batch-size", "99999999999999"),
    ("backup", "--connect-timeout", "nan"),
    ("backup", "--connect-timeout", "inf"),
    ("backup", "--connect-timeout", "0"),
    ("backup", "--connect-timeout", "-1"),
    ("backup", "--connect-timeout", "1e300"),
    ("backup", "--part-size", "4"),
    ("backup", "--part-size", "6000"),
    ("backup", "--part-size", "8.5"),
    ("backup", "--region", "eu west 1"),
    ("backup", "--storage-class", "glacier ir"),
    ("backup", "--profile", ""),
    ("heal", "--workers", "0"),
    ("heal", "--workers", "-3"),
    ("heal", "--workers", "100000000"),
    ("heal", "--depth", "0"),
    ("heal", "--depth", "two"),
    ("heal", "--interval", "nan"),
    ("heal", "--interval", "inf"),
    ("heal", "--interval", "-2"),
    ("heal", "--connect-timeout", "nan"),
    ("restore", "--workers", "0"),
    ("restore", "--workers", "x"),
    ("restore", "--connect-timeout", "inf"),
    ("prune", "--keep-last", "-1"),
    ("prune", "--keep-last", "1.5"),
    ("prune", "--keep-daily", "-7"),
    ("prune", "--keep-within", "99999999999d"),
    ("prune", "--keep-within", "-1d"),
    ("prune", "--keep-within", "3 days"),
    ("list", "--part-size", "0"),
    ("verify", "--part-size", "nan"),
]


def _command(name: str, root: Path, host: str, database: str) -> list[str]:
    return {
        "backup": ["backup", str(root), host, database],
        "heal": ["heal", str(root), host, database, "users"],
        "restore": ["restore", "latest", str(root), host, database],
        "prune": ["prune", str(root)],
        "list": ["list", str(root)],
        "verify": ["verify", "latest", str(root)],
    }[name]


@pytest.mark.parametrize(("command", "flag", "value"), BAD_VALUES)
def test_bad_option_values_are_usage_errors_naming_the_flag(
    command: str, flag: str, value: str, tmp_path: Path, host: str, seeded: str
) -> None:
    args = _command(command, tmp_path / "backups", host, seeded)
    if command == "prune" and flag != "--keep-last":
        args += ["--keep-last", "3"]
    done = run_cli(*args, f"{flag}={value}")
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert flag in done.stderr and "internal error" not in done.stderr
    assert not (tmp_path / "backups").exists()


@pytest.mark.parametrize(
    ("flags", "named", "not_named"),
    [
        (["--sse-kms-key-id", "k"], "--sse-kms-key-id needs --sse aws:kms", "sse_kms_key_id"),
        (["--endpoint-url", "ftp://x"], "--endpoint-url", "endpoint_url"),
        (["--part-size", "6000"], "5 to 5120 MiB", "5368709120"),
    ],
)
def test_s3_setting_errors_speak_of_flags(
    flags: list[str], named: str, not_named: str, tmp_path: Path, host: str, seeded: str
) -> None:
    done = run_cli("backup", "s3://bucket", host, seeded, *flags)
    assert done.returncode == 2
    assert named in done.stderr and not_named not in done.stderr


@pytest.mark.parametrize(
    "database", ["a/b", "a.b", "with space", "$x", "x" * 64, 'q"uote', "back\\slash"]
)
def test_bad_database_names_are_usage_errors(database: str, tmp_path: Path, host: str) -> None:
    for args in (
        ["backup", str(tmp_path), host, database],
        ["heal", str(tmp_path), host, database, "users"],
        ["restore", "latest", str(tmp_path), host, "db", "--to-database", database],
    ):
        done = run_cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert "not a database name" in done.stderr


def test_a_missing_tls_file_is_a_usage_error(mongo_uri: str, tmp_path: Path) -> None:
    uri = mongo_uri.rstrip("/") + "/?tls=true&tlsCAFile=/nonexistent/ca.pem"
    done = run_cli("backup", str(tmp_path), "--uri", uri, "db", "--connect-timeout", "2")
    assert done.returncode == 2, done.stderr
    assert "cannot be read" in done.stderr and "internal error" not in done.stderr


# ------------------------------------------------------------ the API


async def test_a_string_is_not_a_list_of_collections(
    mongo_uri: str, seeded: str, tmp_path: Path
) -> None:
    storage = MemoryStorage()
    await mongosnap.backup(mongo_uri, storage, database=seeded)
    with MongoClient(mongo_uri) as client:
        client[seeded].drop_collection("users")
    with pytest.raises(UsageError, match=r"collections is a list of names.*\['users'\]"):
        await mongosnap.heal(mongo_uri, storage, database=seeded, collections="users")
    with pytest.raises(UsageError, match="collections is a list of names"):
        await mongosnap.restore(mongo_uri, storage, database=seeded, collections="users")
    with pytest.raises(UsageError):
        await mongosnap.heal(mongo_uri, storage, database=seeded, collections=[""])
    with MongoClient(mongo_uri) as client:
        assert "users" not in client[seeded].list_collection_names()


async def test_an_unknown_codec_is_a_usage_error(mongo_uri: str, seeded: str) -> None:
    storage = MemoryStorage()
    with pytest.raises(UsageError, match="unknown codec 'lz4'"):
        await mongosnap.backup(mongo_uri, storage, database=seeded, codec="lz4")
    assert [o async for o in storage.list()] == []


@pytest.mark.parametrize("source", [42, None, b"mongodb://h/", {"host": "h"}, 1.5])
async def test_a_source_that_is_no_uri_host_or_client(source: object, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="MongoDB URI, host"):
        await mongosnap.backup(source, tmp_path, database="db")


async def test_a_synchronous_client_and_bad_timeouts(mongo_uri: str) -> None:
    with MongoClient(mongo_uri) as client, pytest.raises(TypeError, match="AsyncMongoClient"):
        await Source.connect(client)
    for timeout in (math.nan, math.inf, 0, -1, 1e300):
        with pytest.raises(UsageError, match="connect_timeout"):
            await Source.connect(mongo_uri, connect_timeout=timeout)
