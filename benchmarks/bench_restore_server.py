"""Restore into a FerretDB of one's own: client CPU, wall, and the server's CPU per contender.

    .venv/bin/python benchmarks/bench_restore_server.py --uri mongodb://127.0.0.1:PORT/ \\
        --pid FERRETDB_PID --case 1k --mb 50 [--collections 300] [--rounds 3]

bench.py measures client processes only; this script also reads the server's
CPU seconds (``/proc/PID/stat`` of the FerretDB given, which nothing else
should be using) around each run, to tell what the server spends from what
the client spends. It seeds ``--case`` (benchmarks/workload.py) into database
``rsrc``, makes a mongosnap backup to a directory and a ``mongodump --archive
--gzip``, then alternates, round by round in rotated order: ``mongosnap
restore`` of this tree, of ``$MONGOSNAP_BASELINE`` (a source tree) when set,
and ``mongorestore`` (tools found as bench.py finds them), each into a fresh
``rdst`` whose document count is checked. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]
from pymongo import MongoClient  # noqa: E402
from workload import layout, seed  # noqa: E402

SOURCE, TARGET = "rsrc", "rdst"


def server_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tools_dir(given: Path | None) -> Path:
    found = given or os.environ.get("MONGOSNAP_MONGO_TOOLS")
    path = Path(found) if found else HERE.parent.parent / "shared" / "mongo-tools" / "bin"
    if not (path / "mongorestore").exists():
        sys.exit(f"mongorestore not found in {path} (--mongo-tools DIR)")
    return path


def contenders(args: argparse.Namespace, work: Path, tools: Path) -> dict[str, Any]:
    host = args.uri.split("://", 1)[1].strip("/")

    def mongosnap(tree: Path) -> tuple[dict[str, str], list[str]]:
        argv = [sys.executable, "-m", "mongosnap", "restore", "latest", str(work / "archive")]
        argv += [host, SOURCE, "--to-database", TARGET, "-q"]
        return {**os.environ, "PYTHONPATH": str(tree)}, argv

    found = {"mongosnap": mongosnap(HERE.parent)}
    if os.environ.get("MONGOSNAP_BASELINE"):
        found["baseline"] = mongosnap(Path(os.environ["MONGOSNAP_BASELINE"]))
    restore = [str(tools / "mongorestore"), "--uri", args.uri, "--quiet", "--gzip"]
    restore += [f"--archive={work / 'dump.gz'}", f"--nsFrom={SOURCE}.*", f"--nsTo={TARGET}.*"]
    found["mongorestore"] = (dict(os.environ), restore)
    return found


def prepare(args: argparse.Namespace, client: MongoClient[Any], work: Path, tools: Path) -> int:
    client.drop_database(SOURCE)
    plan = layout(
        args.case, total_bytes=int(args.mb * 2**20), big_bytes=0, collections=args.collections
    )
    seed(client, SOURCE, plan)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    host = args.uri.split("://", 1)[1].strip("/")
    backup = [sys.executable, "-m", "mongosnap", "backup", str(work / "archive"), host, SOURCE]
    subprocess.run([*backup, "-q"], env=env, cwd=work, check=True)
    dump = [str(tools / "mongodump"), "--uri", args.uri, "--db", SOURCE, "--quiet", "--gzip"]
    subprocess.run([*dump, f"--archive={work / 'dump.gz'}"], check=True)
    return sum(c.documents for c in plan)


def run_once(
    argv: list[str], env: dict[str, str], pid: int, work: Path
) -> tuple[float, float, float]:
    """(wall, client CPU, server CPU) seconds of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server, started = server_cpu(pid), time.monotonic()
    subprocess.run(argv, env=env, cwd=work, check=True)
    wall, server = time.monotonic() - started, server_cpu(pid) - server
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, client, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uri", required=True)
    parser.add_argument("--pid", type=int, required=True, help="the server's process id")
    parser.add_argument("--case", default="1k", choices=("1k", "200b", "many"))
    parser.add_argument("--mb", type=float, default=50.0)
    parser.add_argument("--collections", type=int, default=300, help="for --case many")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mongo-tools", type=Path)
    args = parser.parse_args()
    tools = tools_dir(args.mongo_tools)
    client: MongoClient[Any] = MongoClient(args.uri)
    with tempfile.TemporaryDirectory(prefix="bench-restore-") as tmp:
        work = Path(tmp)
        documents = prepare(args, client, work, tools)
        runs = contenders(args, work, tools)
        figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in runs}
        names = list(runs)
        for index in range(args.rounds):
            for name in names[index % len(names) :] + names[: index % len(names)]:
                client.drop_database(TARGET)
                env, argv = runs[name]
                figures[name].append(run_once(argv, env, args.pid, work))
                db = client[TARGET]
                restored = sum(db[n].count_documents({}) for n in db.list_collection_names())
                if restored != documents:
                    sys.exit(f"{name} restored {restored} documents of {documents}")
                wall, cpu, server = figures[name][-1]
                print(
                    f"round {index + 1} {name}: wall {wall:.2f}s, CPU {cpu:.2f}s,"
                    f" server CPU {server:.2f}s",
                    file=sys.stderr,
                    flush=True,
                )
    client.drop_database(TARGET)
    client.drop_database(SOURCE)
    print(f"\n{args.case}, {args.mb} MiB, {documents:,} documents, min / median of {args.rounds}\n")
    print("| contender | wall s | client CPU s | server CPU s |\n| --- | ---: | ---: | ---: |")
    for name, values in figures.items():
        cells = [
            f"{min(column):.2f} / {statistics.median(column):.2f}"
            for column in zip(*values, strict=True)
        ]
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
