"""A canary password through every command's error paths: it never shows.

Every form a credential can take on the command line (HOST as
``user:password@host``, a URI's userinfo plain or percent-encoded, the URI
options ``authMechanismProperties`` and ``tlsCertificateKeyFilePassword``, a
misplaced argument, an S3 URL or endpoint with credentials) is run against
the real test bed with wrong passwords, unreachable hosts and malformed URIs,
with and without ``--json`` and ``-v``; stdout and stderr are searched for
the canary as written, percent-encoded and in its distinctive core.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from helpers import run_cli, seed, subprocess_env
from pymongo import MongoClient

CORE = "Cn4ryZq"
CANARY = CORE + "/Pa:ss@w0rd"
ENCODED = quote(CANARY, safe="")
FORMS = {CANARY, ENCODED, quote_plus(CANARY), ENCODED.lower(), CORE, CORE.lower(), "Pa:ss@w0rd"}


def assert_no_canary(done: object, what: list[str]) -> None:
    out = getattr(done, "stdout", "") + getattr(done, "stderr", "")
    for form in FORMS:
        assert form not in out, f"{form!r} printed by {what}:\n{out}"


def source_forms(mongo_uri: str, mongo_auth_uri: str) -> dict[str, tuple[list[str], set[int]]]:
    """How each command gets its source: argument list, and the exit codes that
    show the intended error path was taken."""
    host = mongo_uri.split("://", 1)[1].rstrip("/")
    auth_host = mongo_auth_uri.rsplit("@", 1)[1].rstrip("/")
    user = mongo_auth_uri.split("://", 1)[1].split(":", 1)[0]
    return {
        "host with password": ([f"admin:{ENCODED}@{host}"], {2}),
        "host with plain password": ([f"admin:{CORE}@{host}"], {2}),
        "wrong password": (["--uri", f"mongodb://{user}:{ENCODED}@{auth_host}/"], {12}),
        "unreachable": (["--uri", f"mongodb://admin:{ENCODED}@127.0.0.1:1/"], {11}),
        "malformed port": (["--uri", f"mongodb://admin:{ENCODED}@{host}:port/"], {2}),
        "unescaped password": (["--uri", f"mongodb://admin:{CANARY}@{host}/"], {2}),
        "aws session token": (
            [
                "--uri",
                f"mongodb://127.0.0.1:1/?authMechanism=MONGODB-AWS"
                f"&authMechanismProperties=AWS_SESSION_TOKEN:{ENCODED}",
            ],
            {2, 11},
        ),
        "tls key password": (
            [
                "--uri",
                f"mongodb://{host}/?tls=true&tlsCertificateKeyFile=/nonexistent.pem"
                f"&tlsCertificateKeyFilePassword={ENCODED}",
            ],
            {2},
        ),
        "option warning": (
            ["--uri", f"mongodb://admin:{ENCODED}@127.0.0.1:1/?readPreference=bogus"],
            {11},
        ),
    }


def command(name: str, root: Path, source: list[str], database: str) -> list[str]:
    uses_uri = source[0] == "--uri"
    host_part = source if uses_uri else [source[0]]
    if name == "backup":
        return ["backup", str(root), *host_part, database]
    if name == "heal":
        return ["heal", str(root), *host_part, database, "users"]
    return ["restore", "latest", str(root), *host_part, database]


@pytest.mark.parametrize("name", ["backup", "heal", "restore"])
def test_no_credential_is_ever_printed_by_source_commands(
    name: str, tmp_path: Path, mongo_uri: str, mongo_auth_uri: str, new_database: str
) -> None:
    seed(mongo_uri, new_database, {"users": 3})
    root = tmp_path / "backups"
    if name != "backup":  # something to restore from, so the source is reached
        assert run_cli("backup", str(root), "--uri", mongo_uri, new_database).returncode == 0
    for label, (source, codes) in source_forms(mongo_uri, mongo_auth_uri).items():
        reaches_server = codes != {2}
        for extra in ([], ["--json", "-v"]) if reaches_server else ([],):
            args = [*command(name, root, source, new_database), "--connect-timeout", "1", *extra]
            done = run_cli(*args)
            assert done.returncode in codes, (label, extra, done.returncode, done.stderr)
            assert "Traceback" not in done.stderr
            assert_no_canary(done, [name, label, *extra])


@pytest.mark.parametrize("name", ["list", "verify", "prune"])
def test_no_credential_is_ever_printed_by_storage_commands(name: str, tmp_path: Path) -> None:
    uri = f"mongodb://admin:{ENCODED}@127.0.0.1:1/"
    s3_url = f"s3://AKIA:{ENCODED}@bucket"
    base, with_s3_url = {
        "list": (["list", str(tmp_path)], ["list", s3_url]),
        "verify": (["verify", "latest", str(tmp_path)], ["verify", "latest", s3_url]),
        "prune": (
            ["prune", str(tmp_path), "--keep-last", "1"],
            ["prune", s3_url, "--keep-last", "1"],
        ),
    }[name]
    cases = [
        [*base, uri],  # a source given to a command that takes none
        [*base, f"--uri={uri}"],
        [*base, f"--connect-timeout={uri}"],
        [*base, "--json", f"admin:{CORE}@127.0.0.1"],
        [*base, "-v", f"admin:{ENCODED}@127.0.0.1"],
        with_s3_url,
        [*with_s3_url, "--json", "-v"],
        [*base, "--endpoint-url", f"http://AKIA:{ENCODED}@127.0.0.1:9"],
    ]
    for args in cases:
        done = run_cli(*args)
        assert done.returncode not in (0, 70), (args, done.stderr)
        assert_no_canary(done, args)


def json_strings(value: Any) -> Iterator[str]:
    """Every key and string value of a decoded --json output, however nested."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from json_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from json_strings(item)
    elif value is not None:
        yield str(value)


def assert_json_clean(done: Any, what: list[str]) -> None:
    """stdout is JSON (one object, or one per line) and no field holds a credential."""
    text = done.stdout.strip()
    assert text, (what, done.returncode, done.stderr)
    try:
        objects = [json.loads(text)]
    except json.JSONDecodeError:
        objects = [json.loads(line) for line in text.splitlines()]
    for field in (s for o in objects for s in json_strings(o)):
        for form in FORMS:
            assert form not in field, f"{form!r} in a --json field of {what}: {field!r}"
    assert_no_canary(done, what)


# Every command that has --json, each given credentials everywhere it takes text.
S3_URL = f"s3://AKIA:{ENCODED}@bucket"
PLAIN_S3_URL = f"s3://AKIA:{CORE}@bucket"
SOURCE = f"mongodb://admin:{ENCODED}@127.0.0.1:1/"


def json_cases(name: str, root: str, database: str) -> list[list[str]]:
    timeout = ["--connect-timeout", "1"]
    source_commands = {
        "backup": lambda dest: ["backup", dest, "--uri", SOURCE, database, *timeout],
        "heal": lambda dest: ["heal", dest, "--uri", SOURCE, database, "users", *timeout],
        "restore": lambda dest: ["restore", "latest", dest, "--uri", SOURCE, database, *timeout],
        "oplog": lambda dest: ["oplog", dest, "--uri", SOURCE, *timeout],
    }
    storage_commands = {
        "list": lambda dest: ["list", dest],
        "verify": lambda dest: ["verify", "latest", dest],
        "prune": lambda dest: ["prune", dest, "--keep-last", "1", "--dry-run"],
        "check": lambda dest: ["check", dest],
        "oplog --list": lambda dest: ["oplog", dest, "--list"],
    }
    make = source_commands.get(name) or storage_commands[name]
    cases = [make(S3_URL), make(PLAIN_S3_URL), make(f"s3://{CORE}@bucket/{database}")]
    if name in source_commands:
        cases.append(make(root))  # the source URI's password, the command reaching for it
    else:
        cases.append([*make(root), "--endpoint-url", f"http://AKIA:{ENCODED}@127.0.0.1:9"])
    return [[*case, "--json"] for case in cases]


@pytest.mark.parametrize(
    "name",
    ["backup", "heal", "restore", "oplog", "list", "verify", "prune", "check", "oplog --list"],
)
def test_no_json_field_of_any_command_holds_a_credential(
    name: str, tmp_path: Path, new_database: str
) -> None:
    for args in json_cases(name, str(tmp_path), new_database):
        done = run_cli(*args)
        assert done.returncode not in (0, 70), (args, done.returncode, done.stderr)
        assert "Traceback" not in done.stderr
        assert_json_clean(done, args)


NOT_URIS = {
    "bare password": CANARY,
    "bare plain password": CORE,
    "user and password, no scheme": f"admin:{CORE}@127.0.0.1:1",
    "password as a query": f"127.0.0.1:1/?password={CORE}",
}


@pytest.mark.parametrize("name", ["backup", "heal", "restore", "oplog"])
def test_uri_file_and_variable_contents_are_never_printed(
    name: str, tmp_path: Path, new_database: str
) -> None:
    """A --uri-file or $MONGOSNAP_URI holding something else than a URI (a bare
    password, say) is refused without being echoed, never taken for a host."""
    uri_file = tmp_path / "uri"
    base = {
        "backup": ["backup", str(tmp_path), new_database],
        "heal": ["heal", str(tmp_path), new_database, "users"],
        "restore": ["restore", "latest", str(tmp_path), new_database],
        "oplog": ["oplog", str(tmp_path)],
    }[name]
    contents = {**NOT_URIS, "unreachable URI": SOURCE}
    for label, content in contents.items():
        uri_file.write_text(content + "\n")
        os.chmod(uri_file, 0o600)
        expected = {11, 40} if label == "unreachable URI" else {2}  # 40: no archive yet
        for how, extra, env in (
            ("file", ["--uri-file", str(uri_file)], subprocess_env()),
            ("variable", [], subprocess_env(MONGOSNAP_URI=content)),
        ):
            for output in ([], ["--json", "-v"]):
                args = [*base, *extra, "--connect-timeout", "1", *output]
                done = run_cli(*args, env=env)
                what = [name, label, how, *output]
                assert done.returncode in expected, (what, done.returncode, done.stderr)
                assert "Traceback" not in done.stderr
                if output:
                    assert_json_clean(done, what)
                assert_no_canary(done, what)


def test_key_material_is_never_printed(tmp_path: Path, mongo_uri: str, new_database: str) -> None:
    """Passphrases and identity files (their contents) through every encryption
    error path: a malformed key, a wrong key, an unreachable source; plain
    output, --json and -v, and the metrics file."""
    from testbed import bin_dir

    seed(mongo_uri, new_database, {"users": 3})
    root, metrics = tmp_path / "backups", tmp_path / "metrics.prom"
    passphrase, right = tmp_path / "passphrase", tmp_path / "right"
    passphrase.write_text(CANARY + "\n")
    right.write_text("the right passphrase of " + new_database + "\n")
    key = tmp_path / "key.txt"
    keygen = bin_dir() / "age-keygen"
    subprocess.run([str(keygen), "-o", str(key)], check=True, capture_output=True)
    secret = next(ln for ln in key.read_text().splitlines() if ln.startswith("AGE-SECRET"))
    malformed = tmp_path / "malformed.txt"
    malformed.write_text(f"AGE-SECRET-KEY-1{CORE.upper()}QQQ\n")
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"age1{CORE.lower()}qqq\n")
    made = run_cli(
        "backup", str(root), "--uri", mongo_uri, new_database, "--passphrase-file", str(right)
    )
    assert made.returncode == 0, made.stderr
    host = ["--uri", mongo_uri, new_database]
    cases: list[tuple[list[str], int]] = [
        (["backup", str(root), "--uri", SOURCE, new_database, "--passphrase-file", str(passphrase),
          "--connect-timeout", "1", "--metrics-file", str(metrics)], 11),
        (["backup", str(root), *host, "--encrypt-to", f"age1{CORE.lower()}qqq"], 63),
        (["backup", str(root), *host, "--recipients-file", str(recipients)], 63),
    ]  # fmt: skip
    for keys, code in (
        (["--passphrase-file", str(passphrase)], 61),
        (["--identity", str(key)], 61),
        (["--identity", str(malformed)], 63),
    ):
        cases += [
            (["heal", str(root), *host, "users", "nothere", *keys], code),
            (["restore", "latest", str(root), *host, "--to-database", "x", *keys], code),
            (["verify", "latest", str(root), *keys], code),
        ]
    forms = FORMS | {secret, secret.lower(), secret[16:40]}
    for number, (args, code) in enumerate(cases):  # plain output, or --json -v: by turns
        for output in (["--json", "-v"] if number % 2 else [],):
            done = run_cli(*args, *output)
            assert done.returncode == code, (args, output, done.returncode, done.stderr)
            assert "Traceback" not in done.stderr
            text = done.stdout + done.stderr
            for form in forms:
                assert form not in text, f"{form!r} printed by {args} {output}:\n{text}"
    scraped = metrics.read_text()
    assert not [form for form in forms if form in scraped]


def test_no_stored_credential_of_a_user_is_ever_printed(
    tmp_path: Path, mongo_auth_uri: str
) -> None:
    """backup/restore --users-and-roles carry SCRAM keys: none of their material
    (nor the user's password) shows in any output, log line (-vv) or --json."""
    database = f"mongosnap_secrets_{uuid.uuid4().hex[:10]}"
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_auth_uri)
    try:
        client[database].items.insert_one({"i": 1})
        client[database].command({"createUser": "canary", "pwd": CANARY, "roles": []})
        stored = client.admin["system.users"].find_one({"_id": f"{database}.canary"})
        assert stored is not None
        keys = {
            value
            for mechanism in stored["credentials"].values()
            for name, value in mechanism.items()
            if name in ("salt", "storedKey", "serverKey")
        }
        root = str(tmp_path / "backups")
        source = ["--uri", mongo_auth_uri, database]
        runs = [
            run_cli("backup", root, *source, "--users-and-roles", *extra)
            for extra in ([], ["--json", "-vv"])
        ]
        client[database].command({"dropUser": "canary"})
        restore = ["restore", "latest", root, *source, "--drop", "--users-and-roles"]
        runs += [run_cli(*restore, *extra) for extra in (["-vv"], ["--json", "-vv"])]
        runs += [run_cli("list", root, "--json"), run_cli("verify", "latest", root, "--json")]
        for done in runs:
            assert done.returncode == 0, (done.args, done.stderr)
            assert_no_canary(done, list(done.args))
            for key in keys:
                assert key not in done.stdout + done.stderr, done.args
        assert client[database].command({"usersInfo": "canary"})["users"]  # it came back
    finally:
        client[database].command({"dropAllUsersFromDatabase": 1})
        client.drop_database(database)
        client.close()


def test_aws_credentials_never_show_in_kms_errors(
    tmp_path: Path, mongo_uri: str, new_database: str, testbed: Any
) -> None:
    """A canary AWS secret key and session token through the KMS paths that fail
    (an unknown key id, an archive whose KMS key is unknown to these
    credentials): plain output and --json -vv. (The file key KMS unwraps is
    checked in tests/test_encryption_kms.py.)"""
    seed(mongo_uri, new_database, {"users": 3})
    moto = testbed.s3["moto"]
    env = subprocess_env(
        AWS_ENDPOINT_URL_KMS=moto.endpoint_url,
        AWS_ACCESS_KEY_ID=moto.access_key,
        AWS_SECRET_ACCESS_KEY=CANARY,  # moto accepts any secret
        AWS_SESSION_TOKEN=ENCODED,
        AWS_DEFAULT_REGION=moto.region,
    )
    root = tmp_path / "backups"
    host = ["--uri", mongo_uri, new_database]
    cases = [
        (["backup", str(root), *host, "--kms-key-id", "alias/mongosnap-nothere"], 64),
        (["backup", str(root), *host, "--kms-key-id", "0000-nothere"], 64),
        (["verify", "latest", str(tmp_path / "none"), "--kms"], 21),
    ]
    for args, code in cases:
        for output in ([], ["--json", "-vv"]):
            done = run_cli(*args, *output, env=env)
            assert done.returncode == code, (args, output, done.stderr)
            assert "Traceback" not in done.stderr
            text = done.stdout + done.stderr
            for form in FORMS:
                assert form not in text, f"{form!r} printed by {args} {output}:\n{text}"
