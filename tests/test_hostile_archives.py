"""A hostile archive next to a good older one, through the CLI on every destination.

Each hostile archive is the newest. ``list`` shows it with a status, ``verify``
reports it (a clear message, the archive error's exit code, no traceback),
``prune --dry-run`` runs, and ``heal`` skips it with a warning and restores
from the older archive, byte for byte.

The content cases are forged with mongosnap's own writer, so the manifest,
sizes, counts and checksums all agree with the hostile bytes: only validating
the content itself can catch them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from catalog_support import at, backup_at
from helpers import Destination, run_cli, seed, server_documents, split_bson, tar_members
from pymongo import MongoClient

from mongosnap.archive import ArchiveWriter, CollectionEntry, Manifest, archive_name
from mongosnap.archive.manifest import MAX_COLLECTIONS, manifest_key, parse_archive_name
from mongosnap.codecs import get_codec
from mongosnap.storage import Storage

SIZES = {"users": 60, "orders": 30}
REPORTED = {  # what verify's message must say, by hostile kind
    "nested-sidecar": "nests deeper than",
    "oversized-sidecar": f"more than {MAX_COLLECTIONS} collections",
    "extended-json-metadata": "users.metadata.json: metadata is not valid Extended JSON",
    "bson-element-type": "users.bson: BSON document 5 is not valid BSON",
    "legacy-bson-element-type": "users.bson: BSON document 5 is not valid BSON",
}
KINDS = list(REPORTED)
EXIT_INTERNAL = 70


@pytest.fixture
def seeded(mongo_uri: str, new_database: str) -> str:
    seed(mongo_uri, new_database, SIZES)
    return new_database


async def read(storage: Storage, key: str) -> bytes:
    return b"".join([chunk async for chunk in storage.read(key)])


async def forge(storage: Storage, good: str, edit: dict[str, bytes]) -> str:
    """Rewrite archive ``good`` an hour later with some members' bodies replaced,
    and a manifest (sidecar included) that agrees with the new bodies."""
    manifest = Manifest.from_json(await read(storage, manifest_key(good)))
    members = tar_members(await read(storage, good))
    when = parse_archive_name(good)
    assert when is not None
    key = good.rsplit("/", 1)[0] + "/" if "/" in good else ""
    key += archive_name(when + timedelta(hours=1), manifest.codec)
    entries = []
    sink = storage.open_writer(key)
    async with ArchiveWriter(sink, get_codec(manifest.codec)) as writer:
        for entry in manifest.collections:
            meta_body = edit.get(entry.metadata.name, members[entry.metadata.name])
            meta = await writer.add_file(entry.metadata.name, meta_body)
            assert entry.bson is not None
            body = edit.get(entry.bson.name, members[entry.bson.name])
            data = await writer.add_file(entry.bson.name, body)
            entries.append(
                CollectionEntry(
                    entry.database,
                    entry.name,
                    entry.type,
                    len(split_bson(body)),
                    len(body),
                    hashlib.sha256(body).hexdigest(),
                    meta,
                    data,
                )
            )
        forged = replace(
            manifest, archive=key.rsplit("/", 1)[-1], created=when + timedelta(hours=1)
        )
        forged = replace(forged, collections=entries)
        _, document = forged.sealed(writer.plan_finish)
        await writer.finish(document)
    await sink.commit()
    await storage.put(manifest_key(key), document)
    return key


def bad_element_type(bson_member: bytes) -> bytes:
    """The member with document 5's first element given type 0x14 (none such)."""
    docs = split_bson(bson_member)
    docs[5] = docs[5][:4] + b"\x14" + docs[5][5:]
    return b"".join(docs)


async def make_hostile(kind: str, storage: Storage, good: str, database: str) -> str:
    users_meta = f"dump/{database}/users.metadata.json"
    users_bson = f"dump/{database}/users.bson"
    if kind == "extended-json-metadata":
        hostile = b'{"options":{"a":{"$oid":"zz"}},"indexes":[],"collectionName":"users"}'
        return await forge(storage, good, {users_meta: hostile})
    if kind == "bson-element-type":
        body = tar_members(await read(storage, good))[users_bson]
        return await forge(storage, good, {users_bson: bad_element_type(body)})
    if kind == "legacy-bson-element-type":
        return await legacy_with_bad_bson(storage, good, users_bson)
    key = await forge(storage, good, {})
    if kind == "nested-sidecar":
        sidecar = b'{"format": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    else:
        sidecar = await oversized_sidecar(storage, key, database)
    await storage.delete(manifest_key(key))
    await storage.put(manifest_key(key), sidecar)
    return key


async def legacy_with_bad_bson(storage: Storage, good: str, users_bson: str) -> str:
    """A legacy ``tar -czf dump`` archive (no manifest, read by streaming), an hour
    newer than ``good``, whose users.bson holds an invalid element type."""
    members = tar_members(await read(storage, good))
    members[users_bson] = bad_element_type(members[users_bson])
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for name, body in members.items():
            if name.startswith("dump/"):
                info = tarfile.TarInfo(name)
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    when = parse_archive_name(good)
    assert when is not None
    key = good.rsplit("/", 1)[0] + "/" if "/" in good else ""
    key += archive_name(when + timedelta(hours=1), "gzip")
    await storage.put(key, out.getvalue())
    return key


async def oversized_sidecar(storage: Storage, key: str, database: str) -> bytes:
    """The archive's own sidecar plus MAX_COLLECTIONS empty views: consistent, but
    more than a reader will hold (the old reader parsed 60 MB of this into 628 MB)."""
    doc = json.loads(await read(storage, manifest_key(key)))
    at_end = doc["manifest"]["offset"]
    for i in range(MAX_COLLECTIONS + 1):
        name = f"view{i:05}"
        doc["collections"].append(
            {
                "database": database,
                "name": name,
                "type": "view",
                "documents": 0,
                "bson_bytes": 0,
                "sha256": hashlib.sha256(b"").hexdigest(),
                "metadata": {
                    "name": f"dump/{database}/{name}.metadata.json",
                    "offset": at_end,
                    "end": at_end,
                    "size": 0,
                },
                "bson": None,
            }
        )
    return (json.dumps(doc, indent=2) + "\n").encode()


def cli(destination: Destination, *args: str) -> subprocess.CompletedProcess[str]:
    if destination.endpoint is None:
        return run_cli(*args)
    endpoint: Any = destination.endpoint
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=endpoint.access_key,
        AWS_SECRET_ACCESS_KEY=endpoint.secret_key,
    )
    flags = ["--endpoint-url", endpoint.endpoint_url, "--region", endpoint.region]
    return run_cli(*args, *flags, "--addressing-style", "path", env=env)


def clean_failure(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode not in (0, EXIT_INTERNAL), done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr


@pytest.mark.parametrize("kind", KINDS)
async def test_hostile_newest_archive_costs_one_archive(
    kind: str, destination: Destination, mongo_uri: str, seeded: str
) -> None:
    storage = destination.storage()
    good = await backup_at(at(1), mongo_uri, destination, seeded)
    hostile = await make_hostile(kind, storage, good, seeded)
    original = server_documents(mongo_uri, seeded, "users")
    base = hostile.rsplit("/", 1)[-1]

    listed = cli(destination, "list", destination.url)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if base in line)
    status = "incomplete" if kind.endswith("sidecar") else "complete"
    status = "legacy" if kind.startswith("legacy") else status
    assert status in row.split()

    checked = cli(destination, "verify", hostile, destination.url)
    clean_failure(checked)
    assert REPORTED[kind] in checked.stderr

    pruned = cli(destination, "prune", destination.url, "--keep-last", "5", "--dry-run")
    assert pruned.returncode == 0, pruned.stderr
    assert "Traceback" not in pruned.stderr

    with MongoClient(mongo_uri) as client:
        client[seeded].drop_collection("users")
    host = mongo_uri.split("://", 1)[1].rstrip("/")
    healed = cli(destination, "heal", destination.url, host, seeded, "users")
    assert healed.returncode == 0, healed.stderr
    # A fault of the whole archive skips it; one inside a collection's own range
    # fails that collection there, and heal takes it from the next archive.
    assert f"skipping archive {hostile}" in healed.stderr or (
        f"users not restored from {hostile}" in healed.stderr
    )
    assert "Traceback" not in healed.stderr
    assert sorted(server_documents(mongo_uri, seeded, "users")) == sorted(original)
    with MongoClient(mongo_uri) as client:
        names = client[seeded].list_collection_names()
    assert sorted(names) == ["orders", "users"]
