"""Peak memory (VmHWM) and time of parsing the largest sidecar and metadata inputs.

    .venv/bin/python tests/archive/bench_parse_memory.py

Each case runs in its own interpreter, which reads its input through the
product's path (a sidecar through ``catalog.load_manifest`` from a local
directory; a metadata file through ``parse_metadata``) and reports its peak
resident set (VmHWM) and the CPU seconds the parse took (the machine is
shared, so wall time says little). ``baseline`` is the same interpreter
parsing nothing, for comparison.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from mongosnap.archive.manifest import MAX_COLLECTIONS, MAX_MANIFEST_BYTES
from mongosnap.archive.metadata import MAX_METADATA_BYTES, MAX_METADATA_VALUES

ARCHIVE = "2026-03-01-02-03-04-mongodb-dump.tar.gz"

CHILD = """
import asyncio, sys, time
from pathlib import Path
from mongosnap import MongosnapError
from mongosnap.archive.metadata import parse_metadata
from mongosnap.catalog import load_manifest
from mongosnap.storage import LocalStorage

kind, path = sys.argv[1], Path(sys.argv[2])
clock = time.process_time()
outcome = "parsed"
try:
    if kind == "sidecar":
        asyncio.run(load_manifest(LocalStorage(path.parent), path.name[: -len(".manifest.json")]))
    elif kind == "metadata":
        parse_metadata(path.read_bytes())
except MongosnapError as exc:
    outcome = f"{type(exc).__name__}: {str(exc)[:60]}"
seconds = time.process_time() - clock
peak = next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]
print(f"{int(peak) / 1024:.0f}\\t{seconds:.2f}\\t{outcome}")
"""


def manifest(entries: int, name_length: int) -> bytes:
    """A consistent manifest of ``entries`` views with long names (zero-width ranges)."""
    empty = hashlib.sha256(b"").hexdigest()
    collections = []
    for i in range(entries):
        name = f"{i:06}" + "v" * (name_length - 6)
        collections.append(
            {
                "database": "app",
                "name": name,
                "type": "view",
                "documents": 0,
                "bson_bytes": 0,
                "sha256": empty,
                "metadata": {"name": f"dump/app/{name}.metadata.json", "offset": 0, "end": 0},
                "bson": None,
            }
        )
        collections[-1]["metadata"]["size"] = 0
    doc = {
        "format": "mongosnap-archive",
        "format_version": 1,
        "tool_version": "0.1.0",
        "archive": ARCHIVE,
        "codec": "gzip",
        "created": "2026-03-01T02:03:04Z",
        "started": "2026-03-01T02:03:04Z",
        "finished": "2026-03-01T02:03:05Z",
        "source": {"hosts": ["db:27017"], "server_version": None},
        "databases": ["app"],
        "collections": collections,
        "manifest": {"name": "mongosnap/manifest.json", "offset": 0, "end": 0, "size": 0},
        "totals": {"tar_bytes": 0, "compressed_bytes": 0},
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def largest_manifest() -> bytes:
    """MAX_COLLECTIONS entries with names as long as still fit under MAX_MANIFEST_BYTES."""
    low, high = 10, 230
    while low < high:
        middle = (low + high + 1) // 2
        if len(manifest(200, middle)) * MAX_COLLECTIONS // 200 <= MAX_MANIFEST_BYTES:
            low = middle
        else:
            high = middle - 1
    data = manifest(MAX_COLLECTIONS, low)
    assert len(data) <= MAX_MANIFEST_BYTES, len(data)
    return data


def hostile_manifest() -> bytes:
    """The issue's hostile sidecar: about 60 MB, 110,000 entries."""
    return manifest(110_000, 95)


def metadata_values() -> bytes:
    """As many small ObjectId values as the value limit lets through."""
    oid = '{"$oid":"0123456789abcdef01234567"}'
    count = (MAX_METADATA_VALUES - 10) // 3
    return ('{"options":{"a":[' + ",".join([oid] * count) + ']},"indexes":[]}').encode()


def metadata_bytes() -> bytes:
    """One string as large as the byte limit lets through."""
    head, tail = '{"options":{"a":"', '"},"indexes":[]}'
    return (head + "x" * (MAX_METADATA_BYTES - len(head) - len(tail)) + tail).encode()


def metadata_hostile() -> bytes:
    """16 MiB of empty objects: 5.6 million values."""
    count = (MAX_METADATA_BYTES - 40) // 3
    return ('{"options":{"a":[' + ",".join(["{}"] * count) + ']},"indexes":[]}').encode()


def manifest_hostile_objects() -> bytes:
    """16 MiB of empty objects under the manifest's own keys."""
    return b"[" + b",".join([b"{}"] * ((MAX_MANIFEST_BYTES - 2) // 3)) + b"]"


def run(kind: str, path: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(path)], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        cases = {
            "sidecar: largest under the caps": ("sidecar", largest_manifest()),
            "sidecar: hostile 60 MB, 110,000 entries": ("sidecar", hostile_manifest()),
            "metadata: most values under the cap": ("metadata", metadata_values()),
            "metadata: largest string under the cap": ("metadata", metadata_bytes()),
            "metadata: 16 MiB of empty objects": ("metadata", metadata_hostile()),
            "sidecar: 16 MiB of empty objects": ("sidecar", manifest_hostile_objects()),
            "sidecar: 16 MiB of brackets": ("sidecar", b"[" * (MAX_MANIFEST_BYTES - 1)),
        }
        print("| input | bytes | peak RSS MiB | CPU s | outcome |")
        print("|---|---:|---:|---:|---|")
        baseline = run("none", root / "none").replace(chr(9), " | ")
        print(f"| baseline (parse nothing) | 0 | {baseline} |")
        for label, (kind, data) in cases.items():
            path = root / (ARCHIVE + ".manifest.json" if kind == "sidecar" else "x.metadata.json")
            path.write_bytes(data)
            print(f"| {label} | {len(data):,} | {run(kind, path).replace(chr(9), ' | ')} |")
            path.unlink()


if __name__ == "__main__":
    main()
