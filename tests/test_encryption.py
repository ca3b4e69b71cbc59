"""Encrypted archives through the commands: real FerretDB, real storage, the real
age CLI, tar and mongorestore (docs/encryption.md).

One module-scoped database of three ~1.2 MB incompressible collections and a
small one is backed up twice into a directory (an older and a newer encrypted
archive); each failure test works on its own copy of that directory.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bson import Binary
from helpers import run_cli, seed, server_documents, subprocess_env, tar_members
from pymongo import MongoClient
from testbed import bin_dir, mongo_tools_dir

import mongosnap
from mongosnap import Encryption, Keys, list_archives
from mongosnap.archive.manifest import Manifest, parse_archive_name
from mongosnap.catalog import ArchiveStatus, archive_codec
from mongosnap.pipelines.staging import TEMP_PREFIX

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

BIG = ("alpha", "bravo", "charlie")
BIG_DOCS = 300
DOC_BYTES = 4000  # random: the gzip stream is as large as the data


def age_tool(name: str) -> str:
    """The real age CLI the test bed builds; missing fails the test, never skips it."""
    path = bin_dir() / name
    assert path.is_file(), f"{path} missing: run scripts/setup (the test bed builds age)"
    return str(path)


@dataclass(frozen=True)
class Fixture:
    uri: str
    database: str
    root: Path
    """Two encrypted archives of ``database`` (older, newer)."""
    archives: tuple[str, str]
    key: Path
    recipient: str
    wrong_key: Path
    documents: dict[str, list[bytes]]


def _keygen(path: Path) -> str:
    subprocess.run([age_tool("age-keygen"), "-o", str(path)], check=True, capture_output=True)
    out = subprocess.run(
        [age_tool("age-keygen"), "-y", str(path)], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def _seed_big(uri: str, database: str) -> None:
    seed(uri, database, {"small": 40})
    with MongoClient(uri) as client:
        for name in BIG:
            client[database][name].insert_many(
                [{"_id": i, "blob": Binary(os.urandom(DOC_BYTES))} for i in range(BIG_DOCS)]
            )


@pytest.fixture(scope="module")
def enc(mongo_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixture]:
    database = f"enc_{uuid.uuid4().hex[:10]}"
    work = tmp_path_factory.mktemp("enc")
    key, wrong = work / "key.txt", work / "wrong.txt"
    recipient = _keygen(key)
    _keygen(wrong)
    _seed_big(mongo_uri, database)
    root = work / "backups"
    encryption = Encryption([recipient])
    keys = []
    for _ in range(2):
        report = asyncio.run(
            mongosnap.backup(mongo_uri, str(root), database=database, encryption=encryption)
        )
        keys.append(report.archive_key)
    documents = {n: server_documents(mongo_uri, database, n) for n in (*BIG, "small")}
    try:
        yield Fixture(
            mongo_uri, database, root, (keys[0], keys[1]), key, recipient, wrong, documents
        )
    finally:
        with MongoClient(mongo_uri) as client:
            client.drop_database(database)


@pytest.fixture
def copy(enc: Fixture, tmp_path: Path) -> Iterator[Path]:
    """A copy of the two archives' directory, for a test to damage; the
    restore targets a test names (``<database>_t``, ``_y``) dropped after it."""
    target = tmp_path / "backups"
    shutil.copytree(enc.root, target)
    yield target
    with MongoClient(enc.uri) as client:
        for suffix in ("_t", "_y"):
            client.drop_database(enc.database + suffix)


def _drop(enc: Fixture, *names: str) -> None:
    with MongoClient(enc.uri) as client:
        for name in names:
            client[enc.database].drop_collection(name)


def _names(enc: Fixture) -> list[str]:
    with MongoClient(enc.uri) as client:
        return client[enc.database].list_collection_names()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=subprocess_env())


def _sealed_manifest(enc: Fixture, root: Path, archive: str) -> Manifest:
    plain = subprocess.run(
        [age_tool("age"), "-d", "-i", str(enc.key), str(root / f"{archive}.manifest.json.age")],
        check=True,
        capture_output=True,
    ).stdout
    return Manifest.from_json(plain.split(b"\n", 1)[1])


# ------------------------------------------------------------------ names


def test_encrypted_names_are_archives_of_the_same_kind() -> None:
    key = "nightly/2026-03-01-02-03-04-mongodb-dump.tar.gz.age"
    assert parse_archive_name(key) == parse_archive_name(key.removesuffix(".age"))
    assert archive_codec(key) == "gzip"
    assert archive_codec(key.replace(".tar.gz", ".tar.zst")) == "zstd"
    assert archive_codec(key.replace(".tar.gz", ".tar")) == "none"
    assert archive_codec(key + ".manifest.json.age") is None


# ---------------------------------------------------- standard tools, clear


def test_age_tar_and_mongorestore_open_an_encrypted_archive(enc: Fixture, tmp_path: Path) -> None:
    archive = enc.root / enc.archives[1]
    assert archive.name.endswith(".tar.gz.age")
    plain = subprocess.run(
        [age_tool("age"), "-d", "-i", str(enc.key), str(archive)], check=True, capture_output=True
    ).stdout
    members = tar_members(plain)
    sealed = _sealed_manifest(enc, enc.root, enc.archives[1])
    assert members["mongosnap/manifest.json"] == sealed.to_json()  # embedded == sealed
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-xz", "-C", str(out)], input=plain, check=True)
    target = f"{enc.database}_mr"
    restore = subprocess.run(
        [
            str(mongo_tools_dir() / "mongorestore"),
            f"--uri={enc.uri}",
            "--dir",
            str(out / "dump"),
            f"--nsFrom={enc.database}.*",
            f"--nsTo={target}.*",
            "--noIndexRestore",  # FerretDB refuses the ns option it sends with a rename
        ],
        capture_output=True,
        text=True,
    )
    try:
        assert restore.returncode == 0, restore.stderr
        for name, documents in enc.documents.items():
            assert server_documents(enc.uri, target, name) == documents, name
    finally:
        with MongoClient(enc.uri) as client:
            client.drop_database(target)


def test_clear_sidecar_holds_no_collection_name_and_hashes_the_ciphertext(enc: Fixture) -> None:
    archive = enc.archives[1]
    clear = (enc.root / f"{archive}.manifest.json").read_bytes()
    for name in (*BIG, "small", "metadata", "bson"):
        assert name.encode() not in clear, name
    data = json.loads(clear)
    ciphertext = (enc.root / archive).read_bytes()
    assert data["encrypted"] is True and data["databases"] == [enc.database]
    assert data["age"]["sha256"] == hashlib.sha256(ciphertext).hexdigest()
    assert data["totals"]["encrypted_bytes"] == len(ciphertext)
    assert ciphertext[: data["age"]["header_bytes"]].endswith(b"\n")
    assert ciphertext[: data["age"]["header_bytes"]].count(b"\n--- ") == 1


def test_list_check_and_verify_no_decrypt_need_no_key(enc: Fixture) -> None:
    listed = _cli("list", str(enc.root), "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    rows = rows["archives"] if isinstance(rows, dict) else rows
    assert [(r["status"], r["encrypted"], r["databases"]) for r in rows] == [
        ("complete", True, [enc.database])
    ] * 2
    check = _cli("check", str(enc.root), enc.database, "--max-age", "1h")
    assert check.returncode == 0, check.stdout + check.stderr
    verified = _cli("verify", "latest", str(enc.root), "--no-decrypt", "--json")
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["ok"] is True


def test_verify_decrypts_and_checks_every_collection(enc: Fixture) -> None:
    done = _cli("verify", "latest", str(enc.root), "--identity", str(enc.key), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert sorted(c["name"] for c in report["collections"]) == sorted((*BIG, "small"))
    assert report["documents"] == 3 * BIG_DOCS + 40


# ------------------------------------------------------------ ranged heal


@pytest.mark.parametrize("kind", ["moto", "versitygw"])
def test_heal_fetches_only_the_vanished_member(
    enc: Fixture, kind: str, testbed: Any, new_bucket: Any
) -> None:
    from faultproxy import FaultProxy
    from helpers import s3_client, s3_config

    endpoint = testbed.s3[kind]
    bucket = new_bucket(endpoint)
    client = s3_client(endpoint)
    for path in sorted(enc.root.iterdir()):  # the newer archive only: one to search
        if path.name.startswith(enc.archives[1]):
            client.put_object(Bucket=bucket, Key=f"n/{path.name}", Body=path.read_bytes())
    entry = next(
        e for e in _sealed_manifest(enc, enc.root, enc.archives[1]).collections if e.name == "bravo"
    )
    assert entry.bson is not None and entry.bson.size >= 1_000_000
    share = (entry.bson.end - entry.metadata.offset) * (65536 + 16) / 65536
    _drop(enc, "bravo")
    port = int(endpoint.endpoint_url.rsplit(":", 1)[1])
    with FaultProxy(("127.0.0.1", port)) as proxy:
        report = asyncio.run(
            mongosnap.heal(
                enc.uri,
                f"s3://{bucket}/n",
                database=enc.database,
                collections=["bravo", "alpha"],
                s3=s3_config(endpoint, endpoint_url=f"http://{proxy.address}"),
                keys=Keys([enc.key]),
            )
        )
        fetched = proxy.counters.bytes_down
    assert report.ok and [o.name for o in report.restored] == ["bravo"], report
    assert server_documents(enc.uri, enc.database, "bravo") == enc.documents["bravo"]
    print(f"{kind}: heal fetched {fetched} bytes for a member share of {share:.0f}")
    assert fetched <= 1.1 * share, (fetched, share)


# ---------------------------------------------------------- failure paths


def _heal_cli(enc: Fixture, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    host = enc.uri.split("://", 1)[1].rstrip("/")
    return _cli("heal", str(root), host, enc.database, "bravo", "--json", *extra)


def test_heal_without_a_key_stops_before_staging_and_names_the_flags(
    enc: Fixture, copy: Path
) -> None:
    _drop(enc, "bravo")
    done = _heal_cli(enc, copy)
    assert done.returncode == 61, done.stderr
    assert "--identity" in done.stderr and "--passphrase-file" in done.stderr
    assert "Traceback" not in done.stderr
    assert not [n for n in _names(enc) if n == "bravo" or n.startswith(TEMP_PREFIX)]


def test_heal_with_a_wrong_key_stops(enc: Fixture, copy: Path) -> None:
    _drop(enc, "bravo")
    done = _heal_cli(enc, copy, "--identity", str(enc.wrong_key))
    assert done.returncode == 61, done.stderr
    assert not [n for n in _names(enc) if n == "bravo" or n.startswith(TEMP_PREFIX)]


def _member_offset(enc: Fixture, root: Path, archive: str, name: str) -> int:
    """A ciphertext offset inside collection ``name``'s data member."""
    entry = next(e for e in _sealed_manifest(enc, root, archive).collections if e.name == name)
    assert entry.bson is not None
    middle = (entry.bson.offset + entry.bson.end) // 2
    header = json.loads((root / f"{archive}.manifest.json").read_bytes())["age"]["header_bytes"]
    return header + 16 + (middle // 65536) * (65536 + 16) + middle % 65536


def test_a_tampered_chunk_fails_the_collection_and_heal_goes_on(enc: Fixture, copy: Path) -> None:
    newer = copy / enc.archives[1]
    data = bytearray(newer.read_bytes())
    data[_member_offset(enc, copy, enc.archives[1], "bravo")] ^= 0x01
    newer.write_bytes(bytes(data))
    restore = _cli(
        "restore", enc.archives[1], str(copy), enc.uri.split("://", 1)[1].rstrip("/"),
        enc.database, "--collection", "bravo", "--to-database", f"{enc.database}_t",
        "--identity", str(enc.key),
    )  # fmt: skip
    assert restore.returncode == 42, restore.stderr
    assert "DecryptionFailed" in restore.stderr or "authenticat" in restore.stderr
    with MongoClient(enc.uri) as client:  # nothing published from unauthenticated bytes
        assert client[f"{enc.database}_t"].list_collection_names() == []
    _drop(enc, "bravo")
    healed = _heal_cli(enc, copy, "--identity", str(enc.key))
    assert healed.returncode == 0, healed.stderr
    assert f"bravo not restored from {enc.archives[1]}" in healed.stderr
    assert json.loads(healed.stdout)["restored"][0]["archive"] == enc.archives[0]
    assert server_documents(enc.uri, enc.database, "bravo") == enc.documents["bravo"]


def test_a_truncated_archive_is_skipped_even_with_its_clear_sidecar_rewritten(
    enc: Fixture, copy: Path
) -> None:
    newer = copy / enc.archives[1]
    cut = newer.read_bytes()[:-5000]
    newer.write_bytes(cut)
    statuses = [a.status for a in asyncio.run(list_archives(str(copy)))]
    assert statuses == [ArchiveStatus.INCOMPLETE, ArchiveStatus.COMPLETE]
    side = copy / f"{enc.archives[1]}.manifest.json"  # an attacker fixes size and hash
    clear = json.loads(side.read_bytes())
    clear["totals"]["encrypted_bytes"] = len(cut)
    clear["age"]["sha256"] = hashlib.sha256(cut).hexdigest()
    side.write_text(json.dumps(clear, indent=2))
    _drop(enc, "bravo")
    healed = _heal_cli(enc, copy, "--identity", str(enc.key))
    assert healed.returncode == 0, healed.stderr
    assert f"skipping archive {enc.archives[1]}" in healed.stderr
    assert "other ciphertext" in healed.stderr
    assert server_documents(enc.uri, enc.database, "bravo") == enc.documents["bravo"]


def test_a_swapped_sealed_sidecar_is_refused(enc: Fixture, copy: Path) -> None:
    older, newer = (copy / f"{a}.manifest.json.age" for a in enc.archives)
    newer.write_bytes(older.read_bytes())
    done = _cli("verify", enc.archives[1], str(copy), "--identity", str(enc.key))
    assert done.returncode == 34, done.stderr
    assert "sealed manifest" in done.stderr and "Traceback" not in done.stderr
    _drop(enc, "bravo")
    healed = _heal_cli(enc, copy, "--identity", str(enc.key))
    assert healed.returncode == 0, healed.stderr
    assert f"skipping archive {enc.archives[1]}" in healed.stderr
    assert server_documents(enc.uri, enc.database, "bravo") == enc.documents["bravo"]


def test_an_archive_of_another_database_under_the_right_name_is_refused(
    enc: Fixture, copy: Path, tmp_path: Path
) -> None:
    other = f"{enc.database}_x"
    seed(enc.uri, other, {"bravo": 5})
    try:
        theirs = tmp_path / "other"
        report = asyncio.run(
            mongosnap.backup(
                enc.uri, str(theirs), database=other, encryption=Encryption([enc.recipient])
            )
        )
    finally:
        with MongoClient(enc.uri) as client:
            client.drop_database(other)
    name = enc.archives[1]
    shutil.copy(theirs / report.archive_key, copy / name)
    shutil.copy(
        theirs / f"{report.archive_key}.manifest.json.age", copy / f"{name}.manifest.json.age"
    )
    clear = json.loads((theirs / f"{report.archive_key}.manifest.json").read_bytes())
    clear["archive"], clear["databases"] = name, [enc.database]  # the clear part lies
    (copy / f"{name}.manifest.json").write_text(json.dumps(clear, indent=2))
    host = enc.uri.split("://", 1)[1].rstrip("/")
    restore = _cli(
        "restore", name, str(copy), host, enc.database, "--to-database", f"{enc.database}_y",
        "--identity", str(enc.key),
    )  # fmt: skip
    assert restore.returncode == 34, restore.stderr
    assert "sealed manifest" in restore.stderr
    _drop(enc, "bravo")
    healed = _heal_cli(enc, copy, "--identity", str(enc.key))
    assert healed.returncode == 0, healed.stderr
    assert f"skipping archive {name}" in healed.stderr
    assert server_documents(enc.uri, enc.database, "bravo") == enc.documents["bravo"]


def test_verify_reports_a_tampered_archive_with_and_without_its_key(
    enc: Fixture, copy: Path
) -> None:
    newer = copy / enc.archives[1]
    data = bytearray(newer.read_bytes())
    data[_member_offset(enc, copy, enc.archives[1], "alpha")] ^= 0x80
    newer.write_bytes(bytes(data))
    blind = _cli("verify", enc.archives[1], str(copy), "--no-decrypt")
    assert blind.returncode == 31, blind.stderr
    keyed = _cli("verify", enc.archives[1], str(copy), "--identity", str(enc.key))
    assert keyed.returncode == 62, keyed.stderr
    nokey = _cli("verify", enc.archives[1], str(copy))
    assert nokey.returncode == 61 and "--identity" in nokey.stderr, nokey.stderr


def test_a_tampered_manifest_chunk_skips_the_archive(enc: Fixture, copy: Path) -> None:
    newer = copy / enc.archives[1]
    data = bytearray(newer.read_bytes())
    data[-100] ^= 0x01  # the last chunk: the embedded manifest's
    newer.write_bytes(bytes(data))
    _drop(enc, "bravo")
    healed = _heal_cli(enc, copy, "--identity", str(enc.key))
    assert healed.returncode == 0, healed.stderr
    assert f"skipping archive {enc.archives[1]}" in healed.stderr
    assert server_documents(enc.uri, enc.database, "bravo") == enc.documents["bravo"]


def test_prune_deletes_all_three_objects_and_sees_an_orphan_sealed_sidecar(
    enc: Fixture, copy: Path
) -> None:
    older = enc.archives[0]
    (copy / older).unlink()
    (copy / f"{older}.manifest.json").unlink()
    listed = _cli("list", str(copy), "--leftovers", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(x["key"], x["kind"], x["archive"]) for x in json.loads(listed.stdout)] == [
        (f"{older}.manifest.json.age", "orphan sidecar", older)
    ]
    info = next(a for a in asyncio.run(list_archives(str(copy))) if a.key == enc.archives[1])
    from mongosnap.pipelines.prune import delete_archive
    from mongosnap.storage import LocalStorage

    asyncio.run(delete_archive(LocalStorage(str(copy)), info))
    assert sorted(p.name for p in copy.iterdir()) == [f"{older}.manifest.json.age"]
