"""Test helpers shared by the integration tests: seed data, read archives back."""

from __future__ import annotations

import datetime as dt
import io
import os
import pty
import select
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from bson import Binary, Int64, ObjectId, Regex, Timestamp
from pymongo import ASCENDING, DESCENDING, MongoClient, monitoring

from mongosnap.storage import S3Config, Storage, open_storage


@dataclass
class Destination:
    """Where a test backs up to, and how to read what landed there."""

    url: str
    s3: S3Config | None
    endpoint: Any = None
    bucket: str | None = None
    root: Path | None = None
    kind: str = "local"

    def storage(self) -> Storage:
        return open_storage(self.url, s3=self.s3)

    def client(self) -> Any:
        assert self.endpoint is not None
        return s3_client(self.endpoint)

    def keys(self) -> list[str]:
        if self.root is not None:
            return sorted(
                str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file()
            )
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def pending_uploads(self) -> list[str]:
        if self.root is not None:
            return []
        answer = self.client().list_multipart_uploads(Bucket=self.bucket)
        return [u["Key"] for u in answer.get("Uploads", [])]

    def get(self, key: str) -> bytes:
        if self.root is not None:
            return (self.root / key).read_bytes()
        return bytes(self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def get_range(self, key: str, start: int, end: int) -> bytes:
        if self.root is not None:
            return (self.root / key).read_bytes()[start:end]
        answer = self.client().get_object(
            Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}"
        )
        return bytes(answer["Body"].read())


def make_destination(
    kind: str, tmp_path: Path, testbed: Any, new_bucket: Any, prefix: str = "nightly"
) -> Destination:
    """A local directory, or a fresh bucket (under ``prefix``) on moto or versitygw."""
    if kind == "local":
        root = tmp_path / "backups"
        return Destination(url=str(root), s3=None, root=root)
    endpoint = testbed.s3[kind]
    bucket = new_bucket(endpoint)
    url = f"s3://{bucket}/{prefix}"
    return Destination(url, s3_config(endpoint), endpoint, bucket, kind=kind)


def s3_client(endpoint: Any) -> Any:
    """A boto3 S3 client for an S3Endpoint: path-style, checksums only when required."""
    config = Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 2, "mode": "standard"},
    )
    return boto3.client("s3", config=config, **endpoint.client_kwargs())


def s3_config(endpoint: Any, **overrides: Any) -> S3Config:
    fields: dict[str, Any] = {
        "endpoint_url": endpoint.endpoint_url,
        "region": endpoint.region,
        "access_key_id": endpoint.access_key,
        "secret_access_key": endpoint.secret_key,
        "addressing_style": "path",
    }
    fields.update(overrides)
    return S3Config(**fields)


def sample_document(i: int) -> dict[str, Any]:
    """A document using the BSON types FerretDB 1.x stores faithfully."""
    return {
        "_id": ObjectId(),
        "i": i,
        "big": Int64(2**40 + i),
        "f": i / 7,
        "s": f"héllo wörld {i} ✓",
        "flag": i % 2 == 0,
        "nothing": None,
        "when": dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=i),
        "bin": Binary(bytes(range(i % 50))),
        "uid": Binary(uuid.UUID(int=i).bytes, 4),
        "re": Regex("^ab+c", "i"),
        "ts": Timestamp(1_700_000_000 + i, 1),
        "nested": {"a": {"b": [1, 2, {"c": "d"}]}, "tags": ["x", "y"]},
        "pad": "x" * (i % 300),
    }


def seed(uri: str, database: str, sizes: dict[str, int]) -> None:
    """Create collections of the given document counts, with indexes and options."""
    with MongoClient(uri) as client:
        db = client[database]
        for name, count in sizes.items():
            coll = db[name]
            if count:
                coll.insert_many([sample_document(i) for i in range(count)])
            else:
                db.create_collection(name)
        first = next(iter(sizes))
        db[first].create_index([("i", ASCENDING)], name="by_i", unique=True)
        db[first].create_index([("s", ASCENDING), ("when", DESCENDING)], name="s_when")


def server_documents(uri: str, database: str, collection: str) -> list[bytes]:
    """Every document of a collection as the raw bytes the server sends."""
    with MongoClient(uri) as client:
        raw = b"".join(client[database][collection].find_raw_batches())
    return split_bson(raw)


def split_bson(data: bytes) -> list[bytes]:
    docs, offset = [], 0
    while offset < len(data):
        size = int.from_bytes(data[offset : offset + 4], "little")
        docs.append(data[offset : offset + size])
        offset += size
    assert offset == len(data)
    return docs


def tar_members(archive: bytes, mode: str = "r:*") -> dict[str, bytes]:
    """Every regular member of a (concatenated-member) compressed tar."""
    if archive[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        archive = (
            zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(archive)
        )
        mode = "r:"
    out = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode=mode) as tar:
        for member in tar:
            handle = tar.extractfile(member)
            assert handle is not None
            out[member.name] = handle.read()
    return out


def run_cli(
    *args: str, env: dict[str, str] | None = None, faked: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mongosnap ARGS`` as an operator would; text output captured.

    ``faked``: under ``faketime -f FAKED`` (a host whose clock is off)."""
    clock = [shutil.which("faketime") or "faketime", "-f", faked] if faked else []
    return subprocess.run(
        [*clock, sys.executable, "-m", "mongosnap", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def subprocess_env(destination: Destination | None = None, **extra: str) -> dict[str, str]:
    """The environment for a subprocess: S3 reached through the standard AWS variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MONGOSNAP_URI"))}
    if destination is not None and destination.endpoint is not None:
        endpoint = destination.endpoint
        env |= {
            "AWS_ENDPOINT_URL_S3": endpoint.endpoint_url,
            "AWS_ACCESS_KEY_ID": endpoint.access_key,
            "AWS_SECRET_ACCESS_KEY": endpoint.secret_key,
            "AWS_DEFAULT_REGION": endpoint.region,
        }
    return env | extra


def on_a_terminal(*args: str) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal: (exit code, screen, stdout)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mongosnap", *args],
        stderr=slave,
        stdout=subprocess.PIPE,
        env=dict(os.environ, COLUMNS="120", TERM="xterm"),
    )
    os.close(slave)
    screen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # read as it draws, so the terminal never fills up
        if select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, screen.decode(errors="replace"), out.decode()


class CommandLog(monitoring.CommandListener):
    """Every command a client sends, in order (pass it as an event listener)."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append((event.command_name, event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def names(self) -> list[str]:
        """The commands' names, but the driver's own endSessions at close."""
        return [name for name, _ in self.commands if name != "endSessions"]

    def sent(self) -> Counter[str]:
        """How many of each command, but endSessions."""
        return Counter(self.names())

    def filters(self, name: str = "listCollections") -> list[Any]:
        """The ``filter`` of each ``name`` command (None without one)."""
        return [command.get("filter") for sent, command in self.commands if sent == name]
