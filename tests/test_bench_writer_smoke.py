"""benchmarks/bench_writer.py keeps working: a tiny run of each measurement."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from helpers import subprocess_env

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_writer.py"


def test_bench_writer_prints_a_cost_per_collection_for_each_sink(tmp_path: Path) -> None:
    profile = tmp_path / "writer.prof"
    argv = [sys.executable, str(BENCH), "--collections", "70", "--rounds", "1"]
    done = subprocess.run(
        [*argv, "--profile", str(profile)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = dict(re.findall(r"^(\w+) +([\d.]+) µs per collection$", done.stdout, re.M))
    assert set(figures) == {"directory", "memory", "compression"}
    assert all(float(value) > 0 for value in figures.values())
    assert profile.stat().st_size > 0
