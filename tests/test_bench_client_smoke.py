"""benchmarks/bench_client.py keeps working: a tiny run of the drains, in CI.

Each drain prints the bytes it read and the script refuses a figure unless
they are the fake server's, so a reader that silently reads less fails here;
mongodump is the real one (a missing tool fails the run).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from helpers import subprocess_env

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_client.py"
DRAINS = ["cursor-drain", "raw-drain", "mongodump-null"]


def test_every_drain_reads_the_whole_corpus_and_gets_a_figure() -> None:
    argv = [sys.executable, str(BENCH), "--case", "200b", "--mb", "0.5", "--rounds", "1"]
    done = subprocess.run(
        [*argv, "--drain-batch", "300", "--only", *DRAINS],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = dict(re.findall(r"^([\w-]+) +[\d.]+ +[\d.]+ +\d+ +([\d.]+) ", done.stdout, re.M))
    assert set(rows) == {"drain", *DRAINS}
    assert all(float(cpu) > 0 for cpu in rows.values())
