"""Prometheus metrics: --metrics-file on backup, heal and prune; /metrics while watching."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest
from helpers import Destination, run_cli, seed, server_documents, subprocess_env
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient

from mongosnap.metrics import Metrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def host_of(uri: str) -> str:
    return uri.split("://", 1)[1].rstrip("/")


def test_backup_writes_a_textfile(
    destination: Destination, mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    seed(mongo_uri, new_database, {"apps": 30, "users": 5})
    prom = tmp_path / "textfile" / "mongosnap_backup.prom"
    prom.parent.mkdir()
    done = run_cli(
        "backup", destination.url, host_of(mongo_uri), new_database, "--json",
        "--metrics-file", str(prom), env=subprocess_env(destination),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    found = samples(prom.read_text())
    assert value(found, "mongosnap_documents_total", command="backup") == 35
    assert value(found, "mongosnap_bytes_in_total", command="backup") == result["bytes_in"]
    assert value(found, "mongosnap_bytes_out_total", command="backup") == result["bytes_out"]
    assert value(found, "mongosnap_runs_total", command="backup", outcome="success") == 1
    assert value(found, "mongosnap_runs_total", command="backup", outcome="failure") == 0
    last = value(found, "mongosnap_last_success_timestamp_seconds", command="backup")
    assert last is not None and abs(last - time.time()) < 600
    assert (value(found, "mongosnap_last_duration_seconds", command="backup") or 0) > 0
    assert [p.name for p in prom.parent.iterdir()] == [prom.name]  # no temporary file left


def test_a_failed_backup_counts_its_kind(tmp_path: Path, new_database: str) -> None:
    prom = tmp_path / "backup.prom"
    done = run_cli(
        "backup", str(tmp_path / "out"), "127.0.0.1:9", new_database,
        "--connect-timeout", "1", "--metrics-file", str(prom),
    )  # fmt: skip
    assert done.returncode == 11, done.stderr
    found = samples(prom.read_text())
    kind = {"command": "backup", "kind": "ServerUnreachable"}
    assert value(found, "mongosnap_failures_total", **kind) == 1
    assert value(found, "mongosnap_runs_total", command="backup", outcome="failure") == 1
    assert value(found, "mongosnap_last_success_timestamp_seconds", command="backup") is None
    assert value(found, "mongosnap_last_run_timestamp_seconds", command="backup") is not None


def test_heal_and_prune_write_textfiles(tmp_path: Path, mongo_uri: str, new_database: str) -> None:
    seed(mongo_uri, new_database, {"apps": 12, "users": 3})
    dest, host = str(tmp_path / "dest"), host_of(mongo_uri)
    for _ in range(2):
        assert run_cli("backup", dest, host, new_database).returncode == 0
        time.sleep(1.1)  # archive names have a one-second resolution
    with MongoClient(mongo_uri) as client:
        client[new_database].drop_collection("apps")
    heal_prom, prune_prom = tmp_path / "heal.prom", tmp_path / "prune.prom"
    healed = run_cli("heal", dest, host, new_database, "apps", "--metrics-file", str(heal_prom))
    assert healed.returncode == 0, healed.stderr
    found = samples(heal_prom.read_text())
    assert value(found, "mongosnap_collections_restored_total", command="heal") == 1
    assert value(found, "mongosnap_documents_total", command="heal") == 12
    assert (value(found, "mongosnap_bytes_in_total", command="heal") or 0) > 0

    missing = run_cli("heal", dest, host, new_database, "never", "--metrics-file", str(heal_prom))
    assert missing.returncode == 41
    kind = {"command": "heal", "kind": "HealIncomplete"}
    assert value(samples(heal_prom.read_text()), "mongosnap_failures_total", **kind) == 1

    pruned = run_cli("prune", dest, "--keep-last", "1", "--metrics-file", str(prune_prom))
    assert pruned.returncode == 0, pruned.stderr
    found = samples(prune_prom.read_text())
    assert value(found, "mongosnap_archives_deleted_total", command="prune") == 1


def test_watch_serves_metrics_on_localhost(
    tmp_path: Path, mongo_uri: str, new_database: str
) -> None:
    seed(mongo_uri, new_database, {"apps": 9, "users": 2})
    dest, host = str(tmp_path / "dest"), host_of(mongo_uri)
    assert run_cli("backup", dest, host, new_database).returncode == 0
    before = sorted(server_documents(mongo_uri, new_database, "apps"))
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "mongosnap", "heal", dest, host, new_database, "apps"),
            *("--interval", "0.2", "--metrics-port", "0", "-v"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    try:
        assert proc.stderr is not None
        url = wait_for_url(proc.stderr)
        assert url.startswith("http://127.0.0.1:")
        with MongoClient(mongo_uri) as client:
            client[new_database].drop_collection("apps")
        found = scrape_until(url, lambda f: bool(restored(f)))
    finally:
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=30)[1]
    assert proc.returncode == 0
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"  # -v in a watch: timestamped steps
    assert re.search(rf"{stamp} mongosnap: info: {new_database}\.apps: restored from ", err), err
    assert re.search(rf"{stamp} mongosnap: info: watch stopped", err), err
    assert value(found, "mongosnap_documents_total", command="heal") == 9
    assert (value(found, "mongosnap_runs_total", command="heal", outcome="success") or 0) >= 1
    assert value(found, "mongosnap_runs_total", command="heal", outcome="failure") == 0
    assert value(found, "mongosnap_last_success_timestamp_seconds", command="heal") is not None
    assert sorted(server_documents(mongo_uri, new_database, "apps")) == before


def restored(found: Samples) -> float | None:
    return value(found, "mongosnap_collections_restored_total", command="heal")


def wait_for_url(stderr: IO[str]) -> str:
    for line in stderr:
        match = re.search(r"serving metrics on (http://\S+/metrics)", line)
        if match:
            return match.group(1)
    raise AssertionError("the watch never said where it serves metrics")


def scrape_until(url: str, done: Callable[[Samples], bool], limit: float = 60) -> Samples:
    deadline = time.monotonic() + limit
    while True:
        with urllib.request.urlopen(url, timeout=5) as answer:
            found = samples(answer.read().decode())
        if done(found):
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.2)


def test_metrics_port_needs_interval(tmp_path: Path) -> None:
    done = run_cli("heal", str(tmp_path), "h", "db", "c", "--metrics-port", "0")
    assert done.returncode == 2 and "--interval" in done.stderr


def test_registries_are_private_and_writes_atomic(tmp_path: Path) -> None:
    first, second = Metrics("backup"), Metrics("backup")
    first.add(documents=5)
    path = tmp_path / "m.prom"
    second.write_textfile(str(path))
    inode = path.stat().st_ino
    assert value(samples(path.read_text()), "mongosnap_documents_total", command="backup") == 0
    first.write_textfile(str(path))
    assert path.stat().st_ino != inode  # replaced by a rename, never rewritten in place
    assert value(samples(path.read_text()), "mongosnap_documents_total", command="backup") == 5


@pytest.mark.parametrize("kind", [ValueError, KeyboardInterrupt])
def test_run_counts_failures_by_class(kind: type[BaseException]) -> None:
    metrics = Metrics("heal")
    with pytest.raises(kind), metrics.run():
        raise kind("x")
    found = samples(generate_latest(metrics.registry).decode())
    assert value(found, "mongosnap_failures_total", command="heal", kind=kind.__name__) == 1


def unwritable(tmp_path: Path, why: str) -> Path:
    """A --metrics-file that cannot be written, even by root."""
    if why == "missing directory":
        return tmp_path / "textfile" / "m.prom"
    if why == "a directory":
        (tmp_path / "m.prom").mkdir()
        return tmp_path / "m.prom"
    (tmp_path / "file").write_text("")
    return tmp_path / "file" / "m.prom"  # under a regular file


@pytest.mark.parametrize("why", ["missing directory", "a directory", "under a file"])
def test_an_unwritable_metrics_file_stops_a_backup_before_any_work(
    tmp_path: Path, mongo_uri: str, new_database: str, why: str
) -> None:
    seed(mongo_uri, new_database, {"apps": 4})
    dest, prom = tmp_path / "dest", unwritable(tmp_path, why)
    done = run_cli(
        "backup", str(dest), host_of(mongo_uri), new_database, "--metrics-file", str(prom)
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"mongosnap: error: cannot write --metrics-file {prom}: " in done.stderr
    assert not dest.exists()  # nothing written, nothing even created


@pytest.mark.parametrize("command", ["heal --interval", "restore", "prune"])
def test_every_command_checks_its_metrics_file_first(
    tmp_path: Path, mongo_uri: str, new_database: str, command: str
) -> None:
    seed(mongo_uri, new_database, {"apps": 4})
    dest, host = str(tmp_path / "dest"), host_of(mongo_uri)
    for _ in range(2 if command == "prune" else 1):  # prune has an older archive to delete
        if Path(dest).exists():
            time.sleep(1.1)  # archive names have a one-second resolution
        assert run_cli("backup", dest, host, new_database).returncode == 0
    before = sorted(p.name for p in Path(dest).rglob("*"))
    with MongoClient(mongo_uri) as client:
        client[new_database].drop_collection("apps")
    words = {
        "heal --interval": ["heal", dest, host, new_database, "apps", "--interval", "0.1"],
        "restore": ["restore", "latest", dest, host, new_database],
        "prune": ["prune", dest, "--keep-last", "1"],
    }[command]
    prom = tmp_path / "textfile" / "m.prom"
    done = subprocess.run(
        [sys.executable, "-m", "mongosnap", *words, "--metrics-file", str(prom)],
        capture_output=True, text=True, timeout=30, env=subprocess_env(),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"cannot write --metrics-file {prom}: No such file or directory" in done.stderr
    assert sorted(p.name for p in Path(dest).rglob("*")) == before  # nothing pruned
    assert server_documents(mongo_uri, new_database, "apps") == []  # nothing restored


def test_a_previous_file_in_another_format_is_a_warning(tmp_path: Path) -> None:
    prom = tmp_path / "prune.prom"
    prom.write_text("this is { not Prometheus text\n")
    (tmp_path / "dest").mkdir()
    done = run_cli("prune", str(tmp_path / "dest"), "--keep-last", "1", "--metrics-file", str(prom))
    assert done.returncode == 0, done.stderr
    assert f"--metrics-file {prom} is not Prometheus text" in done.stderr
    found = samples(prom.read_text())
    assert value(found, "mongosnap_runs_total", command="prune", outcome="success") == 1


def test_carry_over_takes_only_this_commands_valid_figures() -> None:
    previous = Metrics("backup")
    with previous.run():
        previous.add(documents=5)
    text = generate_latest(previous.registry).decode()
    text += 'mongosnap_documents_total{command="heal"} 40.0\n'  # another command's: left
    text = text.replace(
        'mongosnap_bytes_in_total{command="backup"} 0.0',
        'mongosnap_bytes_in_total{command="backup"} -3.0',
    )  # a counter cannot be negative: left
    assert "} -3.0" in text
    later = Metrics("backup")
    later.carry_over(text)
    found = samples(generate_latest(later.registry).decode())
    assert value(found, "mongosnap_documents_total", command="backup") == 5
    assert value(found, "mongosnap_documents_total", command="heal") is None
    assert value(found, "mongosnap_bytes_in_total", command="backup") == 0
    assert value(found, "mongosnap_runs_total", command="backup", outcome="success") == 1
    assert value(found, "mongosnap_last_run_success", command="backup") == 1
    with pytest.raises(ValueError):
        later.carry_over("not { text")
