"""benchmarks/bench_max_rate.py keeps working: a tiny run against the test bed."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

from helpers import subprocess_env
from pymongo import MongoClient

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_max_rate.py"


def test_bench_max_rate_prints_rates_and_latencies(mongo_uri: str) -> None:
    database = f"bench_max_rate_{uuid.uuid4().hex[:10]}"
    argv = [sys.executable, str(BENCH), "--mib", "1", "--caps", "4", "--uri", mongo_uri]
    try:
        done = subprocess.run(
            [*argv, "--database", database],
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    finally:
        with MongoClient(mongo_uri) as client:
            client.drop_database(database)
    assert done.returncode == 0, done.stderr
    rates = re.findall(r"^\| (none|4\.0) \| ([\d.]+) \| ([\d.]+) \|", done.stdout, re.M)
    assert [cap for cap, _, _ in rates] == ["none", "4.0"]
    assert all(float(wall) > 0 and float(rate) > 0 for _, wall, rate in rates)
    phases = re.findall(
        r"^\| (no backup|uncapped backup|backup --max-rate 4) \| [\d.]+ \| [\d.]+ \| (\d+) \|",
        done.stdout,
        re.M,
    )
    assert [name for name, _ in phases] == ["no backup", "uncapped backup", "backup --max-rate 4"]
