"""AWS KMS as a recipient of encrypted archives, on moto's KMS (docs/encryption.md).

One module-scoped database is backed up into a directory encrypted to a KMS
key and an X25519 key; restores read it with ``--kms`` alone, with the age
key alone, and with neither. A wrong key id and a disabled key are refused
with KmsError (64). The file key KMS unwraps never shows in any output.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from helpers import run_cli, seed, server_documents, subprocess_env
from pymongo import MongoClient
from test_encryption import _keygen

from mongosnap.crypto.header import Header, b64decode
from mongosnap.crypto.kms import ENCRYPTION_CONTEXT, STANZA_TYPE

COLLECTIONS = {"users": 30, "orders": 20}


@dataclass(frozen=True)
class Kms:
    client: Any
    env: dict[str, str]

    def new_key(self) -> str:
        return str(self.client.create_key(Description="mongosnap test")["KeyMetadata"]["KeyId"])


@pytest.fixture(scope="module")
def kms(testbed: Any) -> Kms:
    moto = testbed.s3["moto"]  # moto's server answers every AWS service on one endpoint
    client = botocore.session.get_session().create_client(
        "kms",
        endpoint_url=moto.endpoint_url,
        region_name=moto.region,
        aws_access_key_id=moto.access_key,
        aws_secret_access_key=moto.secret_key,
    )
    env = subprocess_env(
        AWS_ENDPOINT_URL_KMS=moto.endpoint_url,
        AWS_ACCESS_KEY_ID=moto.access_key,
        AWS_SECRET_ACCESS_KEY=moto.secret_key,
        AWS_DEFAULT_REGION=moto.region,
    )
    return Kms(client, env)


@dataclass(frozen=True)
class Backed:
    uri: str
    host: str
    database: str
    root: Path
    archive: str
    key_id: str
    identity: Path
    documents: dict[str, list[bytes]]


def _cli(kms: Kms, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=kms.env)


@pytest.fixture(scope="module")
def backed(mongo_uri: str, kms: Kms, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backed]:
    database = f"kms_{uuid.uuid4().hex[:10]}"
    work = tmp_path_factory.mktemp("kms")
    identity = work / "key.txt"
    recipient = _keygen(identity)
    key_id = kms.new_key()
    seed(mongo_uri, database, COLLECTIONS)
    host = mongo_uri.split("://", 1)[1].rstrip("/")
    root = work / "backups"
    done = _cli(
        kms, "backup", str(root), host, database, "--json",
        "--kms-key-id", key_id, "--encrypt-to", recipient,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    archive = json.loads(done.stdout)["archive_key"]
    documents = {n: server_documents(mongo_uri, database, n) for n in COLLECTIONS}
    try:
        yield Backed(mongo_uri, host, database, root, archive, key_id, identity, documents)
    finally:
        with MongoClient(mongo_uri) as client:
            client.drop_database(database)


def _header(path: Path) -> Header:
    return Header.parse(path.read_bytes()[:8192])[0]


def _restore(kms: Kms, b: Backed, target: str, *keys: str) -> subprocess.CompletedProcess[str]:
    return _cli(
        kms, "restore", b.archive, str(b.root), b.host, b.database,
        "--to-database", target, "--json", *keys,
    )  # fmt: skip


def _restored(b: Backed, target: str) -> dict[str, list[bytes]]:
    try:
        return {n: server_documents(b.uri, target, n) for n in COLLECTIONS}
    finally:
        with MongoClient(b.uri) as client:
            client.drop_database(target)


def test_the_header_holds_a_kms_stanza_naming_the_key(backed: Backed) -> None:
    header = _header(backed.root / backed.archive)
    kms_stanzas = [s for s in header.stanzas if s.type == STANZA_TYPE]
    assert sorted(s.type for s in header.stanzas) == sorted(["X25519", STANZA_TYPE])
    assert b64decode(kms_stanzas[0].args[0]).decode() == backed.key_id
    sealed = _header(backed.root / f"{backed.archive}.manifest.json.age")
    assert STANZA_TYPE in [s.type for s in sealed.stanzas]


@pytest.mark.parametrize("how", ["kms", "identity"])
def test_restore_with_kms_or_the_age_key_is_byte_identical(
    kms: Kms, backed: Backed, how: str, tmp_path: Path
) -> None:
    target = f"{backed.database}_{how}"
    keys = ["--kms"] if how == "kms" else ["--identity", str(backed.identity)]
    done = _restore(kms, backed, target, *keys)
    assert done.returncode == 0, done.stderr
    assert _restored(backed, target) == backed.documents


def test_restore_without_a_key_names_kms(kms: Kms, backed: Backed) -> None:
    done = _restore(kms, backed, f"{backed.database}_none")
    assert done.returncode == 61, done.stderr
    assert "--kms" in done.stderr
    with MongoClient(backed.uri) as client:
        assert f"{backed.database}_none" not in client.list_database_names()


def test_a_kms_only_archive_restores_and_the_age_key_does_not_open_it(
    kms: Kms, backed: Backed, tmp_path: Path
) -> None:
    key_id = kms.new_key()
    root = tmp_path / "backups"
    done = _cli(kms, "backup", str(root), backed.host, backed.database, "--json",
                "--kms-key-id", key_id)  # fmt: skip
    assert done.returncode == 0, done.stderr
    archive = json.loads(done.stdout)["archive_key"]
    assert [s.type for s in _header(root / archive).stanzas] == [STANZA_TYPE]
    only = Backed(**{**backed.__dict__, "root": root, "archive": archive})
    refused = _restore(kms, only, f"{backed.database}_x", "--identity", str(backed.identity))
    assert refused.returncode == 61, refused.stderr
    target = f"{backed.database}_kmsonly"
    done = _restore(kms, only, target, "--kms")
    assert done.returncode == 0, done.stderr
    assert _restored(backed, target) == backed.documents


@pytest.mark.parametrize("key_id", ["alias/mongosnap-no-such-key", "00000000-0000-0000-0000-0"])
def test_backup_to_an_unknown_kms_key_fails_before_writing(
    kms: Kms, backed: Backed, key_id: str, tmp_path: Path
) -> None:
    root = tmp_path / "backups"
    done = _cli(kms, "backup", str(root), backed.host, backed.database, "--kms-key-id", key_id)
    assert done.returncode == 64, done.stderr
    assert "not found" in done.stderr and "Traceback" not in done.stderr
    assert not root.exists() or not any(root.iterdir())


def test_a_disabled_key_refuses_backup_and_restore(
    kms: Kms, backed: Backed, tmp_path: Path
) -> None:
    key_id = kms.new_key()
    root = tmp_path / "backups"
    done = _cli(kms, "backup", str(root), backed.host, backed.database, "--json",
                "--kms-key-id", key_id)  # fmt: skip
    assert done.returncode == 0, done.stderr
    archive = json.loads(done.stdout)["archive_key"]
    kms.client.disable_key(KeyId=key_id)
    only = Backed(**{**backed.__dict__, "root": root, "archive": archive})
    target = f"{backed.database}_disabled"
    refused = _restore(kms, only, target, "--kms")
    assert refused.returncode == 64, refused.stderr
    assert "disabled" in refused.stderr
    with MongoClient(backed.uri) as client:
        assert target not in client.list_database_names()
    again = _cli(kms, "backup", str(tmp_path / "b2"), backed.host, backed.database,
                 "--kms-key-id", key_id)  # fmt: skip
    assert again.returncode == 64, again.stderr
    assert "disabled" in again.stderr


def test_the_kms_file_key_never_shows(kms: Kms, backed: Backed) -> None:
    stanza = next(s for s in _header(backed.root / backed.archive).stanzas if s.type == STANZA_TYPE)
    file_key = kms.client.decrypt(
        CiphertextBlob=stanza.body, KeyId=backed.key_id, EncryptionContext=ENCRYPTION_CONTEXT
    )["Plaintext"]
    forms = {
        file_key.hex(),
        file_key.hex().upper(),
        base64.b64encode(file_key).decode().rstrip("="),
        base64.urlsafe_b64encode(file_key).decode().rstrip("="),
        repr(file_key)[2:-1],
    }
    target = f"{backed.database}_canary"
    outputs = [
        _restore(kms, backed, target, "--kms", "-vv"),
        _cli(kms, "verify", backed.archive, str(backed.root), "--kms", "--json", "-vv"),
        _cli(
            kms,
            "heal",
            str(backed.root),
            backed.host,
            backed.database,
            "users",
            "--kms",
            "--json",
            "-vv",
        ),
    ]
    _restored(backed, target)
    for done in outputs:
        assert done.returncode == 0, done.stderr
        for form in forms:
            assert form not in done.stdout + done.stderr


def test_rekey_adds_and_removes_a_kms_key(kms: Kms, backed: Backed, tmp_path: Path) -> None:
    root = tmp_path / "backups"
    shutil.copytree(backed.root, root)
    copy = Backed(**{**backed.__dict__, "root": root})
    other = kms.new_key()
    added = _cli(kms, "rekey", str(root), backed.archive, "--identity", str(backed.identity),
                 "--kms-key-id", other, "--json")  # fmt: skip
    assert added.returncode == 0, added.stderr
    named = [
        b64decode(s.args[0]).decode()
        for s in _header(root / backed.archive).stanzas
        if s.type == STANZA_TYPE
    ]
    assert sorted(named) == sorted([backed.key_id, other])
    removed = _cli(kms, "rekey", str(root), backed.archive, "--identity", str(backed.identity),
                   "--remove-recipient", backed.key_id, "--remove-recipient", other)  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    assert [s.type for s in _header(root / backed.archive).stanzas] == ["X25519"]
    refused = _restore(kms, copy, f"{backed.database}_rekeyed", "--kms")
    assert refused.returncode == 61, refused.stderr
