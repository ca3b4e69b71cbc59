"""End-to-end demo: a local FerretDB, a seeded database, backup and heal via ./demo-backups.

    ./scripts/demo          (sets everything up, then runs this file)

Starts the test bed's FerretDB, seeds a ``tsuru`` database, runs the
``mongosnap backup`` command exactly as cron would, lists the archive with
GNU tar, and checks every document in it against the server, byte for byte.
Then drops two collections, runs ``mongosnap heal`` as the legacy healer was
run, and checks they came back byte for byte with their indexes; finally
``mongosnap list`` and ``mongosnap verify``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

from pymongo import ASCENDING, MongoClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import testbed  # noqa: E402  (scripts/testbed.py builds and starts the servers)

OUT = ROOT / "demo-backups"


def seed(uri: str) -> None:
    with MongoClient(uri) as client:
        db = client.tsuru
        db.apps.insert_many(
            [
                {"name": f"app-{i}", "platform": "python", "units": i % 7, "pool": "prod"}
                for i in range(20000)
            ]
        )
        db.apps.create_index([("name", ASCENDING)], unique=True)
        db.users.insert_many(
            [{"email": f"user{i}@example.com", "teams": ["a", "b"]} for i in range(3000)]
        )
        db.repositories.insert_many(
            [{"app": f"app-{i}", "url": f"git@host:app-{i}.git"} for i in range(20000)]
        )


def split(data: bytes) -> list[bytes]:
    docs, at = [], 0
    while at < len(data):
        size = int.from_bytes(data[at : at + 4], "little")
        docs.append(data[at : at + size])
        at += size
    return docs


def run(*args: str) -> None:
    print("\n$ mongosnap", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "mongosnap", *args], check=True)


def documents(client: MongoClient[Any], name: str) -> list[bytes]:
    return sorted(split(b"".join(client.tsuru[name].find_raw_batches())))


def heal(uri: str, host: str) -> None:
    """Drop two collections, heal them, compare with what was there."""
    with MongoClient(uri) as client:
        before = {n: documents(client, n) for n in ("apps", "users")}
        indexes = sorted(ix["name"] for ix in client.tsuru.apps.list_indexes())
        client.tsuru.drop_collection("apps")
        client.tsuru.drop_collection("users")
        print("\ndropped tsuru.apps and tsuru.users")
        run("heal", str(OUT), host, "tsuru", "apps", "users", "repositories")
        for name, docs in before.items():
            same = documents(client, name) == docs
            print(f"{name:14} healed, byte-identical: {same}")
            if not same:
                raise SystemExit(f"{name}: healed collection differs")
        if sorted(ix["name"] for ix in client.tsuru.apps.list_indexes()) != indexes:
            raise SystemExit("apps: indexes differ after heal")
        print(f"apps indexes: {indexes}")


def main() -> None:
    with testbed.Testbed() as bed:
        host = bed.mongo_uri.split("://", 1)[1].rstrip("/")
        seed(bed.mongo_uri)
        OUT.mkdir(exist_ok=True)
        command = ["mongosnap", "backup", str(OUT), host, "tsuru"]
        print("$", " ".join(command), flush=True)
        subprocess.run([sys.executable, "-m", "mongosnap", *command[1:]], check=True)
        archive = sorted(OUT.glob("*-mongodb-dump.tar.gz"))[-1]
        print(f"\n$ tar -tzvf {archive.name}", flush=True)
        subprocess.run(["tar", "-tzvf", str(archive)], check=True)
        manifest = json.loads((OUT / f"{archive.name}.manifest.json").read_text())
        with tarfile.open(archive) as tar, MongoClient(bed.mongo_uri) as client:
            for entry in manifest["collections"]:
                name = entry["name"]
                member = tar.extractfile(f"dump/tsuru/{name}.bson")
                assert member is not None
                archived = split(member.read())
                live = split(b"".join(client.tsuru[name].find_raw_batches()))
                same = sorted(archived) == sorted(live)
                print(f"{name:14} {entry['documents']:>7} documents  byte-identical: {same}")
                if not same:
                    raise SystemExit(f"{name}: archive differs from the server")
        heal(bed.mongo_uri, host)
        run("list", str(OUT))
        run("verify", "latest", str(OUT))
        print(f"\narchive and manifest are in {OUT}/")


if __name__ == "__main__":
    main()
