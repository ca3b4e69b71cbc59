"""The S3 part writer alone: client CPU to stream an object to an S3 server.

    .venv/bin/python benchmarks/bench_s3_writer.py --s3-endpoint URL --bucket B
        [--mb 260] [--rounds 3]

Each round, a fresh process opens ``S3Storage(B, "bench-writer")``, probes the
bucket, then times ``open_writer`` / ``write`` (256 KiB pieces of random bytes,
as compressed chunks arrive) / ``commit`` of ``--mb`` MB: its CPU seconds
(user + system of the process over those calls) and wall seconds, min of the
rounds. Credentials from the standard AWS variables. With
``MONGOSNAP_BASELINE=DIR`` (a source tree, e.g. ``git archive`` of an older
commit) the same runs for that tree's mongosnap, alternated with this one's:
before and after in one run. The objects are left in the bucket.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ONE_RUN = """
import asyncio, os, resource, sys, time
from mongosnap.storage import S3Config, S3Storage

def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

async def main(endpoint, bucket, mb):
    piece = os.urandom(256 * 1024)
    config = S3Config(endpoint_url=endpoint, addressing_style="path")
    async with S3Storage(bucket, "bench-writer", config) as storage:
        await storage.check()
        started_cpu, started = cpu(), time.perf_counter()
        async with storage.open_writer(f"object-{time.time_ns()}") as writer:
            for _ in range(mb * 4):
                await writer.write(piece)
            await writer.commit()
        print(cpu() - started_cpu, time.perf_counter() - started)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def run(tree: Path, args: argparse.Namespace) -> tuple[float, float]:
    argv = [sys.executable, "-c", ONE_RUN, args.s3_endpoint, args.bucket, str(args.mb)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout
    cpu, wall = out.split()
    return float(cpu), float(wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--s3-endpoint", required=True)
    parser.add_argument("--bucket", required=True, help="an existing bucket")
    parser.add_argument("--mb", type=int, default=260)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    trees = {"this tree": ROOT}
    if os.environ.get("MONGOSNAP_BASELINE"):
        trees["baseline"] = Path(os.environ["MONGOSNAP_BASELINE"])
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label in trees}
    for _ in range(args.rounds):
        for label, tree in trees.items():
            runs[label].append(run(tree, args))
    print(f"{args.mb} MB in 256 KiB writes, {args.rounds} rounds, min of each column")
    print(f"{'tree':<10} {'CPU s':>7} {'wall s':>7}")
    for label, figures in runs.items():
        print(f"{label:<10} {min(c for c, _ in figures):7.3f} {min(w for _, w in figures):7.3f}")


if __name__ == "__main__":
    main()
