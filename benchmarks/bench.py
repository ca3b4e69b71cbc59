"""Backup and heal throughput and peak memory, against real servers in one run.

    .venv/bin/python benchmarks/bench.py --gb 1.0 --big-mb 400 [--mongo-tools DIR]

Starts the test bed (FerretDB + versitygw), seeds a database of about --gb GB
with one collection of --big-mb MB (larger than the 256 MiB memory budget),
then times, on the same data:

- mongosnap backup to a local directory and to versitygw (gzip), and zstd;
- a plain read of every collection with find_raw_batches (the server's ceiling);
- the legacy pipeline's stages that can run here: the same dump/ directory
  that mongodump writes, then ``tar -czf``, then an upload of the tarball.
  (mongodump itself cannot be built here; see docs/testbed.md.)
- mongosnap's pipeline without the server: the same BSON pushed through the
  archive writer into versitygw, to show what the pipeline can take;
- heal of one dropped collection out of the versitygw archive (bytes fetched,
  seconds), next to a download of the whole archive;
- with --mongo-tools DIR (a directory holding mongodump and mongorestore, which
  cannot be built on these machines' registries), the real legacy pipeline:
  mongodump to disk, tar -czf, upload; and mongorestore of the one collection.

Each measured command runs as its own process; peak RSS is that process's
ru_maxrss. Figures go to stdout as a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import testbed  # noqa: E402  (scripts/testbed.py builds and starts the servers)

WORDS = "tsuru app unit deploy router pool team service plan quota node docker image".split()  # noqa: SIM905


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
    """Run a command; wall seconds, peak RSS MiB (VmHWM after exec) and its stdout.

    ru_maxrss of a child counts the parent's image it was forked from, so the
    peak is read from /proc while the command runs; VmHWM only grows, and the
    last reading is taken every 20 ms.
    """
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
    peak = [0]

    def watch() -> None:
        while proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, _ = proc.communicate()
    watcher.join()
    wall = time.monotonic() - started
    if proc.returncode:
        raise SystemExit(f"{argv[:4]} failed with {proc.returncode}")
    return {"seconds": wall, "rss_mib": peak[0] / 1024, "stdout": out.decode()}


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
    parser.add_argument("--mongo-tools", type=Path, help="directory with mongodump, mongorestore")
    args = parser.parse_args()

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
        rows["legacy: upload tarball"] = measure(
            [sys.executable, "-c", UPLOAD, gw.endpoint_url, str(work / "legacy.tar.gz")], env=env
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
        if args.mongo_tools:
            legacy_with_mongodump(rows, args.mongo_tools, host, work, gw.endpoint_url, env)
        heal_rows = bench_heal(bed.mongo_uri, host, gw, env, args.mongo_tools, work)
    report(rows, source_bytes, work)
    print()
    for name, value in heal_rows.items():
        print(f"{name:48} {value}")
    shutil.rmtree(work, ignore_errors=True)


def legacy_with_mongodump(
    rows: dict[str, dict[str, Any]],
    tools: Path,
    host: str,
    work: Path,
    endpoint: str,
    env: dict[str, str],
) -> None:
    """The legacy pipeline as it ran: mongodump to disk, tar -czf, upload."""
    out = work / "mongodump"
    rows["legacy: mongodump to disk"] = measure(
        [
            str(tools / "mongodump"),
            "--host",
            host,
            "--db",
            "bench",
            "--out",
            str(out / "dump"),
            "--quiet",
        ]
    )
    rows["legacy: tar -czf (mongodump's dump)"] = measure(
        ["tar", "-czf", str(out / "legacy.tar.gz"), "-C", str(out), "dump"]
    )
    rows["legacy: upload (mongodump's tarball)"] = measure(
        [sys.executable, "-c", UPLOAD, endpoint, str(out / "legacy.tar.gz")], env=env
    )


def bench_heal(
    uri: str, host: str, gw: Any, env: dict[str, str], tools: Path | None, work: Path
) -> dict[str, str]:
    """Drop one collection, heal it from the versitygw archive; compare to a full download."""
    from pymongo import MongoClient

    out: dict[str, str] = {}
    flags = ["--endpoint-url", gw.endpoint_url, "--addressing-style", "path", "--json"]
    with MongoClient(uri) as client:
        size = client.bench.command("collStats", "coll0")["size"]
        client.bench.drop_collection("coll0")
    healed = measure(
        [sys.executable, "-m", "mongosnap", "heal", "s3://bench/m", host, "bench", "coll0", *flags],
        env=env,
    )
    result = json.loads(healed["stdout"])
    outcome = result["restored"][0]
    archive = outcome["archive"]
    whole = measure([sys.executable, "-c", DOWNLOAD, gw.endpoint_url, archive], env=env)
    total = int(whole["stdout"])
    out["heal coll0: documents"] = f"{outcome['documents']} (collStats size {size / 1e6:.0f} MB)"
    out["heal coll0: bytes fetched / archive size"] = (
        f"{result['bytes_fetched'] / 1e6:.1f} MB / {total / 1e6:.1f} MB "
        f"({100 * result['bytes_fetched'] / total:.1f}%)"
    )
    out["heal coll0: seconds, peak RSS MiB"] = f"{healed['seconds']:.1f}s, {healed['rss_mib']:.0f}"
    out["download whole archive: seconds"] = f"{whole['seconds']:.1f}s"
    if tools:
        dump = work / "mongodump" / "dump" / "bench"
        with MongoClient(uri) as client:
            client.bench.drop_collection("coll0")
        restored = measure(
            [
                str(tools / "mongorestore"),
                "--host",
                host,
                "--db",
                "bench",
                "--collection",
                "coll0",
                str(dump / "coll0.bson"),
                "--quiet",
                "--noIndexRestore",  # FerretDB refuses the ns index option it sends
            ]
        )
        out["legacy: mongorestore coll0 from disk (no indexes): seconds"] = (
            f"{restored['seconds']:.1f}s"
        )
    return out


UPLOAD = (
    "import boto3,sys;from botocore.config import Config;"
    "boto3.client('s3',endpoint_url=sys.argv[1],config=Config(s3={'addressing_style':"
    "'path'},request_checksum_calculation='when_required')).upload_file(sys.argv[2],"
    "'bench','legacy.tar.gz')"
)

DOWNLOAD = (
    "import boto3,sys;from botocore.config import Config;"
    "b=boto3.client('s3',endpoint_url=sys.argv[1],config=Config(s3={'addressing_style':"
    "'path'},response_checksum_validation='when_required')).get_object(Bucket='bench',"
    "Key='m/'+sys.argv[2])['Body'];n=0\nwhile c:=b.read(1<<20): n+=len(c)\nprint(n)"
)


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
    ours = rows["mongosnap -> versitygw (gzip)"]["seconds"]
    stages = ("read only (find_raw_batches)", "legacy: tar -czf dump", "legacy: upload tarball")
    legacy = sum(rows[k]["seconds"] for k in stages)
    print(
        f"\nlegacy lower bound (read + tar -czf + upload, sequential, plus disk for "
        f"dump and tarball): {legacy:.1f}s; mongosnap to versitygw: {ours:.1f}s; "
        f"ratio legacy/mongosnap = {legacy / ours:.2f}"
    )
    real = [k for k in rows if k.startswith("legacy:") and "mongodump" in k]
    if real:
        took = sum(rows[k]["seconds"] for k in real)
        print(
            f"legacy pipeline with the real mongodump (dump + tar -czf + upload): {took:.1f}s; "
            f"ratio legacy/mongosnap = {took / ours:.2f}; mongodump alone "
            f"{rows['legacy: mongodump to disk']['seconds']:.1f}s"
        )


if __name__ == "__main__":
    main()
