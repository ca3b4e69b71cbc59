"""benchmarks/bench_crypto.py keeps working: a tiny run of each measurement."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from helpers import subprocess_env

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_crypto.py"


def test_bench_crypto_prints_throughput_for_each_step() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--mib", "2", "--rounds", "1"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = dict(re.findall(r"^(\w+) +([\d.]+) MB/s +[\d.]+ CPU-s", done.stdout, re.M))
    assert set(figures) == {"seal", "encrypt", "decrypt"}
    assert all(float(value) > 0 for value in figures.values())
