"""Oplog archiving under a steady write load: lag, CPU and memory of `mongosnap oplog`.

    .venv/bin/python benchmarks/bench_oplog.py --seconds 60 --rate 200 --interval 1

Starts its own oplog FerretDB (scripts/testbed.py: ``--repl-set-name`` and a
capped ``local.oplog.rs`` of ``--oplog-mb``), runs ``python -m mongosnap
oplog DEST --uri URI --interval I -v`` as its own process into a local
directory (``--settle S`` passed on when given), and writes ``--rate``
inserts per second (about 300-byte documents, one client) for ``--seconds``.
Then:

- lag, per entry: the time its chunk's sidecar was committed (the file's
  mtime: the chunk is complete from then on) minus the time the insert was
  acknowledged to the writer (same machine, same clock);
- CPU seconds (user + system) and peak RSS (VmHWM) of the archiver process,
  and the FerretDB process's CPU seconds, over the run (/proc, read before
  SIGTERM);
- what the archiver logged about entries that became visible late and gaps;
- that every entry written is archived once (a check, not a figure): after
  the load stops, the benchmark waits until a chunk holds the newest entry.

With ``MONGOSNAP_BASELINE=DIR`` (a source tree, e.g. ``git archive`` of an
older commit) the archiver is that tree's mongosnap. Figures go to stdout.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import testbed  # noqa: E402  (scripts/testbed.py builds and starts the servers)
from bson import decode  # noqa: E402
from pymongo import MongoClient  # noqa: E402

from mongosnap.oplog import chunks  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
NAMESPACE = "bench_oplog.events"


def _write(uri: str, rate: float, seconds: float, acked: list[float]) -> None:
    """Inserts at a steady pace; acked[n] is when insert n was acknowledged."""
    with MongoClient(uri) as client:
        coll = client.bench_oplog.events
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            target = int(elapsed * rate)
            while len(acked) < target:
                coll.insert_one({"n": len(acked), "pad": "x" * 256})
                acked.append(time.time())
            time.sleep(0.005)


def _proc(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) and peak RSS MiB of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    peak = float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return cpu, peak


def _newest(uri: str) -> tuple[int, int]:
    with MongoClient(uri) as client:
        last = client.local["oplog.rs"].find_one(sort=[("$natural", -1)])
    assert last is not None
    return (last["ts"].time, last["ts"].inc)


def _sidecars(dest: Path) -> list[Path]:
    return sorted((dest / "oplog").glob("*.bson.gz.json")) if (dest / "oplog").exists() else []


def _covered(dest: Path) -> tuple[int, int]:
    """The largest last_ts of the complete chunks so far."""
    best = (0, 0)
    for side in _sidecars(dest):
        info = chunks.ChunkInfo.from_json(side.read_bytes(), str(side.relative_to(dest)))
        best = max(best, (info.last_ts.t, info.last_ts.i))
    return best


def _lags(dest: Path, acked: list[float]) -> tuple[list[float], int]:
    """Lag of every archived insert of the benchmark, and how many were archived
    more than once."""
    lags: dict[int, float] = {}
    twice = 0
    for side in _sidecars(dest):
        info = chunks.ChunkInfo.from_json(side.read_bytes(), str(side.relative_to(dest)))
        committed = side.stat().st_mtime
        raw = chunks.decode_chunk((dest / info.object_key).read_bytes(), info)
        for entry in chunks.split_entries(raw):
            doc = decode(entry)
            if doc["ns"] == NAMESPACE:
                n = doc["o"]["n"]
                twice += n in lags
                lags[n] = committed - acked[n]
    return sorted(lags.values()), twice


def _archiver(dest: Path, uri: str, args: argparse.Namespace, log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "mongosnap", "oplog", str(dest), "--uri", uri]
    argv += ["--interval", str(args.interval), "--start", "oldest", "-v"]  # a fresh oplog
    if args.settle is not None:
        argv += ["--settle", str(args.settle)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if baseline := os.environ.get("MONGOSNAP_BASELINE"):
        env["PYTHONPATH"] = baseline
    with log.open("wb") as err:
        return subprocess.Popen(argv, env=env, stderr=err)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the write load")
    parser.add_argument("--rate", type=float, default=200.0, help="inserts per second")
    parser.add_argument("--interval", type=float, default=1.0, help="archiver chunk interval")
    parser.add_argument("--settle", type=float, help="archiver --settle (default: its own)")
    parser.add_argument("--oplog-mb", type=int, default=testbed.OPLOG_SIZE >> 20)
    args = parser.parse_args()
    testbed.build()
    bed = testbed.Testbed()
    bed.root = Path(tempfile.mkdtemp(prefix=testbed.TEMP_PREFIX))
    try:
        uri = bed.start_oplog_ferretdb("ferretdb-oplog", args.oplog_mb << 20)
        server = bed.processes["ferretdb-oplog"].pid
        with tempfile.TemporaryDirectory() as tmp:
            dest, log = Path(tmp) / "dest", Path(tmp) / "archiver.log"
            proc = _archiver(dest, uri, args, log)
            time.sleep(2.0)  # let it open its cursor
            server_before = _proc(server)[0]
            acked: list[float] = []
            writer = threading.Thread(target=_write, args=(uri, args.rate, args.seconds, acked))
            writer.start()
            writer.join()
            newest = _newest(uri)
            stopped = time.monotonic()
            while _covered(dest) < newest:  # until the last entry's chunk is committed
                time.sleep(0.1)
            catch_up = time.monotonic() - stopped
            cpu, peak = _proc(proc.pid)
            server_cpu = _proc(server)[0] - server_before
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
            lags, twice = _lags(dest, acked)
            text = log.read_text(errors="replace")
    finally:
        bed.stop()
    late = text.count("became visible late")
    gaps = text.count("oplog gap after")
    seconds = args.seconds
    print(f"command: {' '.join(sys.argv)}")
    print(f"load: {len(acked)} inserts in {seconds:.0f}s ({len(acked) / seconds:.0f}/s)")
    print(f"archived: {len(lags)} of them, {twice} twice (exit {code} on SIGTERM)")
    if lags:
        p95 = lags[int(0.95 * (len(lags) - 1))]
        print(
            f"lag (insert acknowledged -> chunk committed), interval {args.interval}s, "
            f"settle {args.settle if args.settle is not None else 'default'}: "
            f"median {statistics.median(lags):.2f}s, p95 {p95:.2f}s, max {lags[-1]:.2f}s"
        )
    print(f"archiver: {cpu:.1f} CPU s, peak RSS {peak:.1f} MiB; FerretDB: {server_cpu:.1f} CPU s")
    print(f"late-visibility re-reads that found entries: {late}; gaps recorded: {gaps}")
    print(f"caught up {catch_up:.1f}s after the load stopped")
    return 0 if len(lags) == len(acked) and not twice else 1


if __name__ == "__main__":
    sys.exit(main())
