"""The example alerts of docs/operations.md fire when they should, and only then.

Three real cron-like runs write one --metrics-file: a backup that succeeds, one
that fails (the server is unreachable), a later one that succeeds. Prometheus
scraping that file is simulated (tests/promql.py) and every alert of the doc's
YAML block, read from the doc, is evaluated at moments after each run: right
after it, and after a long quiet spell in which no run replaces the file.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import run_cli, seed
from prometheus_client.parser import text_string_to_metric_families
from promql import fires, scrape
from pymongo import MongoClient

OPERATIONS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
HOUR = 3600.0

# After which run, how long after it, and the alerts that must fire then.
MOMENTS = {
    "success": ("success", 60.0, set()),
    "success-then-silence": ("success", 27 * HOUR, {"MongosnapBackupStale"}),
    "failure": ("failure", 60.0, {"MongosnapBackupFailing", "MongosnapFailures"}),
    "failure-then-silence": (
        "failure",
        27 * HOUR,
        {"MongosnapBackupStale", "MongosnapBackupFailing"},
    ),
    "later-success": ("later success", 60.0, {"MongosnapFailures"}),
    "later-success-an-hour-on": ("later success", 2 * HOUR, set()),
}


def documented_alerts(holding: str = "MongosnapBackupStale") -> dict[str, str]:
    """Alert name -> expression, from the doc's YAML block of alert rules that
    holds the alert ``holding`` (one block for backups, one for drills)."""
    blocks = re.findall(r"```yaml\n(.*?)```", OPERATIONS.read_text(), flags=re.S)
    rules = [yaml.safe_load(b) for b in blocks if f"alert: {holding}" in b]
    assert len(rules) == 1, f"docs/operations.md should have one block holding {holding}"
    return {rule["alert"]: rule["expr"] for rule in rules[0]}


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory, mongo_uri: str, _mongo_admin: MongoClient[Any]
) -> Iterator[dict[str, tuple[float, str]]]:
    """Each run's end and the metrics file it left: success, failure, later success."""
    database = f"mongosnap_test_{uuid.uuid4().hex[:12]}"
    seed(mongo_uri, database, {"apps": 7})
    root = tmp_path_factory.mktemp("alerts")
    prom, dest = root / "mongosnap_backup.prom", str(root / "dest")
    host = mongo_uri.split("://", 1)[1].rstrip("/")
    found: dict[str, tuple[float, str]] = {}
    steps = [("success", host, 0), ("failure", "127.0.0.1:9", 11), ("later success", host, 0)]
    for name, server, code in steps:
        done = run_cli(
            "backup", dest, server, database, "--connect-timeout", "2",
            "--metrics-file", str(prom),
        )  # fmt: skip
        assert done.returncode == code, done.stderr
        found[name] = (time.time(), prom.read_text())
    yield found
    _mongo_admin.drop_database(database)


@pytest.mark.parametrize("moment", MOMENTS)
def test_documented_alerts_fire_when_they_should(
    runs: dict[str, tuple[float, str]], moment: str
) -> None:
    alerts = documented_alerts()
    assert set(alerts) == {a for _, _, firing in MOMENTS.values() for a in firing}
    after, delay, expected = MOMENTS[moment]
    ended = runs[after][0]
    files = [(at, text) for at, text in runs.values() if at <= ended]
    series = scrape(files, until=ended + delay)
    firing = {name for name, expr in alerts.items() if fires(expr, series, ended + delay)}
    assert firing == expected


def test_counters_and_the_last_success_carry_over(runs: dict[str, tuple[float, str]]) -> None:
    """Straight from the files: the figures the alerts rely on."""

    def read(run: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        families = text_string_to_metric_families(runs[run][1])
        return {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples}

    def value(run: str, name: str, **labels: str) -> float | None:
        return read(run).get(
            (f"mongosnap_{name}", frozenset({"command": "backup", **labels}.items()))
        )

    first_success = value("success", "last_success_timestamp_seconds")
    assert first_success is not None
    assert value("failure", "last_success_timestamp_seconds") == first_success
    assert value("failure", "last_run_success") == 0
    assert value("failure", "runs_total", outcome="failure") == 1
    assert value("failure", "runs_total", outcome="success") == 1
    assert value("failure", "documents_total") == 7
    assert value("later success", "last_run_success") == 1
    assert (value("later success", "last_success_timestamp_seconds") or 0) > first_success
    assert value("later success", "runs_total", outcome="success") == 2
    assert value("later success", "runs_total", outcome="failure") == 1
    assert value("later success", "failures_total", kind="ServerUnreachable") == 1
    assert value("later success", "documents_total") == 14


def test_failures_by_kind_escape_increase(runs: dict[str, tuple[float, str]]) -> None:
    """Why the doc counts failures with runs_total: a kind's series is born at 1."""
    ended = runs["failure"][0]
    series = scrape([runs["success"], runs["failure"]], until=ended + 60)
    assert not fires("increase(mongosnap_failures_total[1h]) > 0", series, ended + 60)
    assert fires('increase(mongosnap_runs_total{outcome="failure"}[1h]) > 0', series, ended + 60)


@pytest.mark.parametrize("expr", ["rate(x[5m]) > 0", "x > bool 1", "sum(x) > 0", 'x{a=~"b"}'])
def test_the_evaluator_refuses_what_it_does_not_know(expr: str) -> None:
    with pytest.raises(ValueError):
        fires(expr, {}, 0.0)


def test_documented_drill_alerts_fire_when_they_should(
    tmp_path: Path, mongo_uri: str, new_database: str
) -> None:
    """A real drill's metrics file: quiet right after it, stale 9 days on (no
    drill passed since); a one-hour RTO alert quiet for a drill of seconds."""
    alerts = documented_alerts("MongosnapDrillStale")
    assert set(alerts) == {"MongosnapDrillStale", "MongosnapDrillSlow"}
    seed(mongo_uri, new_database, {"apps": 7})
    host = mongo_uri.split("://", 1)[1].rstrip("/")
    dest, prom = str(tmp_path / "dest"), tmp_path / "mongosnap_drill.prom"
    assert run_cli("backup", dest, host, new_database, "-q").returncode == 0
    done = run_cli("drill", dest, host, new_database, "--metrics-file", str(prom), "-q")
    assert done.returncode == 0, done.stderr
    ended = time.time()
    for delay, expected in ((60.0, set()), (9 * 24 * HOUR, {"MongosnapDrillStale"})):
        series = scrape([(ended, prom.read_text())], until=ended + delay)
        firing = {name for name, expr in alerts.items() if fires(expr, series, ended + delay)}
        assert firing == expected, delay
