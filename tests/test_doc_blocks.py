"""Every shell block of README.md, docs/operations.md and docs/pitr.md runs, as
written, against the test bed.

A fenced block tagged ``sh``/``bash``/``shell`` is run by bash (``set -e``)
after the rewrites below, in document order, one environment per document:
a fresh moto bucket (reached through the standard AWS variables), a seeded
database on an oplog FerretDB of this module's own (so that ``backup --oplog``
and ``mongosnap oplog`` work and other tests' writes do not slow them), a
temporary working directory, and ``mongosnap`` on PATH running this checkout.
A writer inserts a document every 0.1 s meanwhile, so the oplog moves as on a
live database.

A block may be skipped only by an HTML comment on the line before it,
``<!-- test: skip REASON -->``, with its reason (installing packages or
systemd units, starting servers, benchmarks).

The rewrites map the documents' example names onto the test bed; every one
must still match some block (``test_every_rewrite_is_used``), so the table
cannot rot. Commands that run until stopped (``heal --interval``,
``mongosnap oplog DEST HOST``) get a SIGTERM a few seconds after they are
ready and must exit 0 or 143. docs/pitr.md's example instants are replaced
by instants the archived oplog covers, read from it when the block runs.
Each restore into a ``--to-database`` copy is then compared, byte for byte,
with the live database.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from testbed import bin_dir

from mongosnap import Ts, list_oplog

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "docs/operations.md", "docs/pitr.md"]
SHELLS = {"sh", "bash", "shell"}
SKIP = re.compile(r"^<!-- test: skip (?P<reason>\S.*?) -->$")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")
COLLECTIONS = ("repositories", "users", "apps")
READY = "'oplog reader ready'"  # what mongosnap oplog logs once it tails the oplog

# Defined before each block. until_stopped SECONDS [PATTERN] COMMAND...: runs
# COMMAND, waits until its stderr holds PATTERN (when given), then SECONDS, then
# sends SIGTERM; a clean stop is exit 0 or 143.
PRELUDE = r"""set -eo pipefail
until_stopped() {
    local wait=$1 pattern=$2 log status=0 i
    shift 2
    log=$(mktemp)
    "$@" 2>"$log" &
    local pid=$!
    for i in $(seq 600); do
        if [ -z "$pattern" ] || grep -q -- "$pattern" "$log" || ! kill -0 $pid 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    sleep "$wait"
    kill -TERM $pid 2>/dev/null || true
    wait $pid || status=$?
    cat "$log" >&2
    [ "$status" -eq 0 ] || [ "$status" -eq 143 ]
}
"""


@dataclass
class Block:
    doc: str
    line: int  # of the opening fence, 1-based
    text: str
    skip: str | None  # the marker's reason

    @property
    def name(self) -> str:
        return f"{self.doc}:{self.line}"


@dataclass
class Bed:
    """What the rewrites point at, for one document."""

    host: str
    uri: str
    bucket: str
    database: str
    work: Path
    env: dict[str, str]
    used: set[str] = field(default_factory=set)
    locked_bucket: str = ""
    """A bucket created with Object Lock enabled, for "Locked archives"."""


def blocks(doc: str) -> list[Block]:
    """The fenced shell blocks of ``doc``, each with its skip marker's reason, if any."""
    lines = (ROOT / doc).read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marker = SKIP.match(lines[i - 1]) if i else None
        if lines[i - 1].startswith("<!-- test") and marker is None:
            raise AssertionError(f"{doc}:{i}: a test marker is `<!-- test: skip REASON -->`")
        if match["lang"] in SHELLS:
            text = "\n".join(lines[i + 1 : end]) + "\n"
            found.append(Block(doc, i + 1, text, marker["reason"] if marker else None))
        elif marker is not None:
            raise AssertionError(f"{doc}:{i}: a skip marker before a block that is not shell")
        i = end + 1
    return found


def _target_ts(bed: Bed) -> str:
    return str(_covered(bed))


def _target_time(bed: Bed) -> str:
    # --to-time is the end of its second: the second before the last archived entry's
    last = _covered(bed)
    return datetime.fromtimestamp(last.t - 1, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _covered(bed: Bed) -> Ts:
    """The last entry of the archived oplog's newest span (docs/pitr.md's DEST)."""
    import asyncio

    coverage = asyncio.run(list_oplog(f"s3://{bed.bucket}/pitr"))
    assert coverage.spans, f"nothing archived under s3://{bed.bucket}/pitr/oplog/"
    return coverage.spans[-1].last


# (pattern, replacement of each match), applied in this order to each line;
# a replacement is computed only when its pattern matches.
REWRITES: list[tuple[str, Callable[[Bed, re.Match[str]], str]]] = [
    # README.md's Use and operations.md
    (r"s3://backups-locked\b", lambda b, m: f"s3://{b.locked_bucket}"),
    (r"s3://(my-bucket|backups)\b", lambda b, m: f"s3://{b.bucket}"),
    (r"'mongodb://[^']*@db1,db2/[^']*'", lambda b, m: f"'{b.uri}'"),
    (r"\bdb\.internal(:27017)?\b", lambda b, m: b.host),
    (r"(?<=/mongo )localhost\b", lambda b, m: b.host),
    (r"/var/backups/mongo\b", lambda b, m: str(b.work / "backups")),
    (r"/etc/mongosnap\b", lambda b, m: str(b.work / "etc")),
    (r"(?<=-o )mongosnap\b|(?<=chown )mongosnap\b", lambda b, m: _user()),
    (r"\btsuru(?=\b|_)", lambda b, m: b.database),
    # docs/pitr.md's placeholders
    (r"\bDEST\b", lambda b, m: f"s3://{b.bucket}/pitr"),
    (r"\bHOST\b", lambda b, m: b.host),
    (r"\bDATABASE(?=\b|_)", lambda b, m: b.database),
    (r"\b2026-12-01T10:00:00Z", lambda b, m: _target_time(b)),
    (r"\b1796137200:14\b", lambda b, m: _target_ts(b)),
    # what runs until stopped
    (r"^mongosnap heal .* --interval \d+", lambda b, m: f"until_stopped 1 '' {m[0]}"),
    # 3 s: the archived oplog must reach at least a second past the archive's
    # consistent point, or no --to-time lies between them (a backup --oplog on
    # FerretDB ends its window at the newest entry when it reads the oplog).
    (r"^mongosnap oplog (?!.*--list)\S+ \S+", lambda b, m: f"until_stopped 3 {READY} {m[0]}"),
]


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def rewrite(text: str, bed: Bed) -> str:
    out = []
    for line in text.splitlines():
        for pattern, replacement in REWRITES:
            if re.search(pattern, line) is not None:
                bed.used.add(pattern)
                line = re.sub(pattern, lambda m, r=replacement: r(bed, m), line)  # type: ignore[misc]
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def oplog_host(testbed: Any) -> Iterator[str]:
    name = f"ferretdb-oplog-{uuid.uuid4().hex[:8]}"
    uri = str(testbed.start_oplog_ferretdb(name, 4 << 20))
    try:
        yield uri.removeprefix("mongodb://").rstrip("/")
    finally:
        testbed.stop_server(name)


@pytest.fixture
def bed(
    oplog_host: str, testbed: Any, new_bucket: Any, new_locked_bucket: Any, tmp_path: Path
) -> Iterator[Bed]:
    endpoint = testbed.s3["moto"]
    bucket = new_bucket(endpoint)
    locked_bucket = new_locked_bucket(endpoint)
    database = f"docs_{uuid.uuid4().hex[:8]}"
    uri = f"mongodb://{oplog_host}/"
    with MongoClient(uri) as client:
        for name in COLLECTIONS:
            client[database][name].insert_many(
                [{"_id": n, "name": f"{name}{n}"} for n in range(20)]
            )
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "mongosnap").write_text(f'#!/bin/sh\nexec {sys.executable} -m mongosnap "$@"\n')
    (shim / "mongosnap").chmod(0o755)
    for tool in ("age", "age-keygen"):  # the encryption examples (the test bed builds them)
        (shim / tool).symlink_to(bin_dir() / tool)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MONGOSNAP_"))}
    env |= {
        "PATH": f"{shim}:{env['PATH']}",
        "PYTHONPATH": str(ROOT),
        "AWS_ENDPOINT_URL_S3": endpoint.endpoint_url,
        "AWS_ACCESS_KEY_ID": endpoint.access_key,
        "AWS_SECRET_ACCESS_KEY": endpoint.secret_key,
        "AWS_DEFAULT_REGION": endpoint.region,
    }
    work = tmp_path / "work"
    work.mkdir()
    stop = threading.Event()
    writer = threading.Thread(target=_write, args=(uri, database, stop), daemon=True)
    writer.start()
    saved = {k: os.environ.get(k) for k in env if k.startswith("AWS_")}
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})  # for _covered
    try:
        yield Bed(oplog_host, uri, bucket, database, work, env, locked_bucket=locked_bucket)
    finally:
        stop.set()
        writer.join()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        with MongoClient(uri) as client:
            for name in client.list_database_names():
                if name.startswith(database):
                    client.drop_database(name)


def _write(uri: str, database: str, stop: threading.Event) -> None:
    with MongoClient(uri) as client:
        n = 0
        while not stop.wait(0.1):
            client[database]["live"].insert_one({"_id": n, "at": time.time()})
            n += 1


@pytest.mark.parametrize("doc", DOCS)
def test_every_shell_block_runs(doc: str, bed: Bed) -> None:
    ran = 0
    for block in blocks(doc):
        if block.skip is not None:
            continue
        script = rewrite(block.text, bed)
        started = time.monotonic()
        done = subprocess.run(
            ["bash", "-c", PRELUDE + script],
            cwd=bed.work,
            env=bed.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0 and "Traceback" not in done.stderr, (
            f"{block.name} exited {done.returncode}\n--- as run:\n{script}"
            f"--- stdout:\n{done.stdout}--- stderr:\n{done.stderr}"
        )
        print(f"{block.name}: {time.monotonic() - started:.1f}s")
        ran += 1
    assert ran, f"{doc} has no shell block left to run"
    _check_restored(bed, RESTORED[doc])


# The databases each document's restores create beside the live one (--to-database).
RESTORED = {
    "README.md": ["_copy"],
    "docs/operations.md": [],
    "docs/pitr.md": ["_copy", "_dump", "_then", "_at"],
}


def _check_restored(bed: Bed, suffixes: list[str]) -> None:
    """Each restored copy holds the seeded collections byte for byte, and a
    prefix of what the writer wrote (a copy is of an earlier instant)."""
    with MongoClient(bed.uri, document_class=RawBSONDocument) as client:
        live = client[bed.database]
        for suffix in suffixes:
            copy = client[bed.database + suffix]
            for name in COLLECTIONS:
                assert _raw(copy[name]) == _raw(live[name]), f"{copy.name}.{name}"
            written = _raw(copy["live"])
            assert written == _raw(live["live"])[: len(written)], f"{copy.name}.live"


def _raw(collection: Any) -> list[bytes]:
    return [doc.raw for doc in collection.find().sort("_id", 1)]


def test_every_skip_has_a_reason_and_every_rewrite_is_used(tmp_path: Path) -> None:
    bed = Bed("h:1", "mongodb://h:1/", "b", "d", tmp_path, {})
    skipped = []
    for doc in DOCS:
        for block in blocks(doc):
            if block.skip is None:
                for line in block.text.splitlines():  # which patterns match; values not computed
                    bed.used.update(p for p, _ in REWRITES if re.search(p, line))
            else:
                assert len(block.skip) > 10, f"{block.name}: say why it is skipped"
                skipped.append(block.name)
    unused = [p for p, _ in REWRITES if p not in bed.used]
    assert not unused, f"rewrites no block uses any more: {unused}"
    assert len(skipped) <= 7, f"more blocks skipped than run? {skipped}"


def test_readme_leads_to_the_docs_and_shows_the_oplog_archiver() -> None:
    readme = (ROOT / "README.md").read_text()
    listed = readme.split("## Documentation", 1)[1]
    for doc in ("docs/pitr.md", "docs/heal.md", "docs/operations.md", "docs/cli.md"):
        assert f"`{doc}`" in listed, doc
    use = readme.split("## Use", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"^mongosnap oplog ", use, re.MULTILINE), "Use shows no mongosnap oplog"
