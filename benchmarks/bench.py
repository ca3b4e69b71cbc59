"""Backup throughput and peak memory, measured against real servers in one run.

    .venv/bin/python benchmarks/bench_backup.py --gb 1.0 --big-mb 400

Starts the test bed (FerretDB + versitygw), seeds a database of about --gb GB
with one collection of --big-mb MB (larger than the 256 MiB memory budget),
then times, on the same data:

- mongosnap backup to a local directory and to versitygw (gzip), and zstd;
- a plain read of every collection with find_raw_batches (the server's ceiling);
- the legacy pipeline's stages that can run here: the same dump/ directory
  that mongodump writes, then ``tar -czf``, then an upload of the tarball.
  (mongodump itself cannot be built here; see docs/testbed.md.)
- mongosnap's pipeline without the server: the same BSON pushed through the
  archive writer into versitygw, to show what the pipeline can take.

Each measured command runs as its own process; peak RSS is that process's
ru_maxrss. Figures go to stdout as a table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORDS = "tsuru app unit deploy router pool team service plan quota node docker image".split()  # noqa: SIM905


def _load_testbed() -> Any:
    spec = importlib.util.spec_from_file_location("testbed", ROOT / "scripts" / "testbed.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["testbed"] = module
    spec.loader.exec_module(module)
    return module


def _document(i: int, rng: random.Random) -> dict[str, Any]:
    """About 1 KB, half text (compressible), some random bytes, some structure."""
    return {
        "i": i,
        "name": " ".join(rng.choice(WORDS) for _ in range(40)),
        "score": rng.random(),
        "blob": rng.randbytes(256),
        "tags": [rng.choice(WORDS) for _ in range(6)],
        "meta": {"owner": rng.choice(WORDS), "units": rng.randrange(100), "x": "y" * 200},
    }


def seed(uri: str, database: str, total_mb: int, big_mb: int) -> int:
    from pymongo import MongoClient

    rng = random.Random(7)
    pool = [_document(i, rng) for i in range(2000)]
    size = len(__import__("bson").encode(pool[0]))
    plan = {"big": big_mb}
    rest = total_mb - big_mb
    for n in range(4):
        plan[f"coll{n}"] = rest // 4
    written = 0
    with MongoClient(uri) as client:
        db = client[database]
        for name, mb in plan.items():
            count = mb * 1024 * 1024 // size
            for start in range(0, count, 5000):
                batch = [dict(pool[(start + j) % len(pool)], i=start + j) for j in range(5000)]
                db[name].insert_many(batch[: count - start], ordered=False)
            db[name].create_index("i")
        for name in plan:
            written += int(db.command("collStats", name).get("size", 0))
    return written


def measure(argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a command; wall seconds, peak RSS MiB and its stdout."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    if proc.returncode:
        raise SystemExit(f"{argv[:4]} failed with {proc.returncode}")
    return {"seconds": wall, "rss_mib": usage.ru_maxrss / 1024, "stdout": out.decode()}


READ_ALL = """
import sys
from pymongo import MongoClient
db = MongoClient(sys.argv[1])[sys.argv[2]]
total = 0
for name in db.list_collection_names():
    for batch in db[name].find_raw_batches():
        total += len(batch)
print(total)
"""

PIPELINE_ONLY = """
import asyncio, sys, pathlib
from mongosnap.archive import ArchiveWriter
from mongosnap.codecs import get_codec
from mongosnap.storage import S3Config, open_storage

async def main(dump, url, endpoint):
    storage = open_storage(url, s3=S3Config(endpoint_url=endpoint, addressing_style="path"))
    sink = storage.open_writer("pipeline-only.tar.gz")
    writer = ArchiveWriter(sink, get_codec("gzip"))
    for path in sorted(pathlib.Path(dump).rglob("*.bson")):
        await writer.begin(str(path.relative_to(pathlib.Path(dump).parent)))
        with open(path, "rb") as handle:
            while chunk := handle.read(4 << 20):
                await writer.write(chunk)
        await writer.end()
    await writer.finish(b"{}")
    info = await sink.commit()
    await storage.aclose()
    print(info.size)

asyncio.run(main(*sys.argv[1:]))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="database size to seed")
    parser.add_argument("--big-mb", type=int, default=400, help="size of the largest collection")
    args = parser.parse_args()

    testbed = _load_testbed()
    testbed.build()
    work = Path(tempfile.mkdtemp(prefix="mongosnap-bench-"))
    with testbed.Testbed() as bed:
        gw = bed.s3["versitygw"]
        env = dict(
            os.environ,
            AWS_ACCESS_KEY_ID=gw.access_key,
            AWS_SECRET_ACCESS_KEY=gw.secret_key,
            AWS_DEFAULT_REGION=gw.region,
        )
        import boto3
        from botocore.config import Config

        s3 = boto3.client(
            "s3",
            endpoint_url=gw.endpoint_url,
            aws_access_key_id=gw.access_key,
            aws_secret_access_key=gw.secret_key,
            region_name=gw.region,
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        s3.create_bucket(Bucket="bench")
        host = bed.mongo_uri.split("://", 1)[1].rstrip("/")
        t0 = time.monotonic()
        stored = seed(bed.mongo_uri, "bench", int(args.gb * 1024), args.big_mb)
        print(f"seeded {stored / 1e6:.0f} MB in {time.monotonic() - t0:.0f}s", file=sys.stderr)

        mongosnap = [sys.executable, "-m", "mongosnap", "backup"]
        gw_flags = ["--endpoint-url", gw.endpoint_url, "--addressing-style", "path"]
        rows: dict[str, dict[str, Any]] = {}
        rows["read only (find_raw_batches)"] = measure(
            [sys.executable, "-c", READ_ALL, bed.mongo_uri, "bench"]
        )
        source_bytes = int(rows["read only (find_raw_batches)"]["stdout"])
        rows["mongosnap -> local dir (gzip)"] = measure(
            [*mongosnap, str(work / "local"), host, "bench", "--json"]
        )
        rows["mongosnap -> versitygw (gzip)"] = measure(
            [*mongosnap, "s3://bench/m", host, "bench", "--json", *gw_flags], env=env
        )
        rows["mongosnap -> local dir (zstd)"] = measure(
            [*mongosnap, str(work / "zstd"), host, "bench", "--json", "--codec", "zstd"]
        )
        archive = next((work / "local").glob("*.tar.gz"))
        subprocess.run(["tar", "-xzf", str(archive), "-C", str(work)], check=True)
        shutil.rmtree(work / "mongosnap", ignore_errors=True)
        rows["legacy: tar -czf dump"] = measure(
            ["tar", "-czf", str(work / "legacy.tar.gz"), "-C", str(work), "dump"]
        )
        upload = (
            "import boto3,sys;from botocore.config import Config;"
            "boto3.client('s3',endpoint_url=sys.argv[1],config=Config(s3={'addressing_style':"
            "'path'},request_checksum_calculation='when_required')).upload_file(sys.argv[2],"
            "'bench','legacy.tar.gz')"
        )
        rows["legacy: upload tarball"] = measure(
            [sys.executable, "-c", upload, gw.endpoint_url, str(work / "legacy.tar.gz")], env=env
        )
        rows["pipeline only -> versitygw"] = measure(
            [
                sys.executable,
                "-c",
                PIPELINE_ONLY,
                str(work / "dump"),
                "s3://bench/p",
                gw.endpoint_url,
            ],
            env=env,
        )
    report(rows, source_bytes, work)
    shutil.rmtree(work, ignore_errors=True)


def report(rows: dict[str, dict[str, Any]], source_bytes: int, work: Path) -> None:
    mb = source_bytes / 1e6
    print(f"\nsource: {mb:.0f} MB of BSON\n")
    print(f"{'step':36} {'seconds':>8} {'MB/s':>8} {'peak RSS MiB':>13} {'out MB':>8}")
    for name, row in rows.items():
        out = ""
        if row["stdout"].startswith("{"):
            out = f"{json.loads(row['stdout'])['bytes_out'] / 1e6:.0f}"
        print(
            f"{name:36} {row['seconds']:8.1f} {mb / row['seconds']:8.1f} "
            f"{row['rss_mib']:13.0f} {out:>8}"
        )
    legacy = sum(
        rows[k]["seconds"]
        for k in ("read only (find_raw_batches)", "legacy: tar -czf dump", "legacy: upload tarball")
    )
    ours = rows["mongosnap -> versitygw (gzip)"]["seconds"]
    print(
        f"\nlegacy lower bound (read + tar -czf + upload, sequential, plus disk for "
        f"dump and tarball): {legacy:.1f}s; mongosnap to versitygw: {ours:.1f}s; "
        f"ratio legacy/mongosnap = {legacy / ours:.2f}"
    )


if __name__ == "__main__":
    main()
