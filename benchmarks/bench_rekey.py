"""What a rekey costs: one recipient added to an encrypted archive of --mib MiB,
on a directory and on moto, against the archive's size.

    .venv/bin/python benchmarks/bench_rekey.py [--mib 64]

Uses the running test bed when $MONGOSNAP_TESTBED_STATE names one, else
starts its own. The archive holds random (incompressible) documents, so its
size is about --mib. Printed per destination: wall seconds of the rekey,
and on S3 the bytes sent in request bodies and received in GetObject
responses (the payload after the first 5 MiB is copied by the server).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
import testbed  # noqa: E402
from bson import Binary  # noqa: E402
from pymongo import MongoClient  # noqa: E402

import mongosnap  # noqa: E402
from mongosnap import Encryption, Keys  # noqa: E402
from mongosnap.crypto.keys import X25519Identity  # noqa: E402
from mongosnap.pipelines.rekey import rekey  # noqa: E402
from mongosnap.storage import S3Config, opened  # noqa: E402

DOC = 16 << 10


class Traffic:
    """Request body bytes sent and GetObject bytes received, from botocore's events."""

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0

    def install(self, client: Any) -> None:
        client.meta.events.register("before-send.s3", self._send)
        client.meta.events.register("after-call.s3.GetObject", self._got)

    def _send(self, request: Any, **_: Any) -> None:
        self.sent += int(request.headers.get("Content-Length", 0))

    def _got(self, parsed: Any, **_: Any) -> None:
        self.received += int(parsed.get("ContentLength", 0))


async def measure(uri: str, url: str, s3: S3Config | None, database: str, work: Path) -> None:
    old, new = X25519Identity.generate(), X25519Identity.generate()
    key_file = work / f"key-{uuid.uuid4().hex[:6]}.txt"
    key_file.write_text(old.export() + "\n")
    report = await mongosnap.backup(
        uri, url, database=database, s3=s3, encryption=Encryption([str(old.recipient)])
    )
    traffic = Traffic()
    async with opened(url, s3) as storage:
        if s3 is not None:
            traffic.install(await storage.client())  # type: ignore[attr-defined]
        started = time.perf_counter()
        done = await rekey(
            storage,
            [report.archive_key],
            keys=Keys([key_file]),
            add=Encryption([str(new.recipient)]),
        )
        wall = time.perf_counter() - started
    size = done.archives[0].size
    line = (
        f"{'moto' if s3 else 'directory':9}  archive {size / 2**20:7.1f} MiB  rekey {wall:6.2f} s"
    )
    if s3 is not None:
        line += (
            f"  sent {traffic.sent / 2**20:6.2f} MiB  received {traffic.received / 2**20:6.1f} MiB"
        )
    print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64)
    args = parser.parse_args()
    with ExitStack() as stack:
        state = os.environ.get(testbed.STATE_ENV)
        if state:
            bed = testbed.Testbed.from_state(Path(state), owned=False)
        else:
            testbed.build()
            bed = stack.enter_context(testbed.Testbed())
        work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        uri = bed.mongo_uri
        database = f"bench_rekey_{uuid.uuid4().hex[:8]}"
        with MongoClient(uri) as client:
            docs = args.mib * 2**20 // DOC
            for start in range(0, docs, 256):
                batch = range(start, min(start + 256, docs))
                client[database]["blobs"].insert_many(
                    [{"_id": i, "blob": Binary(os.urandom(DOC))} for i in batch]
                )
        try:
            moto = bed.s3["moto"]
            bucket = f"bench-rekey-{uuid.uuid4().hex[:8]}"
            s3 = S3Config(
                endpoint_url=moto.endpoint_url,
                region=moto.region,
                access_key_id=moto.access_key,
                secret_access_key=moto.secret_key,
                addressing_style="path",
            )
            import boto3

            boto3.client("s3", **moto.client_kwargs()).create_bucket(Bucket=bucket)
            asyncio.run(measure(uri, str(work / "backups"), None, database, work))
            asyncio.run(measure(uri, f"s3://{bucket}/bench", s3, database, work))
        finally:
            with MongoClient(uri) as client:
                client.drop_database(database)


if __name__ == "__main__":
    main()
