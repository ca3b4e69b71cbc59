"""examples/backup.py, healer.py and service.py, run as an operator runs them."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import Destination, make_destination, seed, server_documents, subprocess_env
from pymongo import MongoClient

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SIZES = {"apps": 40, "users": 7}


def example(
    name: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env or subprocess_env(),
    )


def host_of(uri: str) -> str:
    return uri.split("://", 1)[1].rstrip("/")


def documents(uri: str, database: str, name: str) -> list[bytes]:
    return sorted(server_documents(uri, database, name))


def drop(uri: str, database: str, name: str) -> None:
    with MongoClient(uri) as client:
        client[database].drop_collection(name)


def names(uri: str, database: str) -> set[str]:
    with MongoClient(uri) as client:
        return set(client[database].list_collection_names())


@pytest.mark.parametrize(("script", "args"), [("backup.py", 2), ("healer.py", 3)])
def test_too_few_arguments_print_usage_and_exit_1(script: str, args: int) -> None:
    done = example(script, *["x"] * args)
    assert done.returncode == 1
    assert done.stdout.startswith(f"Usage: {script} <bucket-path>")


def test_backup_then_heal_like_the_legacy_scripts(
    destination: Destination, mongo_uri: str, new_database: str
) -> None:
    seed(mongo_uri, new_database, SIZES)
    before = documents(mongo_uri, new_database, "apps")
    env = subprocess_env(destination)
    host = host_of(mongo_uri)

    done = example("backup.py", destination.url, host, new_database, env=env)
    assert done.returncode == 0, done.stderr
    stored = destination.keys()
    archives = [k for k in stored if k.endswith("-mongodb-dump.tar.gz")]
    assert len(archives) == 1 and archives[0].rsplit("/", 1)[-1] in done.stdout

    healthy = example("healer.py", destination.url, host, new_database, "apps", "users", env=env)
    assert healthy.returncode == 0, healthy.stderr
    assert healthy.stdout.startswith("Nothing to heal")

    drop(mongo_uri, new_database, "apps")
    healed = example("healer.py", destination.url, host, new_database, "apps", "users", env=env)
    assert healed.returncode == 0, healed.stderr
    assert f"Healed {new_database}.apps from" in healed.stdout
    assert documents(mongo_uri, new_database, "apps") == before


def test_healer_without_backups_is_fatal(tmp_path: Path, mongo_uri: str, new_database: str) -> None:
    seed(mongo_uri, new_database, {"users": 3})
    done = example("healer.py", str(tmp_path), host_of(mongo_uri), new_database, "gone")
    assert done.returncode == 1
    assert done.stderr.strip() == "FATAL: no backups found!"


def test_healer_fails_when_no_backup_holds_the_collection(
    tmp_path: Path, mongo_uri: str, new_database: str
) -> None:
    seed(mongo_uri, new_database, {"users": 3})
    host = host_of(mongo_uri)
    assert example("backup.py", str(tmp_path), host, new_database).returncode == 0
    done = example("healer.py", str(tmp_path), host, new_database, "users", "never")
    assert done.returncode == 1
    assert "FATAL: no backup holds never" in done.stderr


def test_backup_failure_exits_1_with_one_line(tmp_path: Path, new_database: str) -> None:
    done = example("backup.py", str(tmp_path), "127.0.0.1:9", new_database)
    assert done.returncode == 1
    assert done.stderr.startswith("FATAL: ") and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("kind", "sig"),
    [("local", signal.SIGTERM), ("moto", signal.SIGTERM), ("local", signal.SIGHUP)],
    ids=["local-SIGTERM", "moto-SIGTERM", "local-SIGHUP"],
)
def test_service_backs_up_heals_and_stops_on_sigterm(
    kind: str,
    sig: signal.Signals,
    tmp_path: Path,
    testbed: Any,
    new_bucket: Any,
    mongo_uri: str,
    new_database: str,
) -> None:
    """SIGHUP (its terminal or ssh session went away) stops it as SIGTERM does."""
    destination = make_destination(kind, tmp_path, testbed, new_bucket)
    seed(mongo_uri, new_database, SIZES)
    before = documents(mongo_uri, new_database, "users")
    proc = subprocess.Popen(
        [
            *(sys.executable, str(EXAMPLES / "service.py"), destination.url, new_database),
            *("users", "--backup-every", "3600", "--heal-every", "0.3"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(destination, MONGOSNAP_URI=mongo_uri),
    )
    lines: list[str] = []
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("backup: wrote " in line for line in lines), proc)
        drop(mongo_uri, new_database, "users")
        # Its log line, not the collection's return: the heal ends after the
        # rename (lease, sweep), and a signal before that would cut it short.
        wait_for(lambda: any("heal: restored users" in line for line in lines), proc)
    finally:
        proc.send_signal(sig)
        proc.wait(timeout=60)
        reader.join(timeout=60)
    err = "".join(lines)
    assert proc.returncode == 0, err
    assert "backup: wrote " in err and "heal: restored users (restored)" in err
    assert err.rstrip().endswith("stopped") and "Traceback" not in err
    assert documents(mongo_uri, new_database, "users") == before
    assert not [n for n in names(mongo_uri, new_database) if n.startswith("mongosnap_")]


def stored_keys(destination: Destination) -> list[str]:
    return destination.keys()


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str], limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the service never got there"
        time.sleep(0.1)
