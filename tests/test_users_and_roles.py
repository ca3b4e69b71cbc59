"""backup/restore --users-and-roles against the authenticated FerretDB.

FerretDB 1.24 keeps users in ``admin.system.users`` (createUser, usersInfo,
find and insert work), has no roles (no createRole/rolesInfo: system.roles is
empty) and no authSchema document in ``admin.system.version``. The layout is
checked with the real bsondump and mongorestore (docs/operations.md says what
mongorestore --restoreDbUsersAndRoles does with it on FerretDB).
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pytest
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from helpers import run_cli, split_bson, tar_members
from pymongo import MongoClient

from mongosnap import backup, verify

TOOLS = Path(__file__).resolve().parents[1] / ".." / "shared" / "mongo-tools" / "bin"
PASSWORDS = {"alice": "Al1ceUserPw-x81", "bob": "B0bUserPw-q27"}


def tools() -> Path:
    for candidate in (TOOLS, Path("/work/shared/mongo-tools/bin")):
        if (candidate / "bsondump").exists():
            return candidate
    raise RuntimeError("mongo-tools (bsondump, mongorestore) not found: see docs/testbed.md")


@pytest.fixture(scope="module")
def accounts(mongo_auth_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A database with two users and a collection, backed up once with its users."""
    database = f"mongosnap_users_{uuid.uuid4().hex[:10]}"
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_auth_uri)
    client[database].items.insert_many([{"i": i} for i in range(5)])
    for user, password in PASSWORDS.items():
        client[database].command({"createUser": user, "pwd": password, "roles": []})
    root = tmp_path_factory.mktemp("users") / "backups"
    done = run_cli(
        "backup", str(root), "--uri", mongo_auth_uri, database, "--users-and-roles", "--json"
    )
    assert done.returncode == 0, done.stderr
    try:
        yield client, database, root, json.loads(done.stdout), done
    finally:
        client[database].command({"dropAllUsersFromDatabase": 1})
        client.drop_database(database)
        client.close()


def server_users(client: MongoClient[Any], database: str) -> list[bytes]:
    raw = client.get_database("admin", codec_options=CodecOptions(document_class=RawBSONDocument))
    return [d.raw for d in raw["system.users"].find({"db": database}, sort=[("_id", 1)])]


def by_name(users: list[bytes]) -> dict[str, bytes]:
    return {bson.decode(u)["user"]: u for u in users}


def archive_members(root: Path, report: dict[str, Any]) -> dict[str, bytes]:
    return tar_members((root / report["archive_key"]).read_bytes())


def test_backup_stores_users_in_mongodumps_layout(accounts: Any) -> None:
    client, database, root, report, _ = accounts
    members = archive_members(root, report)
    users = members[f"dump/{database}/$admin.system.users.bson"]
    assert split_bson(users) == server_users(client, database)  # byte for byte, _id order
    assert members[f"dump/{database}/$admin.system.roles.bson"] == b""  # FerretDB: no roles
    assert f"dump/{database}/$admin.system.version.bson" in members
    assert report["users"] == {"users": 2, "roles": 0}
    manifest = json.loads(members["mongosnap/manifest.json"])
    assert [u["collection"] for u in manifest["users"]] == [
        "system.users",
        "system.roles",
        "system.version",
    ]
    assert run_cli("verify", "latest", str(root)).returncode == 0


def test_bsondump_reads_the_users_file(accounts: Any, tmp_path: Path) -> None:
    _, database, root, report, _ = accounts
    path = tmp_path / "$admin.system.users.bson"
    path.write_bytes(archive_members(root, report)[f"dump/{database}/$admin.system.users.bson"])
    done = subprocess.run(
        [str(tools() / "bsondump"), str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    users = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(u["_id"] for u in users) == [f"{database}.alice", f"{database}.bob"]
    assert all("SCRAM-SHA-256" in u["credentials"] for u in users)


def test_mongorestore_finds_the_users_file_but_ferretdb_has_no_auth_schema(
    accounts: Any, tmp_path: Path, mongo_auth_uri: str
) -> None:
    """mongorestore --restoreDbUsersAndRoles reads the layout; it stops on the
    missing authSchema document, as it does on a dump mongodump made of FerretDB."""
    _, database, root, report, _ = accounts
    folder = tmp_path / database
    folder.mkdir()
    for name, data in archive_members(root, report).items():
        if name.startswith(f"dump/{database}/"):
            (folder / name.rsplit("/", 1)[1]).write_bytes(data)
    done = subprocess.run(
        [
            str(tools() / "mongorestore"),
            "--uri",
            mongo_auth_uri + "?authSource=admin",
            "--db",
            database + "_copy",
            "--restoreDbUsersAndRoles",
            "--dir",
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "system.version bson file does not have authSchema document" in done.stderr


def test_restore_puts_a_dropped_user_back_and_leaves_an_existing_one_alone(
    accounts: Any, mongo_auth_uri: str
) -> None:
    client, database, root, _, _ = accounts
    before = server_users(client, database)
    client[database].command({"dropUser": "alice"})
    client[database].command({"updateUser": "bob", "pwd": "B0bChanged-77"})  # since the backup
    bob_now = by_name(server_users(client, database))["bob"]
    args = ["restore", "latest", str(root), "--uri", mongo_auth_uri, database]
    done = run_cli(*args, "--drop", "--users-and-roles", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["users"] == {
        "restored": [f"user {database}.alice"],
        "existing": [f"user {database}.bob"],
    }
    after = by_name(server_users(client, database))
    assert after["alice"] == by_name(before)["alice"]  # as stored: SCRAM keys and all
    assert after["bob"] == bob_now  # not overwritten with the archive's
    host = mongo_auth_uri.rsplit("@", 1)[1]
    alice: MongoClient[Any] = MongoClient(
        f"mongodb://alice:{PASSWORDS['alice']}@{host}{database}", serverSelectionTimeoutMS=5000
    )
    try:  # she logs in with the password she had: her SCRAM keys came back as they were
        assert alice[database].items.count_documents({}) == 5
    finally:
        alice.close()
    again = run_cli(*args, "--drop", "--users-and-roles")
    assert again.returncode == 0, again.stderr
    assert f"user {database}.alice exists (left alone)" in again.stdout


def test_restore_without_the_flag_leaves_users_alone(accounts: Any, mongo_auth_uri: str) -> None:
    client, database, root, _, _ = accounts
    client[database].command({"dropUser": "bob"})
    try:
        args = ["restore", "latest", str(root), "--uri", mongo_auth_uri, database, "--drop"]
        assert run_cli(*args).returncode == 0
        assert client[database].command({"usersInfo": "bob"})["users"] == []
    finally:
        client[database].command({"createUser": "bob", "pwd": PASSWORDS["bob"], "roles": []})


def test_users_and_roles_refuse_another_database_or_an_archive_without_them(
    accounts: Any, mongo_auth_uri: str, tmp_path: Path
) -> None:
    _, database, root, _, _ = accounts
    base = ["restore", "latest", str(root), "--uri", mongo_auth_uri, database, "--users-and-roles"]
    done = run_cli(*base, "--to-database", database + "_elsewhere")
    assert done.returncode == 2 and "--to-database" in done.stderr
    plain = tmp_path / "plain"
    assert run_cli("backup", str(plain), "--uri", mongo_auth_uri, database).returncode == 0
    base[2] = str(plain)
    done = run_cli(*base, "--drop")
    assert done.returncode == 2 and "holds no users and roles" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_legacy_tar_with_users_files_restores_its_collections_only(
    accounts: Any, tmp_path: Path, mongo_auth_uri: str
) -> None:
    """``tar -czf`` of a dump with mongodump's users files (a legacy archive):
    the ``$admin.*`` files are no collections and are not restored as such."""
    client, database, root, report, _ = accounts
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    with tarfile.open(legacy / "2026-01-02-03-04-05-mongodb-dump.tar.gz", "w:gz") as tar:
        for name, data in archive_members(root, report).items():
            if name.startswith("dump/"):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    target = database + "_legacy"
    try:
        args = ["restore", "latest", str(legacy), "--uri", mongo_auth_uri, database]
        done = run_cli(*args, "--to-database", target, "--json")
        assert done.returncode == 0, done.stderr
        assert [c["name"] for c in json.loads(done.stdout)["collections"]] == ["items"]
        assert client[target].list_collection_names() == ["items"]
    finally:
        client.drop_database(target)


def test_heal_puts_a_dropped_user_back(accounts: Any, mongo_auth_uri: str) -> None:
    """heal --users-and-roles with every watched collection present: only the user."""
    client, database, root, _, _ = accounts
    before = by_name(server_users(client, database))
    client[database].command({"dropUser": "alice"})
    args = ["heal", str(root), "--uri", mongo_auth_uri, database, "items", "--users-and-roles"]
    done = run_cli(*args, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["users"] == {
        "restored": [f"user {database}.alice"],
        "existing": [f"user {database}.bob"],
    }
    assert report["restored"] == []
    assert by_name(server_users(client, database))["alice"] == before["alice"]
    client[database].command({"dropUser": "alice"})
    plain = run_cli(*args[:-1], "--json")  # without the flag: users are not heal's business
    assert plain.returncode == 0 and json.loads(plain.stdout)["users"] is None
    assert "alice" not in by_name(server_users(client, database))
    assert run_cli(*args).returncode == 0  # and back, for the tests after


async def test_a_changed_byte_in_the_users_member_is_caught_before_any_write(
    accounts: Any, mongo_auth_uri: str, tmp_path: Path
) -> None:
    """verify names the member; restore --users-and-roles fails (exit 31) before
    it writes a collection or a user."""
    client, database, _, _, _ = accounts
    report = await backup(
        mongo_auth_uri, str(tmp_path), database=database, users_and_roles=True, codec="none"
    )
    path = tmp_path / report.archive_key
    salt = bson.decode(server_users(client, database)[0])["credentials"]["SCRAM-SHA-256"]["salt"]
    data = bytearray(path.read_bytes())
    at = data.index(salt.encode())
    data[at] ^= 0x01  # still a valid string: only the checksum can tell
    path.write_bytes(bytes(data))
    checked = await verify(str(tmp_path), report.archive_key)
    assert [p.message for p in checked.problems] == [
        f"dump/{database}/$admin.system.users.bson holds 2 documents or a sha256 other"
        " than the manifest's (2)"
    ]
    client[database].command({"dropUser": "alice"})
    client[database].items.insert_one({"_id": "marker"})  # a --drop restore would lose it
    try:
        args = ["restore", "latest", str(tmp_path), "--uri", mongo_auth_uri, database]
        done = run_cli(*args, "--drop", "--users-and-roles")
        assert done.returncode == 31, done.stderr
        assert "$admin.system.users.bson" in done.stderr
        assert client[database].items.find_one({"_id": "marker"}) is not None
        assert "alice" not in by_name(server_users(client, database))
    finally:
        client[database].items.delete_one({"_id": "marker"})
        heal = ["heal", str(accounts[2]), "--uri", mongo_auth_uri, database, "items"]
        assert run_cli(*heal, "--users-and-roles").returncode == 0
