"""``restore`` takes the operator flags of the other long commands: -q,
--log-format and --metrics-file, on a real server and a real directory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import run_cli, seed, server_documents
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient

from mongosnap.archive.manifest import manifest_key

SIZES = {"apps": 20, "users": 3}


def host_of(uri: str) -> str:
    return uri.split("://", 1)[1].rstrip("/")


@pytest.fixture
def backed_up(tmp_path: Path, mongo_uri: str, new_database: str) -> Iterator[dict[str, str]]:
    """A database, its archive in a directory, and a target name dropped afterwards."""
    seed(mongo_uri, new_database, SIZES)
    dest = tmp_path / "dest"
    done = run_cli("backup", str(dest), host_of(mongo_uri), new_database, "--json")
    assert done.returncode == 0, done.stderr
    copy = f"{new_database}_copy"
    yield {
        "dest": str(dest),
        "host": host_of(mongo_uri),
        "database": new_database,
        "copy": copy,
        "key": json.loads(done.stdout)["archive_key"],
    }
    with MongoClient(mongo_uri) as client:
        client.drop_database(copy)


def restore(place: dict[str, str], *flags: str, archive: str = "latest") -> list[str]:
    return [
        "restore", archive, place["dest"], place["host"], place["database"],
        "--to-database", place["copy"], *flags,
    ]  # fmt: skip


def metric_values(path: Path) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the textfile, read with prometheus_client's own parser."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }


def test_metrics_file_counts_a_restore_and_a_refused_one(
    tmp_path: Path, mongo_uri: str, backed_up: dict[str, str]
) -> None:
    prom = tmp_path / "textfile" / "mongosnap_restore.prom"
    prom.parent.mkdir()
    done = run_cli(*restore(backed_up, "--json", "--metrics-file", str(prom)))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for name in SIZES:
        original = server_documents(mongo_uri, backed_up["database"], name)
        assert server_documents(mongo_uri, backed_up["copy"], name) == original
    found = metric_values(prom)
    one = frozenset({("command", "restore")})
    assert found[("mongosnap_documents_total", one)] == sum(SIZES.values())
    assert found[("mongosnap_collections_restored_total", one)] == len(SIZES)
    assert found[("mongosnap_bytes_in_total", one)] == report["bytes_fetched"] > 0
    assert found[("mongosnap_runs_total", one | {("outcome", "success")})] == 1
    assert found[("mongosnap_runs_total", one | {("outcome", "failure")})] == 0
    succeeded = found[("mongosnap_last_success_timestamp_seconds", one)]
    assert [p.name for p in prom.parent.iterdir()] == [prom.name]  # written atomically

    again = run_cli(*restore(backed_up, "--metrics-file", str(prom)))  # the copy exists now
    assert again.returncode == 14, again.stderr
    found = metric_values(prom)
    assert found[("mongosnap_failures_total", one | {("kind", "CollectionExists")})] == 1
    assert found[("mongosnap_runs_total", one | {("outcome", "failure")})] == 1
    # The run continues from the file: the first success is still counted and dated.
    assert found[("mongosnap_runs_total", one | {("outcome", "success")})] == 1
    assert found[("mongosnap_last_success_timestamp_seconds", one)] == succeeded
    assert found[("mongosnap_last_run_success", one)] == 0


def test_quiet_restore_prints_no_warning(backed_up: dict[str, str]) -> None:
    """An incomplete archive restored anyway warns; -q prints nothing on success."""
    (Path(backed_up["dest"]) / manifest_key(backed_up["key"])).unlink()
    flags = ("--allow-incomplete", "--drop")
    loud = run_cli(*restore(backed_up, *flags, archive=backed_up["key"]))
    assert loud.returncode == 0, loud.stderr
    assert loud.stderr.startswith("mongosnap: warning: "), loud.stderr
    quiet = run_cli(*restore(backed_up, *flags, "-q", archive=backed_up["key"]))
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    assert loud.stdout.startswith(f"restored {len(SIZES)} collections, ")
    assert quiet.stdout == ""  # cron mails only failures


def test_log_format_json_writes_json_lines(backed_up: dict[str, str]) -> None:
    (Path(backed_up["dest"]) / manifest_key(backed_up["key"])).unlink()
    done = run_cli(
        *restore(backed_up, "--allow-incomplete", "-v", "--log-format", "json",
                 archive=backed_up["key"])
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert lines and all(set(line) == {"time", "level", "logger", "message"} for line in lines)
    warning = next(line for line in lines if line["level"] == "warning")
    assert warning["logger"] == "mongosnap.restore" and backed_up["key"] in warning["message"]
    steps = {line["message"] for line in lines if line["level"] == "info"}  # -v: the steps
    assert any(m.startswith(f"{backed_up['copy']}.apps: restored from ") for m in steps), steps
