"""The IAM policies in examples/deploy/iam/ against the S3 operations each command makes.

Every command runs for real through the CLI against moto, with
MONGOSNAP_S3_TRACE recording each S3 operation it issues, including the
unhappy-but-normal paths: a backup that aborts a stale upload and streams a
multipart archive, heal's ranged GETs, prune deleting archives, leftovers and
a stale upload, the oplog archiver writing chunks. Each operation is mapped to
its IAM action and resource (AWS's "Actions defined by Amazon S3" table), and
each role's policy must allow every one of them, with the resource and
s3:prefix scope the policy gives, and hold no action its commands never use.

A stale upload needs a creation time more than a day old, which moto cannot
backdate: the backup that aborts one runs against a second moto started
under ``faketime -f -2d`` (mongosnap's own clock stays right, and the
MongoDB server's clock with it).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from helpers import s3_client, seed, subprocess_env
from oplog.oplog_support import ArchiverProcess, Writer, newest_ts
from pymongo import MongoClient

from mongosnap.crypto.keys import X25519Identity
from mongosnap.storage._s3_trace import TRACE_ENV

POLICIES = Path(__file__).resolve().parent.parent / "examples" / "deploy" / "iam"
FAKETIME = shutil.which("faketime") or "faketime"  # missing: the run fails, never skips
PREFIX = "nightly"
STALE_KEY = f"{PREFIX}/2020-01-01-00-00-00-mongodb-dump.tar.gz"

# S3 operation -> (IAM action, resource kind): AWS's service authorization
# reference for Amazon S3. Bucket-level actions are granted on the bucket's
# ARN, object-level ones on the object's.
ACTIONS: dict[str, tuple[str, str]] = {
    "HeadBucket": ("s3:ListBucket", "bucket"),
    "ListObjectsV2": ("s3:ListBucket", "bucket"),
    "ListObjects": ("s3:ListBucket", "bucket"),
    "ListMultipartUploads": ("s3:ListBucketMultipartUploads", "bucket"),
    "HeadObject": ("s3:GetObject", "object"),
    "GetObject": ("s3:GetObject", "object"),
    "PutObject": ("s3:PutObject", "object"),
    "CreateMultipartUpload": ("s3:PutObject", "object"),
    "UploadPart": ("s3:PutObject", "object"),
    "CompleteMultipartUpload": ("s3:PutObject", "object"),
    "AbortMultipartUpload": ("s3:AbortMultipartUpload", "object"),
    "ListParts": ("s3:ListMultipartUploadParts", "object"),
    "DeleteObject": ("s3:DeleteObject", "object"),
    # a server-side copy: PutObject on the target, GetObject on its source
    "UploadPartCopy": ("s3:PutObject", "object"),
    "CopyObject": ("s3:PutObject", "object"),
}

# The role (policy file) each command runs under.
ROLES = ("backup", "heal", "prune", "monitor", "oplog", "drill", "rekey")


def _start_moto(*wrapper: str) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [*wrapper, sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    # Its own process group: faketime runs moto as its child, and stopping
    # faketime alone would leave moto running.
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, url
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    _stop_group(proc)
    raise RuntimeError(f"moto under {wrapper} did not start")


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process and its children (faketime's moto), then wait."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


# Runs several commands in one interpreter (each as ``mongosnap ARGS`` would,
# through the CLI's main), to pay Python's start-up once: {role, env, argv}.
BATCH = """
import json, os, sys
from mongosnap.cli import main
for step in json.load(sys.stdin):
    os.environ.update(step["env"])
    code = main(step["argv"])
    if code != 0:
        sys.exit(f"{step['argv']} exited {code}")
"""


class Scenario:
    """One bucket, one prefix; every command's traced S3 operations, by role."""

    def __init__(self, tmp: Path, endpoint: Any) -> None:
        self.tmp = tmp
        self.endpoint = endpoint
        self.traces: dict[str, list[dict[str, Any]]] = {role: [] for role in ROLES}
        self.steps: list[dict[str, Any]] = []

    def add(self, role: str, *argv: str, endpoint: Any = None) -> None:
        """A command for the next batch."""
        trace = self.trace(role)
        env = self.s3_env(endpoint or self.endpoint) | {TRACE_ENV: str(trace)}
        self.steps.append({"role": role, "env": env, "argv": list(argv), "trace": str(trace)})

    def batch(self) -> str:
        """Run the commands added so far, in order, in one process; their stdout."""
        steps, self.steps = self.steps, []
        done = subprocess.run(
            [sys.executable, "-c", BATCH],
            input=json.dumps(steps),
            capture_output=True,
            text=True,
            timeout=240,
            env=subprocess_env(),
        )
        assert done.returncode == 0, (done.stdout, done.stderr)
        for step in steps:
            self.collect(step["role"], Path(step["trace"]))
        return done.stdout

    def run(self, role: str, *args: str, faked: str) -> str:
        """One command under ``faketime -f FAKED``; its stdout."""
        trace = self.trace(role)
        env = subprocess_env() | self.s3_env(self.endpoint) | {TRACE_ENV: str(trace)}
        done = subprocess.run(
            [FAKETIME, "-f", faked, sys.executable, "-m", "mongosnap", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        self.collect(role, trace)
        return done.stdout

    def issued(self, role: str, operation: str, key: str | None, under: str = "") -> bool:
        """Whether role issued operation on key (any key under ``under`` if key is None)."""
        return any(
            r["operation"] == operation
            and (r["key"] == key if key is not None else (r["key"] or "").startswith(under))
            for r in self.traces[role]
        )

    def trace(self, role: str) -> Path:
        return self.tmp / f"{role}-{uuid.uuid4().hex}.jsonl"

    def collect(self, role: str, trace: Path) -> None:
        self.traces[role] += self.read(trace)

    @staticmethod
    def s3_env(endpoint: Any) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL_S3": endpoint.endpoint_url,
            "AWS_ACCESS_KEY_ID": endpoint.access_key,
            "AWS_SECRET_ACCESS_KEY": endpoint.secret_key,
            "AWS_DEFAULT_REGION": endpoint.region,
        }

    @staticmethod
    def read(trace: Path) -> list[dict[str, Any]]:
        if not trace.exists():
            return []
        return [json.loads(line) for line in trace.read_text().splitlines()]


def _stale_upload(client: Any, bucket: str) -> None:
    """An unfinished upload of a mongosnap archive name, with one part."""
    upload = client.create_multipart_upload(Bucket=bucket, Key=STALE_KEY)
    client.upload_part(
        Bucket=bucket, Key=STALE_KEY, UploadId=upload["UploadId"], PartNumber=1, Body=b"x"
    )


def _big_collection(uri: str, database: str) -> None:
    """About 6 MiB that does not compress: a backup with --part-size 5 goes multipart."""
    with MongoClient(uri) as client:
        client[database]["blobs"].insert_many(
            [{"_id": i, "b": os.urandom(1024 * 1024)} for i in range(6)]
        )


@pytest.fixture(scope="module")
def scenario(testbed: Any, mongo_uri: str, tmp_path_factory: Any) -> Iterator[Scenario]:
    tmp = tmp_path_factory.mktemp("iam")
    moto = testbed.s3["moto"]
    sc = Scenario(tmp, moto)
    client = s3_client(moto)
    bucket = f"mongosnap-iam-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    dest = f"s3://{bucket}/{PREFIX}"
    database = f"mongosnap_iam_{uuid.uuid4().hex[:12]}"
    restored = f"{database}_r"
    seed(mongo_uri, database, {"orders": 50, "audit": 20})
    _big_collection(mongo_uri, database)
    faked_moto, faked_url = _start_moto(FAKETIME, "-f", "-2d")
    oplog_server = f"ferretdb-oplog-iam-{uuid.uuid4().hex[:8]}"  # small: its end is found fast
    oplog_uri = testbed.start_oplog_ferretdb(oplog_server, 1 << 20)
    admin: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    host = mongo_uri.split("/")[2]
    try:
        # backup: a stale upload aborted (on the moto that lives two days ago),
        # then two multipart archives on the shared moto.
        old = type(moto)("faked", faked_url, moto.access_key, moto.secret_key, moto.region)
        old_bucket = f"mongosnap-iam-old-{uuid.uuid4().hex[:12]}"
        s3_client(old).create_bucket(Bucket=old_bucket)
        _stale_upload(s3_client(old), old_bucket)
        sc.add(
            "backup", "backup", f"s3://{old_bucket}/{PREFIX}", host, database, "-q", endpoint=old
        )
        for _ in range(2):
            sc.add("backup", "backup", dest, host, database, "--part-size", "5", "-q")
        sc.batch()
        assert sc.issued("backup", "AbortMultipartUpload", STALE_KEY)
        # heal and restore: a vanished collection healed with ranged GETs.
        admin[database].drop_collection("audit")
        sc.add("heal", "heal", dest, host, database, "orders", "audit", "-q")
        sc.add("heal", "restore", "latest", dest, host, database, "--to-database", restored, "-q")
        # monitor: the read-only commands, with an unfinished upload to list.
        _stale_upload(client, bucket)
        for argv in (
            ("check", dest, database),
            ("list", dest),
            ("list", dest, "--uploads"),
            ("list", dest, "--leftovers"),
            ("verify", "latest", dest, "-q"),
            ("oplog", dest, "--list"),
        ):
            sc.add("monitor", *argv)
        sc.batch()
        assert admin[database]["audit"].count_documents({}) == 20
        # oplog: the archiver writes chunks until SIGTERM.
        _archive_oplog(sc, dest, oplog_uri)
        # prune, two days on: the stale upload aborted, the older archive deleted.
        report = json.loads(
            sc.run("prune", "prune", dest, "--keep-last", "1", "--json", faked="+2d")
        )
        assert report["stale_uploads_aborted"], report
        # drill: the newest archive restored into a scratch database, its record written;
        # rekey: a recipient added to an encrypted multipart archive (server-side copies).
        (key_file, holder), (_, added) = _age_key(tmp / "a.txt"), _age_key(tmp / "b.txt")
        sc.add("drill", "drill", dest, host, database, "-q")
        sc.add("backup", "backup", dest, host, database, "--encrypt-to", holder, "-q")
        sc.add(
            "rekey",
            "rekey",
            dest,
            "--all",
            "--identity",
            str(key_file),
            "--encrypt-to",
            added,
            "-q",
        )
        sc.batch()
        yield sc
    finally:
        admin.drop_database(database)
        admin.drop_database(restored)
        admin.close()
        testbed.stop_server(oplog_server)
        _stop_group(faked_moto)


def _age_key(path: Path) -> tuple[Path, str]:
    """A new age identity in ``path``; (path, its public recipient)."""
    identity = X25519Identity.generate()
    path.write_text(identity.export() + "\n")
    return path, str(identity.recipient)


def _archive_oplog(sc: Scenario, dest: str, uri: str) -> None:
    """The archiver until SIGTERM makes it write a chunk; again, resuming from it."""
    writer = Writer(uri, f"mongosnap_iam_oplog_{uuid.uuid4().hex[:8]}")
    try:
        first = _archiver(sc, dest, uri)
        writer.write(10)
        first.wait_read_past(newest_ts(uri))
        _stop(sc, first)
        _stop(sc, _archiver(sc, dest, uri))
    finally:
        writer.client.drop_database(writer.coll.database.name)
        writer.stop()
    assert sc.issued("oplog", "GetObject", None, under=f"{PREFIX}/oplog/")  # the resume


def _archiver(sc: Scenario, dest: str, uri: str) -> ArchiverProcess:
    trace = sc.trace("oplog")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**sc.s3_env(sc.endpoint), TRACE_ENV: str(trace)}.items():
            patch.setenv(name, value)
        proc = ArchiverProcess(cast(Path, dest), uri, "--start", "now", "--settle", "0")
    proc.trace = trace  # type: ignore[attr-defined]
    proc.wait_line("oplog reader ready")
    return proc


def _stop(sc: Scenario, proc: ArchiverProcess) -> None:
    assert proc.terminate() == 143, proc.log
    sc.collect("oplog", proc.trace)  # type: ignore[attr-defined]


def _policy(role: str, bucket: str) -> list[dict[str, Any]]:
    """The role's Allow statements, BUCKET and PREFIX filled in."""
    text = (POLICIES / f"{role}.json").read_text()
    text = text.replace("BUCKET", bucket).replace("PREFIX", PREFIX)
    statements: list[dict[str, Any]] = json.loads(text)["Statement"]
    assert all(st["Effect"] == "Allow" for st in statements)
    return statements


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def _allows(statement: dict[str, Any], action: str, resource: str, prefix: str | None) -> bool:
    """IAM's matching for the parts the policies use: Action, Resource, s3:prefix."""
    if action not in _listed(statement["Action"]):
        return False
    if not any(fnmatch.fnmatchcase(resource, r) for r in _listed(statement["Resource"])):
        return False
    for operator, keys in statement.get("Condition", {}).items():
        assert operator == "StringLike" and set(keys) == {"s3:prefix"}, statement
        if prefix is None:  # a condition key absent from the request: StringLike fails
            return False
        if not any(fnmatch.fnmatchcase(prefix, p) for p in _listed(keys["s3:prefix"])):
            return False
    return True


def _requests(record: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(IAM action, resource ARN, s3:prefix) each traced operation needs: one,
    or two for a server-side copy (it reads its source)."""
    action, kind = ACTIONS[record["operation"]]
    bucket = record["bucket"]
    if kind == "bucket":
        return [(action, f"arn:aws:s3:::{bucket}", record["prefix"])]
    needed = [(action, f"arn:aws:s3:::{bucket}/{record['key']}", None)]
    if record.get("source"):
        needed.append(("s3:GetObject", f"arn:aws:s3:::{record['source']}", None))
    return needed


@pytest.mark.parametrize("role", ROLES)
def test_policy_allows_every_operation_its_commands_make(scenario: Scenario, role: str) -> None:
    records = scenario.traces[role]
    assert records, f"no S3 operation traced for {role}"
    unknown = {r["operation"] for r in records} - set(ACTIONS)
    assert not unknown, f"map these operations to IAM actions: {unknown}"
    for record in records:
        statements = _policy(role, record["bucket"])
        for action, resource, prefix in _requests(record):
            assert any(_allows(st, action, resource, prefix) for st in statements), (
                f"examples/deploy/iam/{role}.json denies {record['operation']}"
                f" ({action} on {resource}, prefix {prefix!r})"
            )


@pytest.mark.parametrize("role", ROLES)
def test_policy_grants_nothing_its_commands_never_use(scenario: Scenario, role: str) -> None:
    granted = {a for st in _policy(role, "b") for a in _listed(st["Action"])}
    used = {action for r in scenario.traces[role] for action, _, _ in _requests(r)}
    assert granted == used, f"{role}.json grants unused {granted - used}, lacks {used - granted}"


def test_scenario_took_the_unhappy_paths(scenario: Scenario) -> None:
    """The paths that need the rarer actions did run."""
    assert scenario.issued("backup", "AbortMultipartUpload", STALE_KEY)
    assert scenario.issued("backup", "UploadPart", None, under=f"{PREFIX}/")
    assert scenario.issued("prune", "AbortMultipartUpload", STALE_KEY)
    assert scenario.issued("prune", "DeleteObject", None, under=f"{PREFIX}/20")
    assert scenario.issued("oplog", "PutObject", None, under=f"{PREFIX}/oplog/")
    assert scenario.issued("drill", "PutObject", None, under=f"{PREFIX}/drills/")
    assert scenario.issued("rekey", "UploadPartCopy", None, under=f"{PREFIX}/")
    assert scenario.issued("rekey", "PutObject", None, under=f"{PREFIX}/locks/rekey-")
    ranged = [r for r in scenario.traces["heal"] if r["operation"] == "GetObject" and r["range"]]
    assert ranged, "heal made no ranged GET"
