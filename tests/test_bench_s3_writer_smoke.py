"""benchmarks/bench_s3_writer.py keeps working: a tiny run on each S3 server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import subprocess_env

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_s3_writer.py"


def test_bench_s3_writer_prints_cpu_and_wall(s3_endpoint: Any, new_bucket: Any) -> None:
    env = subprocess_env() | {
        "AWS_ACCESS_KEY_ID": s3_endpoint.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_endpoint.secret_key,
        "AWS_DEFAULT_REGION": s3_endpoint.region,
    }
    argv = [sys.executable, str(BENCH), "--s3-endpoint", s3_endpoint.endpoint_url]
    argv += ["--bucket", new_bucket(s3_endpoint), "--mb", "6", "--rounds", "1"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    (row,) = re.findall(r"^this tree +([\d.]+) +([\d.]+)$", done.stdout, re.M)
    assert all(float(value) > 0 for value in row)
