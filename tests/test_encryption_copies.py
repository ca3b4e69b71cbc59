"""Encrypted archives in a second place: ``backup --also`` tees the ciphertext
(one encryption, the same three objects at every destination) and ``copy``
moves an encrypted archive with no key, checking it at the target by its
ciphertext SHA-256. Real FerretDB, local directories and moto."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli, seed, server_documents
from pymongo import MongoClient

from mongosnap.archive.manifest import manifest_key, sealed_key
from mongosnap.crypto.keys import X25519Identity


def _host(uri: str) -> str:
    return uri.split("://", 1)[1].rstrip("/")


def _key(tmp_path: Path) -> tuple[Path, str]:
    identity = X25519Identity.generate()
    key = tmp_path / "key.txt"
    key.write_text(identity.export() + "\n")
    return key, str(identity.recipient)


def _objects(root: Path, archive: str) -> dict[str, bytes]:
    return {
        n: (root / n).read_bytes() for n in (archive, sealed_key(archive), manifest_key(archive))
    }


@pytest.fixture
def encrypted(tmp_path: Path, mongo_uri: str, new_database: str) -> dict[str, Any]:
    """An encrypted backup written to two directories in one dump (--also)."""
    seed(mongo_uri, new_database, {"apps": 20, "users": 200})
    key, recipient = _key(tmp_path)
    first, second = tmp_path / "first", tmp_path / "second"
    done = run_cli(
        "backup", str(first), _host(mongo_uri), new_database, "--encrypt-to", recipient,
        "--also", str(second), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [m["complete"] for m in report["also"]] == [True]
    return {"key": key, "first": first, "second": second, "archive": report["archive_key"]}


def test_also_writes_the_same_encrypted_archive_and_both_sidecars(
    encrypted: dict[str, Any], mongo_uri: str, new_database: str
) -> None:
    archive = encrypted["archive"]
    assert archive.endswith(".tar.gz.age")
    assert _objects(encrypted["second"], archive) == _objects(encrypted["first"], archive)
    before = sorted(server_documents(mongo_uri, new_database, "users"))
    with MongoClient(mongo_uri) as client:
        client[new_database].drop_collection("users")
    healed = run_cli(
        "heal", str(encrypted["second"]), _host(mongo_uri), new_database, "users",
        "--identity", str(encrypted["key"]),
    )  # fmt: skip
    assert healed.returncode == 0, healed.stderr
    assert sorted(server_documents(mongo_uri, new_database, "users")) == before


def test_copy_moves_an_encrypted_archive_without_a_key(
    encrypted: dict[str, Any], tmp_path: Path
) -> None:
    archive, third = encrypted["archive"], tmp_path / "third"
    done = run_cli("copy", str(encrypted["first"]), str(third), "--all", "--json")
    assert done.returncode == 0, done.stderr
    assert _objects(third, archive) == _objects(encrypted["first"], archive)
    again = run_cli("copy", str(encrypted["first"]), str(third), "--all", "--json")
    assert again.returncode == 0, again.stderr
    assert [a["outcome"] for a in json.loads(again.stdout)["archives"]] == ["skipped"]
    verified = run_cli("verify", "latest", str(third), "--identity", str(encrypted["key"]))
    assert verified.returncode == 0, verified.stderr


def test_copy_refuses_an_encrypted_archive_that_changed_on_its_way(
    encrypted: dict[str, Any], tmp_path: Path
) -> None:
    """A source object that no longer matches its clear sidecar's hash is not
    left at the target looking like a copy."""
    archive, third = encrypted["archive"], tmp_path / "third"
    path = encrypted["first"] / archive
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))
    done = run_cli("copy", str(encrypted["first"]), str(third), "--all")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert not (third / archive).exists() and not (third / manifest_key(archive)).exists()
