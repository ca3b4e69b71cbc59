"""Heal of one small collection from an archive of many collections: with and
without the manifest index (docs/format.md, section 18), on S3 and FerretDB.

    .venv/bin/python benchmarks/bench_heal_index.py [--collections 10000]
        [--rounds 3] [--s3 versitygw|moto]

Needs the running test bed ($MONGOSNAP_TESTBED_STATE, scripts/testbed.py).
One archive of ``--collections`` collections (three small documents each,
one database) is written with mongosnap's own writer into a fresh bucket
twice: under ``indexed/`` with its manifest index, under ``plain/`` without
(as an archive written before the index, or below its threshold). Each round
drops one collection and heals it from each prefix in turn (alternated), in
this process, through a storage that counts every byte its reads return.

Printed per prefix: bytes read from storage in all (index, sidecar, the
archive's ranges), of them the collection's own members, the rest (the
manifest's share), GETs and HEADs, and the min and median wall and CPU
seconds of the heal (CPU: this process, all threads).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import bson
from botocore.config import Config
from pymongo import MongoClient

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "scripts"))
import testbed  # noqa: E402

from mongosnap import heal  # noqa: E402
from mongosnap.archive import ArchiveWriter, CollectionEntry, Manifest, archive_name  # noqa: E402
from mongosnap.archive.index import build_index, index_key  # noqa: E402
from mongosnap.archive.manifest import manifest_key  # noqa: E402
from mongosnap.archive.metadata import build_metadata  # noqa: E402
from mongosnap.codecs import get_codec  # noqa: E402
from mongosnap.storage import S3Config, S3Storage, Storage  # noqa: E402
from mongosnap.storage.base import ObjectInfo  # noqa: E402

WHEN = datetime(2026, 12, 7, 1, 2, 3, tzinfo=UTC)


class Counted:
    """A storage whose reads are counted (bytes, GETs, HEADs); everything else passes."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.bytes = self.gets = self.heads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        self.gets += 1
        async for chunk in self.inner.read(key, start, end):
            self.bytes += len(chunk)
            yield chunk

    async def read_bytes(self, key: str, *, limit: int) -> bytes:
        self.gets += 1
        data = await self.inner.read_bytes(key, limit=limit)
        self.bytes += len(data)
        return data

    async def stat(self, key: str) -> ObjectInfo:
        self.heads += 1
        return await self.inner.stat(key)


async def write_archive(storage: Storage, database: str, count: int, indexed: bool) -> Manifest:
    key = archive_name(WHEN, "gzip")
    entries = []
    sink = storage.open_writer(key)
    async with ArchiveWriter(sink, get_codec("gzip")) as writer:
        for i in range(count):
            name = f"c{i:05d}"
            meta = build_metadata({"name": name, "type": "collection", "options": {}})
            body = b"".join(bson.encode({"_id": n, "of": name}) for n in range(3))
            meta_range = await writer.add_file(f"dump/{database}/{name}.metadata.json", meta)
            data_range = await writer.add_file(f"dump/{database}/{name}.bson", body)
            digest = hashlib.sha256(body).hexdigest()
            entries.append(
                CollectionEntry(database, name, "collection", 3, len(body), digest, meta_range,
                                data_range)
            )  # fmt: skip
        manifest = Manifest(
            archive=key, codec="gzip", tool_version="bench", created=WHEN, started=WHEN,
            finished=WHEN, databases=[database], collections=entries,
        )  # fmt: skip
        manifest, document = manifest.sealed(writer.plan_finish)
        await writer.finish(document)
    await sink.commit()
    index = build_index(manifest, document)
    if indexed and index is not None:
        await storage.put(index_key(key), index)
    await storage.put(manifest_key(key), document)
    return manifest


async def run(args: argparse.Namespace) -> None:
    bed = testbed.Testbed.from_state(Path(os.environ[testbed.STATE_ENV]), owned=False)
    endpoint = bed.s3[args.s3]
    bucket = f"mongosnap-bench-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3", config=Config(s3={"addressing_style": "path"}), **endpoint.client_kwargs()
    )
    client.create_bucket(Bucket=bucket)
    config = S3Config(
        endpoint_url=endpoint.endpoint_url, region=endpoint.region,
        access_key_id=endpoint.access_key, secret_access_key=endpoint.secret_key,
        addressing_style="path",
    )  # fmt: skip
    database = f"bench_index_{uuid.uuid4().hex[:8]}"
    prefixes = {"indexed": True, "plain": False}
    manifest = None
    for prefix, indexed in prefixes.items():
        async with S3Storage(bucket, prefix, config) as storage:
            manifest = await write_archive(storage, database, args.collections, indexed)
    assert manifest is not None
    document = manifest.to_json()
    index = build_index(manifest, document) or b""
    print(
        f"## heal of 1 collection of {args.collections} on {args.s3}:"
        f" sidecar {len(document):,} bytes, index {len(index):,} bytes"
    )
    figures: dict[str, list[tuple[float, float, Counted, str]]] = {p: [] for p in prefixes}
    mongo = MongoClient(bed.mongo_uri)
    try:
        for round_index in range(args.rounds):
            order = list(prefixes)[round_index % 2 :] + list(prefixes)[: round_index % 2]
            name = f"c{(round_index * 3331 + 4444) % args.collections:05d}"
            for prefix in order:
                async with S3Storage(bucket, prefix, config) as storage:
                    counted = Counted(storage)
                    wall, cpu = time.perf_counter(), time.process_time()
                    report = await heal(
                        bed.mongo_uri,
                        counted,
                        database=database,
                        collections=[name],  # type: ignore[arg-type]
                    )
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                if not report.ok:
                    raise SystemExit(f"heal from {prefix} failed: {report.to_dict()}")
                mongo[database].drop_collection(name)
                figures[prefix].append((wall, cpu, counted, name))
    finally:
        mongo.drop_database(database)
        mongo.close()
    ranges = {
        c.name: (c.metadata.offset, c.bson.end if c.bson else 0) for c in manifest.collections
    }
    print(
        "| prefix | bytes read | collection's members | manifest's share | GETs | HEADs"
        " | wall min / median s | CPU min / median s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for prefix, runs in figures.items():
        counted, name = runs[-1][2], runs[-1][3]
        own = ranges[name][1] - ranges[name][0]
        walls, cpus = [r[0] for r in runs], [r[1] for r in runs]
        print(
            f"| {prefix} | {counted.bytes:,} | {own:,} | {counted.bytes - own:,} | {counted.gets}"
            f" | {counted.heads} | {min(walls):.3f} / {statistics.median(walls):.3f}"
            f" | {min(cpus):.3f} / {statistics.median(cpus):.3f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--collections", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--s3", choices=["versitygw", "moto"], default="versitygw")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
