"""Human output: sizes in sensible units, heal's summary one line per collection."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import run_cli as run
from helpers import seed
from pymongo import MongoClient

from mongosnap.units import duration, rate, size

SIZES = {"apps": 40, "users": 5, "teams": 3}
SIZE = r"\d+(\.\d)? (B|KB|MB|GB)"


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 KB"),
        (1536, "1.5 KB"),
        (23_400_000, "23.4 MB"),
        (1_250_000_000, "1.2 GB"),
        (5 * 10**15, "5000.0 TB"),
    ],
)
def test_size_picks_a_unit(n: int, text: str) -> None:
    assert size(n) == text


def test_rate_and_duration() -> None:
    assert rate(3_000_000, 2) == "1.5 MB/s"
    assert rate(10, 0) == "0 B/s"
    assert [duration(s) for s in (0, 42.4, 185, 7620)] == ["0s", "42s", "3m05s", "2h07m"]


@pytest.fixture
def host(mongo_uri: str) -> str:
    return mongo_uri.split("://", 1)[1].rstrip("/")


@pytest.fixture
def backed_up(mongo_uri: str, new_database: str, host: str, tmp_path: Path) -> str:
    seed(mongo_uri, new_database, SIZES)
    done = run("backup", str(tmp_path), host, new_database)
    assert done.returncode == 0, done.stderr
    assert re.search(rf"\d+ documents, {SIZE} -> {SIZE} in [\d.]+s \({SIZE}/s\)", done.stdout)
    assert "0.0 MB" not in done.stdout
    return new_database


def drop(uri: str, database: str, *names: str) -> None:
    with MongoClient(uri) as client:
        for name in names:
            client[database].drop_collection(name)


def test_heal_prints_one_line_per_collection(
    tmp_path: Path, host: str, mongo_uri: str, backed_up: str
) -> None:
    drop(mongo_uri, backed_up, "apps", "teams")
    done = run("heal", str(tmp_path), host, backed_up, *SIZES, "ghost")
    assert done.returncode != 0  # ghost is in no archive
    lines = done.stdout.splitlines()
    assert lines[0] == f"healed {backed_up}: 2 of 3 vanished collections restored"
    assert re.fullmatch(
        rf"  apps: restored from \S+ \(40 documents, 2 indexes, {SIZE} of {SIZE} fetched, "
        r"[\d.]+s\)",
        lines[1],
    ), lines[1]
    assert lines[2].startswith("  teams: restored from ")
    assert lines[3:] == ["  ghost: still missing"]
    assert "0.0 of 0.0 MB" not in done.stdout


def test_heal_claims_nothing_when_nothing_was_restored(
    tmp_path: Path, host: str, mongo_uri: str, backed_up: str
) -> None:
    done = run("heal", str(tmp_path), host, backed_up, "users", "ghost")
    assert done.returncode != 0
    assert done.stdout.splitlines() == [
        f"did not heal {backed_up}: 0 of 1 vanished collections restored",
        "  ghost: still missing",
    ]


def test_a_dry_run_says_would(tmp_path: Path, host: str, mongo_uri: str, backed_up: str) -> None:
    drop(mongo_uri, backed_up, "users")
    done = run("heal", str(tmp_path), host, backed_up, "users", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.splitlines()[0]
        == f"would heal {backed_up}: 1 of 1 vanished collections would be restored"
    )
    assert re.fullmatch(
        r"  users: would restore from \S+ \(5 documents, 0 indexes\)", done.stdout.splitlines()[1]
    )


def test_restore_list_verify_prune_print_units(
    tmp_path: Path, host: str, mongo_uri: str, backed_up: str
) -> None:
    copy = f"{backed_up}_copy"
    try:
        restored = run("restore", "latest", str(tmp_path), host, backed_up, "--to-database", copy)
    finally:
        with MongoClient(mongo_uri) as client:
            client.drop_database(copy)
    assert restored.returncode == 0, restored.stderr
    assert re.search(rf"\({SIZE} of {SIZE} fetched\)", restored.stdout), restored.stdout
    listed = run("list", str(tmp_path))
    assert re.search(rf"  {SIZE}\b", listed.stdout), listed.stdout
    verified = run("verify", "latest", str(tmp_path))
    assert re.search(rf"read {SIZE} in [\d.]+s \({SIZE}/s\)", verified.stdout), verified.stdout
    pruned = run("prune", str(tmp_path), "--keep-last", "1")
    assert pruned.returncode == 0, pruned.stderr
    assert re.search(r"\(0 B\)", pruned.stdout), pruned.stdout
    for done in (restored, listed, verified, pruned):
        assert " 0.0 MB" not in done.stdout
