"""What ``backup --oplog`` costs over a plain backup, on an oplog FerretDB.

    .venv/bin/python benchmarks/bench_backup_oplog.py --mb 3 --rounds 3
    .venv/bin/python benchmarks/bench_backup_oplog.py --mb 3 --fill-mb 12 --probe

Starts its own oplog FerretDB (scripts/testbed.py: ``--repl-set-name`` and a
capped ``local.oplog.rs`` of ``--oplog-mb``), seeds a database of ``--mb`` MB
(benchmarks/workload.py, case ``1k``; its inserts are oplog entries too) and,
with ``--fill-mb``, writes that much more into another database so the oplog
holds more than the dump's own entries (a busy server's oplog is full). Then
alternates ``mongosnap backup DIR --uri URI bench`` with and without
``--oplog`` for ``--rounds`` rounds, each its own process (harness.py): wall
and client CPU seconds, and the FerretDB process's CPU seconds over the run
(``/proc/PID/stat``), min of the rounds.

With ``MONGOSNAP_BASELINE=DIR`` (a source tree, e.g. ``git archive`` of an
older commit) a third contender, ``baseline --oplog``, runs that tree's
mongosnap in the same alternated rounds: before and after in one run.

``--probe`` also sends each oplog query a backup may use on its own, three
times, and prints its server CPU, documents returned and wall: what FerretDB
does with the ``ts`` bound, ``$natural`` order and ``oplogReplay``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import harness  # noqa: E402
import testbed  # noqa: E402
import workload  # noqa: E402
from bson import Timestamp  # noqa: E402
from pymongo import MongoClient  # noqa: E402

DATABASE = "bench"
TICKS = os.sysconf("SC_CLK_TCK")


def server_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def start_server(oplog_mb: int) -> tuple[testbed.Testbed, str, int]:
    """An oplog FerretDB of our own (no moto, no versitygw): the bed, its URI, its pid."""
    bed = testbed.Testbed()
    bed.root = Path(tempfile.mkdtemp(prefix=testbed.TEMP_PREFIX))
    uri = bed.start_oplog_ferretdb("ferretdb-oplog", oplog_mb << 20)
    return bed, uri, bed.processes["ferretdb-oplog"].pid


def _plan(mb: float) -> list[workload.Collection]:
    return workload.layout("1k", total_bytes=int(mb * 1e6), big_bytes=0, collections=0)


def seed(uri: str, mb: float, fill_mb: float) -> tuple[int, int]:
    """The dumped database, and the other writes; returns the oplog's count and size."""
    with MongoClient(uri) as client:
        workload.seed(client, DATABASE, _plan(mb))
        if fill_mb:
            workload.seed(client, "other", _plan(fill_mb))
        stats = client.local.command("collStats", "oplog.rs")
    return int(stats["count"]), int(stats["size"])


def backup(uri: str, pid: int, oplog: bool, tree: Path) -> dict[str, float]:
    """One backup by the mongosnap of source tree ``tree``, into a temporary directory."""
    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, "-m", "mongosnap", "backup", out, "--uri", uri, DATABASE, "-q"]
        env = {**os.environ, "PYTHONPATH": str(tree)}
        before = server_cpu(pid)
        sample = harness.measure([*argv, "--oplog"] if oplog else argv, env=env, cwd=Path(out))
        return {"wall": sample.wall, "cpu": sample.cpu, "server": server_cpu(pid) - before}


def probes(newest: Timestamp) -> dict[str, dict[str, Any]]:
    """The oplog queries a backup may send, as ``find`` command bodies."""
    window = {"ts": {"$gte": newest}}
    return {
        "newest: sort $natural -1, limit 1": {
            "sort": {"$natural": -1},
            "limit": 1,
            "projection": {"ts": 1},
            "singleBatch": True,
        },
        "oldest: no sort, limit 1": {"limit": 1, "projection": {"ts": 1}, "singleBatch": True},
        "window: ts $gte newest": {"filter": window},
        "window: ts $gte newest, $lte newest": {"filter": {"ts": {"$gte": newest, "$lte": newest}}},
        "window: ts $gte newest, oplogReplay": {"filter": window, "oplogReplay": True},
        "window: ts $gte newest, hint $natural": {"filter": window, "hint": {"$natural": 1}},
        "window: ts $gte newest, sort ts": {"filter": window, "sort": {"ts": 1}},
        "whole oplog, no filter": {},
    }


def probe(uri: str, pid: int) -> None:
    with MongoClient(uri) as client:
        local = client.local
        newest = local["oplog.rs"].find_one(sort=[("$natural", -1)])["ts"]  # type: ignore[index]
        print("| query (server CPU: min of 3) | documents | server CPU s | wall s |")
        print("| --- | ---: | ---: | ---: |")
        for name, body in probes(newest).items():
            best: tuple[float, float] | None = None
            count = 0
            for _ in range(3):
                before, started = server_cpu(pid), time.perf_counter()
                cursor = local.command({"find": "oplog.rs", "batchSize": 100_000, **body})
                count = len(cursor["cursor"]["firstBatch"])
                cursor_id = cursor["cursor"]["id"]
                while cursor_id:
                    more = local.command({"getMore": cursor_id, "collection": "oplog.rs"})
                    count += len(more["cursor"]["nextBatch"])
                    cursor_id = more["cursor"]["id"]
                figures = (server_cpu(pid) - before, time.perf_counter() - started)
                best = figures if best is None or figures < best else best
            assert best is not None
            print(f"| {name} | {count} | {best[0]:.2f} | {best[1]:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=3.0, help="size of the dumped database")
    parser.add_argument("--fill-mb", type=float, default=0.0, help="other writes into the oplog")
    parser.add_argument("--oplog-mb", type=int, default=testbed.OPLOG_SIZE >> 20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--probe", action="store_true", help="time each oplog query alone")
    args = parser.parse_args()
    testbed.build()
    bed, uri, pid = start_server(args.oplog_mb)
    try:
        entries, size = seed(uri, args.mb, args.fill_mb)
        print(f"command: {' '.join(sys.argv)}")
        print(f"oplog: {entries} entries, {size / 1e6:.1f} MB (capped at {args.oplog_mb} MiB)")
        if args.probe:
            probe(uri, pid)
        trees = {"plain": ROOT, "--oplog": ROOT}
        if baseline := os.environ.get("MONGOSNAP_BASELINE"):
            trees["baseline --oplog"] = Path(baseline)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for index in range(args.rounds):
            for name in harness.rotated(list(runs), index):
                runs[name].append(backup(uri, pid, name != "plain", trees[name]))
    finally:
        bed.stop()
    best = {name: {k: min(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    print("| backup (min of rounds) | wall s | client CPU s | FerretDB CPU s |")
    print("| --- | ---: | ---: | ---: |")
    for name, fig in best.items():
        print(f"| {name} | {fig['wall']:.2f} | {fig['cpu']:.2f} | {fig['server']:.2f} |")
    plain = best["plain"]
    for name in list(best)[1:]:
        print(
            f"{name} / plain: wall {best[name]['wall'] / plain['wall']:.2f}x, "
            f"FerretDB CPU {best[name]['server'] / plain['server']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
