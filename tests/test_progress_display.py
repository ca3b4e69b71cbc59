"""Restore and heal draw live progress on a terminal, and nothing on a pipe."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import on_a_terminal, seed
from helpers import run_cli as run
from pymongo import MongoClient

from mongosnap.display import _Row
from mongosnap.progress import Stage

SIZES = {"repositories": 1500, "users": 3}


@pytest.fixture
def host(mongo_uri: str) -> str:
    return mongo_uri.split("://", 1)[1].rstrip("/")


@pytest.fixture
def backed_up(mongo_uri: str, new_database: str, tmp_path: Path) -> str:
    seed(mongo_uri, new_database, SIZES)
    done = run("backup", str(tmp_path), mongo_uri.split("://", 1)[1].rstrip("/"), new_database)
    assert done.returncode == 0, done.stderr
    return new_database


@pytest.fixture
def other_database(mongo_uri: str, backed_up: str) -> str:
    name = f"{backed_up}_copy"
    yield name
    with MongoClient(mongo_uri) as client:
        client.drop_database(name)


def test_restore_draws_progress_on_a_terminal(
    tmp_path: Path, host: str, backed_up: str, other_database: str
) -> None:
    code, screen, out = on_a_terminal(
        "restore", "latest", str(tmp_path), host, backed_up, "--to-database", other_database
    )
    assert code == 0, screen
    for word in ("collection", "repositories", "users", "ETA", "100%", "done"):
        assert word in screen, (word, screen)
    assert "restored 2 collections, 1,503 documents" in out


def test_heal_draws_progress_on_a_terminal(
    tmp_path: Path, host: str, mongo_uri: str, backed_up: str
) -> None:
    with MongoClient(mongo_uri) as client:
        client[backed_up].drop_collection("repositories")
    code, screen, out = on_a_terminal("heal", str(tmp_path), host, backed_up, *SIZES)
    assert code == 0, screen
    for word in ("collection", "repositories", "100%", "done"):
        assert word in screen, (word, screen)
    assert "users" not in screen  # present: not restored, not shown
    assert "repositories" in out


def test_nothing_drawn_on_a_pipe(
    tmp_path: Path, host: str, backed_up: str, other_database: str
) -> None:
    done = run("restore", "latest", str(tmp_path), host, backed_up, "--to-database", other_database)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_a_row_with_known_totals_shows_percent_and_eta() -> None:
    row = _Row(documents=250, bytes=25_000, total_documents=1000, total_bytes=100_000)
    row.stage = Stage.BATCH
    assert row.percent() == "25%"
    assert row.eta(now=row.started + 10) == "30s"  # a quarter in ten seconds: thirty to go
    assert row.status() == "…"
    empty = _Row(total_documents=0, total_bytes=0, stage=Stage.DONE, finished=row.started)
    assert empty.percent() == "100%" and empty.eta() == "" and empty.status() == "done"
    assert _Row().percent() == ""  # backup: no total known
