"""Human output: sizes in sensible units, heal's summary one line per collection."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from helpers import run_cli as run
from helpers import seed
from pymongo import MongoClient

from mongosnap.cli.heal import summary
from mongosnap.pipelines.engine import CollectionOutcome, Status
from mongosnap.pipelines.heal import HealReplay, HealReport
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


def test_rate() -> None:
    assert rate(3_000_000, 2) == "1.5 MB/s"
    assert rate(10, 0) == "0 B/s"


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (0, "0s"),
        (0.9, "0s"),
        (42.4, "42s"),
        (59.9, "59s"),  # truncated, as every unit is: never shown older than it is
        (60, "1m00s"),
        (185, "3m05s"),
        (3599.9, "59m59s"),
        (3600, "1h00m"),
        (7620, "2h07m"),
        (86399, "23h59m"),
        (86400, "1d00h"),
        (3 * 86400 + 4 * 3600 + 59 * 60, "3d04h"),
        (400 * 86400, "400d00h"),
        (timedelta(days=1, hours=2), "1d02h"),
        (timedelta(minutes=-5), "0s"),  # a clock running behind: no negative age
        (-0.5, "0s"),
        (None, "-"),
        (float("nan"), "-"),
        (float("inf"), "-"),
    ],
)
def test_duration_keeps_the_two_largest_units(span: float | timedelta | None, text: str) -> None:
    assert duration(span) == text


def test_list_uploads_shows_ages_in_days(tmp_path: Path) -> None:
    """A directory's temporary file has no creation time (age ``-``); its idle
    time comes from its modification time."""
    partial = tmp_path / ".2025-01-01-03-00-00-mongodb-dump.tar.gz.x1y2.partial"
    partial.write_bytes(b"partial")
    then = (datetime.now(UTC) - timedelta(days=3, hours=4, minutes=5)).timestamp()
    os.utime(partial, (then, then))
    done = run("list", str(tmp_path), "--uploads")
    assert done.returncode == 0, done.stderr
    row = done.stdout.splitlines()[1].split()
    assert row[:4] == ["2025-01-01-03-00-00-mongodb-dump.tar.gz", "-", "-", "3d04h"], row


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
        f"did not heal {backed_up}: 0 of 1 vanished collection restored",
        "  ghost: still missing",
    ]


def test_a_dry_run_says_would(tmp_path: Path, host: str, mongo_uri: str, backed_up: str) -> None:
    drop(mongo_uri, backed_up, "users")
    done = run("heal", str(tmp_path), host, backed_up, "users", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.splitlines()[0]
        == f"would heal {backed_up}: 1 of 1 vanished collection would be restored"
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


def test_heal_summary_says_to_when_the_oplog_was_replayed() -> None:
    """The "before TS" form and a shared replay: FerretDB logs no drop and the
    end-to-end test heals one collection, so these are rendered from a report."""
    outcome = partial(CollectionOutcome, "app", status=Status.RESTORED, archive="a.tar.gz")
    report = HealReport(
        "app",
        watched=["apps", "teams", "users"],
        healthy=[],
        restored=[outcome("apps", documents=1200), outcome("teams"), outcome("users")],
        replays=[
            HealReplay(
                "a.tar.gz", ["apps", "teams"], "1764583200:1", "1764583305:3", 1234,
                {"apps": "before 1764583265:2", "teams": "1764583305:3"},
            )
        ],
    )  # fmt: skip
    lines = summary(report).splitlines()
    assert lines[1].startswith("  apps: restored from a.tar.gz (1,200 documents, ")
    assert lines[2] == (
        "    oplog replayed to just before 2025-12-01T10:01:05Z (ts 1764583265:2): "
        "1,234 entries (shared with teams)"
    )
    assert lines[3].startswith("  teams: restored from a.tar.gz (0 documents, ")
    assert lines[4] == (
        "    oplog replayed to 2025-12-01T10:01:45Z (ts 1764583305:3): "
        "1,234 entries (shared with apps)"
    )
    assert lines[5].startswith("  users: restored from ") and len(lines) == 6  # not replayed
