"""``mongosnap check``: a monitoring probe with Nagios exit codes and one line."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from catalog_support import backup_at
from helpers import Destination, make_destination, run_cli, seed, subprocess_env

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3


def host_of(uri: str) -> str:
    return uri.split("://", 1)[1].rstrip("/")


def backup(destination: Destination, uri: str, database: str) -> dict[str, Any]:
    done = run_cli(
        "backup", destination.url, host_of(uri), database, "--json",
        env=subprocess_env(destination),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def check(destination: Destination, *args: str) -> tuple[int, str]:
    done = run_cli("check", destination.url, *args, env=subprocess_env(destination))
    assert done.stdout.count("\n") == 1, (done.stdout, done.stderr)
    return done.returncode, done.stdout.strip()


def check_json(destination: Destination, *args: str) -> tuple[int, dict[str, Any]]:
    done = run_cli("check", destination.url, *args, "--json", env=subprocess_env(destination))
    verdict: dict[str, Any] = json.loads(done.stdout)
    assert verdict["exit_code"] == done.returncode
    return done.returncode, verdict


def test_fresh_complete_archive_is_ok(
    destination: Destination, mongo_uri: str, new_database: str
) -> None:
    seed(mongo_uri, new_database, {"apps": 10, "users": 2})
    result = backup(destination, mongo_uri, new_database)
    code, line = check(destination, new_database, "--max-age", "1h")
    assert code == OK, line
    assert line.startswith(f"MONGOSNAP OK - newest complete archive of {new_database} is ")
    assert result["archive_key"] in line and "2 collections, 12 documents" in line
    assert "| age=" in line and ";3600 size=" in line  # Nagios performance data
    code, verdict = check_json(destination, "--max-age", "1h")
    assert (code, verdict["status"]) == (OK, "OK")
    assert verdict["archive"] == result["archive_key"] and verdict["created"].endswith("Z")
    assert verdict["size"] == result["bytes_out"] and verdict["database"] is None


def test_age_limits_warning_and_critical(tmp_path: Path, mongo_uri: str, new_database: str) -> None:
    destination = make_destination("local", tmp_path, None, None)
    seed(mongo_uri, new_database, {"apps": 3})
    backup(destination, mongo_uri, new_database)
    time.sleep(2.1)  # names have one-second resolution: the archive is now 2-3 s old
    code, line = check(destination, "--max-age", "1s")
    assert code == CRITICAL and line.startswith("MONGOSNAP CRITICAL - "), line
    code, line = check(destination, "--max-age", "1h", "--warn-age", "1s")
    assert code == WARNING and line.startswith("MONGOSNAP WARNING - "), line
    code, line = check(destination, new_database, "--max-age", "1h", "--warn-age", "1h")
    assert code == OK, line


async def test_ages_and_limits_read_in_days_hours_minutes(
    tmp_path: Path, mongo_uri: str, new_database: str
) -> None:
    destination = make_destination("local", tmp_path, None, None)
    seed(mongo_uri, new_database, {"apps": 3})
    then = datetime.now(UTC) - timedelta(days=1, hours=2, minutes=5)
    key = await backup_at(then.replace(microsecond=0), mongo_uri, destination, new_database)
    code, line = check(destination, "--max-age", "2d", "--warn-age", "26h")
    assert code == WARNING, line
    assert f" is 1d02h old (limit 2d00h): {key} (" in line, line
    code, line = check(destination, "--max-age", "90m")
    assert code == CRITICAL and " is 1d02h old (limit 1h30m): " in line, line


def test_other_database_and_empty_destination_are_critical(
    tmp_path: Path, mongo_uri: str, new_database: str
) -> None:
    destination = make_destination("local", tmp_path, None, None)
    assert destination.root is not None
    destination.root.mkdir()  # empty; a missing one is UNKNOWN (test_mistakes.py)
    code, line = check(destination)
    assert code == CRITICAL and "no complete archive in" in line
    seed(mongo_uri, new_database, {"apps": 3})
    backup(destination, mongo_uri, new_database)
    code, line = check(destination, "not_backed_up")
    assert code == CRITICAL
    assert line == f"MONGOSNAP CRITICAL - no complete archive of not_backed_up in {destination.url}"


def test_incomplete_archives_are_skipped(tmp_path: Path, mongo_uri: str, new_database: str) -> None:
    destination = make_destination("local", tmp_path, None, None)
    seed(mongo_uri, new_database, {"apps": 3})
    older = backup(destination, mongo_uri, new_database)
    time.sleep(1.1)
    newer = backup(destination, mongo_uri, new_database)
    assert destination.root is not None
    (destination.root / newer["manifest_key"]).unlink()  # an interrupted write looks so
    code, verdict = check_json(destination, new_database)
    assert code == OK and verdict["archive"] == older["archive_key"]
    assert verdict["incomplete_skipped"] == [newer["archive_key"]]
    assert "1 newer incomplete" in verdict["message"]
    (destination.root / older["manifest_key"]).write_text("{}")  # a sidecar that fails
    code, line = check(destination, new_database)
    assert code == CRITICAL and line.endswith("(2 incomplete)"), line


@pytest.mark.parametrize("kind", ["moto", "versitygw"])
def test_unreadable_destination_is_unknown(kind: str, tmp_path: Path, testbed: Any) -> None:
    destination = make_destination(kind, tmp_path, testbed, lambda _: "no-such-bucket-mongosnap")
    code, line = check(destination)
    assert code == UNKNOWN and line.startswith("MONGOSNAP UNKNOWN - BucketNotFound: "), line
    code, verdict = check_json(destination)
    assert code == UNKNOWN
    assert verdict["error"]["type"] == "BucketNotFound"
    assert verdict["error"]["exit_code"] == UNKNOWN


def test_bad_duration_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli("check", str(tmp_path), "--max-age", "soon")
    assert done.returncode == 2 and "not a duration" in done.stderr
