"""Heal's report: a dry run promises what the real run does; failures carry their cause."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import run_cli, seed
from pymongo import MongoClient

import mongosnap
from mongosnap import backup, heal

SIZES = {"apps": 120, "users": 30}


def _drop(uri: str, database: str, *names: str) -> None:
    with MongoClient(uri) as client:
        for name in names:
            client[database].drop_collection(name)


@pytest.mark.parametrize("legacy", [False, True])
async def test_dry_run_reports_what_the_real_run_restores(
    mongo_uri: str, new_database: str, tmp_path: Path, legacy: bool
) -> None:
    seed(mongo_uri, new_database, SIZES)  # apps has two indexes besides _id_
    result = await backup(mongo_uri, tmp_path / "new", database=new_database)
    store = tmp_path / "new"
    if legacy:  # the same dump/ re-packed by `tar -czf`, without a manifest
        store = tmp_path / "legacy"
        work = tmp_path / "work"
        store.mkdir()
        work.mkdir()
        subprocess.run(
            ["tar", "-xzf", str(tmp_path / "new" / result.archive_key), "-C", work], check=True
        )
        archive = store / "2020-01-02-03-04-05-mongodb-dump.tar.gz"
        subprocess.run(["tar", "-czf", str(archive), "-C", str(work), "dump"], check=True)
    _drop(mongo_uri, new_database, *SIZES)

    planned = await heal(
        mongo_uri, store, database=new_database, collections=list(SIZES), dry_run=True
    )
    done = await heal(mongo_uri, store, database=new_database, collections=list(SIZES))

    def counts(report: mongosnap.HealReport) -> list[tuple[str, int, int]]:
        return sorted((o.name, o.documents, o.indexes) for o in report.restored)

    assert counts(planned) == counts(done) == [("apps", 120, 2), ("users", 30, 0)]
    assert {o.status for o in planned.restored} == {"would restore"}
    assert {o.status for o in done.restored} == {"restored"}


def test_partial_heal_names_each_failure_in_text_and_json(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    seed(mongo_uri, new_database, SIZES)
    host = mongo_uri.split("://", 1)[1].rstrip("/")
    done = run_cli("backup", str(tmp_path), host, new_database, "-q")
    assert done.returncode == 0, done.stderr
    key = next(p.name for p in tmp_path.iterdir() if p.name.endswith(".tar.gz"))
    sidecar = json.loads((tmp_path / f"{key}.manifest.json").read_text())
    entry = next(e for e in sidecar["collections"] if e["name"] == "users")
    data = bytearray((tmp_path / key).read_bytes())
    data[(entry["bson"]["offset"] + entry["bson"]["end"]) // 2] ^= 0xFF
    (tmp_path / key).write_bytes(bytes(data))
    _drop(mongo_uri, new_database, *SIZES)

    text = run_cli("heal", str(tmp_path), host, new_database, "apps", "users")

    assert text.returncode == 42, text.stderr
    assert f"users: failed from {key}" in text.stdout and "apps: restored" in text.stdout
    assert "could not restore users (" in text.stderr and "Traceback" not in text.stderr
    _drop(mongo_uri, new_database, "apps")
    as_json = run_cli("heal", str(tmp_path), host, new_database, "apps", "users", "--json")
    report_line, error_line = as_json.stdout.splitlines()
    report = json.loads(report_line)
    assert json.loads(error_line)["error"]["exit_code"] == 42
    assert as_json.returncode == 42
    assert report["failed"] == ["users"] and report["ok"] is False
    assert [(f["name"], f["status"], f["archive"]) for f in report["failures"]] == [
        ("users", "failed", key)
    ]
    assert report["failures"][0]["error"]
