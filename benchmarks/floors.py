"""The least any tool must do, each run by bench.py as its own measured process.

    floors.py drain URI DATABASE
        read every collection with find_raw_batches (batches of 1000), keep nothing;
    floors.py insert URI DATABASE DIR [COLLECTION ...]
        insert_many the raw documents of DIR/<collection>.bson (every .bson in DIR
        when none is named) into DATABASE: RawBSONDocument batches of 1000,
        ordered=False, up to 4 batches in flight per collection (mongosnap's
        default --workers), collections one after another;
    floors.py upload ENDPOINT BUCKET KEY FILE
    floors.py download ENDPOINT BUCKET KEY FILE
        boto3's managed transfer (multipart, threads), path-style addressing;
        the legacy scripts used s3cmd for these, which is not installed here.

S3 credentials come from the standard AWS variables.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BATCH = 1000
WORKERS = 4


async def drain(uri: str, database: str) -> int:
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    total = 0
    try:
        db = client[database]
        for name in await db.list_collection_names():
            async for batch in db[name].find_raw_batches(batch_size=BATCH):
                total += len(batch)
    finally:
        await client.close()
    return total


def _batches(path: Path) -> Iterator[list[Any]]:
    """The file's documents as RawBSONDocuments, BATCH at a time, read as they go."""
    from bson.raw_bson import RawBSONDocument

    batch: list[Any] = []
    with path.open("rb") as handle:
        while prefix := handle.read(4):
            size = int.from_bytes(prefix, "little")
            batch.append(RawBSONDocument(prefix + handle.read(size - 4)))
            if len(batch) == BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


async def insert(uri: str, database: str, folder: Path, names: list[str]) -> int:
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    inserted = 0
    try:
        for name in names or sorted(p.stem for p in folder.glob("*.bson")):
            inserted += await _insert_one(client[database][name], folder / f"{name}.bson")
    finally:
        await client.close()
    return inserted


async def _insert_one(collection: Any, path: Path) -> int:
    """One collection, WORKERS batches in flight."""
    slots = asyncio.Semaphore(WORKERS)
    inserted = 0

    async def one(batch: list[Any]) -> None:
        try:
            await collection.insert_many(batch, ordered=False)
        finally:
            slots.release()

    async with asyncio.TaskGroup() as group:
        for batch in _batches(path):
            await slots.acquire()
            group.create_task(one(batch))
            inserted += len(batch)
    return inserted


def _s3(endpoint: str) -> Any:
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.client("s3", endpoint_url=endpoint, config=config)


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "drain":
        print(asyncio.run(drain(*args)))
    elif command == "insert":
        uri, database, folder, *names = args
        print(asyncio.run(insert(uri, database, Path(folder), names)))
    elif command == "upload":
        endpoint, bucket, key, path = args
        _s3(endpoint).upload_file(path, bucket, key)
    elif command == "download":
        endpoint, bucket, key, path = args
        _s3(endpoint).download_file(bucket, key, path)
    else:
        raise SystemExit(f"unknown floor {command!r}; see {__file__}'s docstring")


if __name__ == "__main__":
    main(sys.argv[1:])
