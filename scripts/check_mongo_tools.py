"""Cross-check mongosnap against the real mongodump and mongorestore, both ways.

    .venv/bin/python scripts/check_mongo_tools.py DIR   # DIR holds mongodump, mongorestore

mongo-tools cannot be had from the package registries these machines reach
(docs/testbed.md), so this check is not part of the test suite: run it
wherever the two binaries exist. Against a fresh test bed FerretDB it checks:

1. mongosnap backup -> ``tar -xzf`` -> ``mongorestore --dir dump`` into another
   database: every document byte-identical to the source;
2. the legacy script's way, ``mongodump`` -> ``tar -czf dump``, read by
   ``mongosnap heal``: the dropped collection comes back byte-identical;
3. mongosnap's metadata.json files equal mongodump's for the same collections.

FerretDB 1.x refuses the ``ns`` index option mongorestore sends, so step 1
passes ``--noIndexRestore``; indexes are covered by mongosnap's own restore.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pymongo import ASCENDING, MongoClient

import mongosnap

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import testbed  # noqa: E402  (scripts/testbed.py builds and starts the servers)


def raw_documents(client: MongoClient[Any], database: str, name: str) -> list[bytes]:
    data = b"".join(client[database][name].find_raw_batches())
    out, at = [], 0
    while at < len(data):
        size = int.from_bytes(data[at : at + 4], "little")
        out.append(data[at : at + size])
        at += size
    return sorted(out)


def check(label: str, ok: bool) -> bool:
    print(f"{'ok  ' if ok else 'FAIL'} {label}")
    return ok


def main() -> int:
    tools = Path(sys.argv[1])
    testbed.build()
    results = []
    with testbed.Testbed() as bed, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        host = bed.mongo_uri.split("://", 1)[1].rstrip("/")
        client: MongoClient[Any] = MongoClient(bed.mongo_uri)
        db = client.compat
        db.apps.insert_many(
            [{"name": f"app-{i}", "units": i % 5, "tags": ["a"]} for i in range(500)]
        )
        db.apps.create_index([("name", ASCENDING)], unique=True)
        db.users.insert_many([{"email": f"u{i}@example.com"} for i in range(100)])
        names = ["apps", "users"]
        before = {n: raw_documents(client, "compat", n) for n in names}

        result = asyncio.run(mongosnap.backup(bed.mongo_uri, work / "store", database="compat"))
        subprocess.run(
            ["tar", "-xzf", str(work / "store" / result.archive_key), "-C", str(work)], check=True
        )
        subprocess.run(
            [
                str(tools / "mongorestore"),
                "--host",
                host,
                "--dir",
                str(work / "dump"),
                "--nsFrom",
                "compat.*",
                "--nsTo",
                "copy.*",
                "--noIndexRestore",
                "--quiet",
            ],
            check=True,
        )
        for n in names:
            results.append(
                check(
                    f"mongorestore of mongosnap's {n}: byte-identical",
                    raw_documents(client, "copy", n) == before[n],
                )
            )

        legacy = work / "legacy"
        subprocess.run(
            [
                str(tools / "mongodump"),
                "--host",
                host,
                "--db",
                "compat",
                "--out",
                str(legacy / "dump"),
                "--quiet",
            ],
            check=True,
        )
        for n in names:
            ours = (work / "dump" / "compat" / f"{n}.metadata.json").read_bytes()
            theirs = (legacy / "dump" / "compat" / f"{n}.metadata.json").read_bytes()
            results.append(check(f"metadata.json of {n} equals mongodump's", ours == theirs))
        store = work / "legacy-store"
        store.mkdir()
        subprocess.run(
            [
                "tar",
                "-czf",
                str(store / "2020-01-01-00-00-00-mongodb-dump.tar.gz"),
                "-C",
                str(legacy),
                "dump",
            ],
            check=True,
        )
        db.drop_collection("apps")
        report = asyncio.run(
            mongosnap.heal(bed.mongo_uri, store, database="compat", collections=names)
        )
        results.append(
            check(
                "heal from a mongodump + tar -czf archive",
                report.ok and raw_documents(client, "compat", "apps") == before["apps"],
            )
        )
        client.close()
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
