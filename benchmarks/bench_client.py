"""The client's own ceiling: backup against the fake wire server, next to its floors.

    .venv/bin/python benchmarks/bench_client.py [--mb 200] [--rounds 3] [--case 1k 200b many]
        [--collections 2000] [--many-documents 50] [--s3-endpoint URL --bucket B [--s3-pid PID]]

For each case a fresh ``fakewire`` process serves a pre-generated corpus
(``1k``: 4 collections of 1 KB documents; ``200b``: 4 of 200 B documents;
``many``: ``--collections`` (2,000) collections of ``--many-documents`` (50)),
so the server costs next to nothing and the figures are the client's.
Contenders, alternated over the rounds so that drift hits them all alike,
each its own process:

- ``drain``            PyMongo AsyncMongoClient.find_raw_batches over every
                       collection, nothing else: the floor for any dump;
- ``cursor-drain``     the same through mongosnap's raw batch cursor
                       (``mongosnap._rawcursor``): the read a backup does;
- ``raw-drain``        ``raw_drain.py``: find/getMore over one plain socket,
                       no driver: the floor of a Python reader;
- ``mongodump-null``   ``mongodump --archive`` to /dev/null: the Go drain
                       (mongodump reads 4 collections at a time);
- ``mongosnap-gzip``   ``mongosnap backup`` to a directory (default gzip);
- ``mongosnap-zstd``   the same with ``--codec zstd``;
- ``mongosnap-s3``     gzip to ``s3://BUCKET/bench`` on ``--s3-endpoint URL``
                       (``--bucket``, which must exist; credentials from the
                       standard AWS variables): the S3 path against a directory;
- ``mongosnap-p1``     gzip with ``--parallel 1`` (one collection read at a time);
- ``mongosnap-b10k``   gzip with ``--batch-size 10000``: a tenth of the getMores;
- ``mongosnap-age``    gzip encrypted with ``--encrypt-to`` (one X25519 recipient):
                       the cost of encryption (docs/encryption.md);
- ``no-listindexes``   mongosnap-gzip with ``Source.indexes`` answering the
                       ``_id`` index without asking the server: not a valid
                       backup, it prices the one command a backup sends per
                       collection beyond the drain's ``find``;
- ``baseline-gzip``    ``mongosnap backup`` from another source tree, when
                       $MONGOSNAP_BASELINE names one (e.g. ``git archive`` of
                       an older commit): before/after in one alternated run;
- ``baseline-s3``      ``mongosnap-s3`` from the $MONGOSNAP_BASELINE tree;
- ``mongodump-gz``     the real ``mongodump --archive --gzip`` (mongo-tools in
                       ../shared/mongo-tools/bin or $MONGOSNAP_MONGO_TOOLS).

The drains ask for ``--drain-batch`` (1000, a backup's default
``--batch-size``) documents per batch and print the bytes they read, which
must be the server's (else no figure). Printed per contender: min and median
wall seconds, MB/s of BSON at the min, CPU seconds (user + system of the
process) at the min and per MB, peak RSS, and wall and CPU ratios to the
drain (and to mongodump-null when it ran). With ``--s3-pid PID`` (the S3
server's process, one nobody else uses) also the server's CPU seconds over
each run, min of the rounds. Figures depend on the machine: note them.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from fakewire import FakeServer  # noqa: E402
from pymongo import MongoClient  # noqa: E402

CASES = {  # name: (collections, document size); documents follow from --mb
    "1k": (4, 1024),
    "200b": (4, 200),
    "many": (2000, 0),
}

DRAIN = """
import asyncio, sys
from pymongo import AsyncMongoClient
from mongosnap._rawcursor import raw_batch_cursor
def find_raw_batches(collection, **find):
    return collection.find_raw_batches(**find)
read = {"pymongo": find_raw_batches, "mongosnap": raw_batch_cursor}[sys.argv[2]]
async def main(uri, size):
    client = AsyncMongoClient(uri)
    total = 0
    for name in await client.bench.list_collection_names():
        async for batch in read(client.bench[name], batch_size=size):
            total += len(batch)
    await client.close()
    print(total)
asyncio.run(main(sys.argv[1], int(sys.argv[3])))
"""

NO_LISTINDEXES = """
import sys
from mongosnap import source
from mongosnap.cli import main
async def indexes(self, database, collection):
    return [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]
source.Source.indexes = indexes
sys.exit(main())
"""


@dataclass
class Runs:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    server: list[float] = field(default_factory=list)  # the S3 server's CPU seconds


def server_cpu(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 without one)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


DRAINS = {"drain", "cursor-drain", "raw-drain"}  # print the bytes they read


def corpus_bytes(uri: str) -> int:
    """The BSON bytes the fake server holds (its ``sizeOnDisk``)."""
    client: MongoClient[dict[str, Any]]
    with MongoClient(uri) as client:
        return int(client.admin.command("listDatabases")["databases"][0]["sizeOnDisk"])


def tools_dir() -> Path:
    return Path(os.environ.get("MONGOSNAP_MONGO_TOOLS") or ROOT.parent / "shared/mongo-tools/bin")


def measure(argv: list[str], expect: int | None = None) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and peak RSS (KiB) of one process.

    It runs outside the source tree: ``python -m`` puts its working directory
    first on sys.path, where ROOT/mongosnap would shadow $MONGOSNAP_BASELINE.
    ``expect``: the bytes a drain must print having read them (one short
    line, so the pipe cannot fill before the process is reaped).
    """
    started = time.perf_counter()
    output = subprocess.DEVNULL if expect is None else subprocess.PIPE
    process = subprocess.Popen(
        argv, stdout=output, stderr=subprocess.PIPE, cwd=tempfile.gettempdir()
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        assert process.stderr is not None
        raise RuntimeError(f"{argv[:3]} failed: {process.stderr.read().decode()[-1000:]}")
    if expect is not None:
        assert process.stdout is not None
        read = process.stdout.read().decode().strip()
        if read != str(expect):
            raise RuntimeError(f"{argv[:3]} read {read} bytes, not {expect}: no figure")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def contenders(uri: str, out: Path, args: argparse.Namespace) -> dict[str, list[str]]:
    python = sys.executable
    backup = [python, "-m", "mongosnap", "backup", str(out), "--uri", uri, "bench", "-q"]
    s3 = [python, "-m", "mongosnap", "backup", f"s3://{args.bucket}/bench", "--uri", uri]
    batch = str(args.drain_batch)
    mongodump = [str(tools_dir() / "mongodump"), "--uri", uri, "--db", "bench"]
    s3 += ["bench", "-q", "--endpoint-url", str(args.s3_endpoint), "--addressing-style", "path"]
    baseline = ["env", f"PYTHONPATH={os.environ.get('MONGOSNAP_BASELINE', '')}"]
    return {
        "mongosnap-s3": s3,
        "no-listindexes": [python, "-c", NO_LISTINDEXES, *backup[3:]],
        "drain": [python, "-c", DRAIN, uri, "pymongo", batch],
        "cursor-drain": [python, "-c", DRAIN, uri, "mongosnap", batch],
        "raw-drain": [python, str(HERE / "raw_drain.py"), uri, "--batch-size", batch],
        "mongodump-null": [*mongodump, "--archive", "--quiet"],  # to stdout: /dev/null
        "mongosnap-gzip": backup,
        "mongosnap-zstd": [*backup, "--codec", "zstd"],
        "mongosnap-p1": [*backup, "--parallel", "1"],
        "mongosnap-b10k": [*backup, "--batch-size", "10000"],
        "mongosnap-age": [*backup, "--encrypt-to", _recipient()],
        "baseline-gzip": [*baseline, *backup],
        "baseline-s3": [*baseline, *s3],
        "mongodump-gz": [*mongodump, "--gzip", f"--archive={out / 'mongodump.archive'}", "--quiet"],
    }


def _recipient() -> str:
    """A fresh age recipient; its identity is not kept (nothing is read back)."""
    sys.path.insert(0, str(ROOT))
    from mongosnap.crypto.keys import X25519Identity

    return str(X25519Identity.generate().recipient)


def byte_compile() -> None:
    """Compile the mongosnap trees measured, as an installed package is: with
    PYTHONDONTWRITEBYTECODE set, each run would otherwise compile its sources
    again (about 0.1 CPU-second, charged to mongosnap and not to the drain)."""
    trees = [ROOT / "mongosnap"]
    if os.environ.get("MONGOSNAP_BASELINE"):
        trees.append(Path(os.environ["MONGOSNAP_BASELINE"]) / "mongosnap")
    for tree in trees:
        compileall.compile_dir(tree, quiet=1)


def run_case(name: str, args: argparse.Namespace) -> None:
    mb, rounds, only = args.mb, args.rounds, args.only
    collections, size = CASES[name]
    if size == 0:
        collections = args.collections
    documents = args.many_documents if size == 0 else int(mb * 1e6 / size / collections)
    size = size or 1024
    print(f"\n## {name}: {collections} collections x {documents} documents of ~{size} B")
    with (
        FakeServer.spawn(collections, documents, size) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        out = Path(tmp)
        commands = {
            k: v for k, v in contenders(server.uri, out, args).items() if k == "drain" or k in only
        }
        corpus = corpus_bytes(server.uri)
        measure(commands["drain"], corpus)  # the server encodes each reply once: warm it
        runs = {label: Runs() for label in commands}
        for _ in range(rounds):
            for label, argv in commands.items():
                before = server_cpu(args.s3_pid)
                wall, cpu, rss = measure(argv, corpus if label in DRAINS else None)
                runs[label].server.append(server_cpu(args.s3_pid) - before)
                runs[label].wall.append(wall)
                runs[label].cpu.append(cpu)
                runs[label].rss.append(rss)
                for leftover in out.iterdir():
                    leftover.unlink()
        total = collections * documents * size
        report(runs, total, args.s3_pid is not None)


def report(runs: dict[str, Runs], total: int, server: bool = False) -> None:
    floors = [("drain", runs["drain"])]
    if "mongodump-null" in runs:
        floors.append(("Go", runs["mongodump-null"]))
    heads = "".join(f" {f'wall/{n}':>11} {f'CPU/{n}':>10}" for n, _ in floors)
    print(
        f"{'contender':<16} {'min s':>7} {'median s':>9} {'MB/s':>7} {'CPU s':>7}"
        f" {'CPU ms/MB':>9} {'RSS MiB':>8}{heads}" + (f" {'S3 CPU s':>9}" if server else "")
    )
    for label, r in runs.items():
        best = min(r.wall)
        cpu = min(r.cpu)
        median = statistics.median(r.wall)
        ratios = "".join(f" {best / min(f.wall):11.2f} {cpu / min(f.cpu):10.2f}" for _, f in floors)
        print(
            f"{label:<16} {best:7.2f} {median:9.2f} {total / best / 1e6:7.0f} {cpu:7.2f}"
            f" {cpu / total * 1e9:9.2f} {max(r.rss) / 1024:8.0f}{ratios}"
            + (f" {min(r.server):9.2f}" if server else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=200, help="BSON per case (1k, 200b)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--case", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--collections", type=int, default=2000, help="collections (many)")
    parser.add_argument("--many-documents", type=int, default=50, help="documents each (many)")
    parser.add_argument(
        "--only",
        nargs="+",
        default=[
            "mongosnap-gzip",
            "mongosnap-age",
            "mongosnap-zstd",
            "mongosnap-p1",
            "mongodump-gz",
        ],
        help="contenders besides the drain (PYTHONPATH=DIR runs another mongosnap tree)",
    )
    parser.add_argument(
        "--drain-batch", type=int, default=1000, help="documents per batch of the drains"
    )
    parser.add_argument("--s3-endpoint", help="S3 server for mongosnap-s3")
    parser.add_argument("--bucket", default="bench", help="existing bucket for mongosnap-s3")
    parser.add_argument("--s3-pid", type=int, help="the S3 server's pid: report its CPU")
    args = parser.parse_args()
    if {"mongosnap-s3", "baseline-s3"} & set(args.only) and not args.s3_endpoint:
        parser.error("mongosnap-s3 and baseline-s3 need --s3-endpoint")
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    byte_compile()
    for name in args.case:
        run_case(name, args)


if __name__ == "__main__":
    main()
