"""Logging (-q, -v, -vv, --log-format json), the URI off the command line, JSON errors."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bson import Binary
from helpers import Destination, make_destination, run_cli, seed, subprocess_env
from pymongo import MongoClient

from mongosnap.cli import _logging

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def host_of(uri: str) -> str:
    return uri.split("://", 1)[1].rstrip("/")


@pytest.fixture
def seeded(mongo_uri: str, new_database: str) -> str:
    seed(mongo_uri, new_database, {"apps": 20, "users": 3})
    return new_database


def uri_file(tmp_path: Path, uri: str, mode: int = 0o600) -> Path:
    path = tmp_path / "uri"
    path.write_text(uri + "\n")
    path.chmod(mode)
    return path


# -- logging -------------------------------------------------------------------


def test_default_is_silent_and_v_logs_each_collection(
    tmp_path: Path, mongo_uri: str, seeded: str
) -> None:
    quiet = run_cli("backup", str(tmp_path), host_of(mongo_uri), seeded, env=subprocess_env())
    assert quiet.returncode == 0 and quiet.stderr == ""
    done = run_cli("backup", str(tmp_path), host_of(mongo_uri), seeded, "-v", env=subprocess_env())
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    for name in ("apps", "users"):
        assert any(
            re.fullmatch(rf"{STAMP} mongosnap: info: dumping {seeded}\.{name}", x) for x in lines
        )
        assert any(f"dumped {seeded}.{name}: " in x for x in lines)
    assert not any(": debug: " in x for x in lines)


def test_json_log_lines(tmp_path: Path, mongo_uri: str, seeded: str) -> None:
    done = run_cli(
        "backup", str(tmp_path), host_of(mongo_uri), seeded, "-v", "--log-format", "json",
        env=subprocess_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stderr.splitlines()]
    assert entries and all(re.fullmatch(STAMP, e["time"]) for e in entries)
    assert {e["level"] for e in entries} == {"info"}
    assert f"dumping {seeded}.apps" in [e["message"] for e in entries]


def test_vv_shows_s3_parts_and_no_secret(
    tmp_path: Path, testbed: Any, new_bucket: Any, mongo_auth_uri: str, new_database: str
) -> None:
    """-vv on S3 with a password in the URI and keys in the environment: parts, no secrets."""
    destination = make_destination("moto", tmp_path, testbed, new_bucket)
    with MongoClient(mongo_auth_uri) as client:  # ~7 MB that gzip cannot shrink: two parts
        client[new_database].blobs.insert_many(
            [{"i": i, "b": Binary(os.urandom(100_000))} for i in range(70)]
        )
    try:
        env = subprocess_env(destination)
        path = uri_file(tmp_path, mongo_auth_uri)
        done = run_cli(
            "backup", destination.url, "--uri-file", str(path), new_database,
            "--part-size", "5", "-vv", env=env,
        )  # fmt: skip
    finally:
        with MongoClient(mongo_auth_uri) as client:
            client.drop_database(new_database)
    assert done.returncode == 0, done.stderr
    assert re.search(
        rf"{STAMP} mongosnap: debug: uploaded part 1 of \S+ \(5242880 bytes\)", done.stderr
    )
    assert "uploaded part 2 of" in done.stderr
    password = mongo_auth_uri.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    for secret in (password, env["AWS_SECRET_ACCESS_KEY"], "Authorization", "Signature="):
        assert secret not in done.stderr and secret not in done.stdout


def test_botocore_debug_never_passes_but_retries_do() -> None:
    stream = io.StringIO()
    root, endpoint = logging.getLogger(), logging.getLogger("botocore.endpoint")
    saved = root.handlers[:], root.level, endpoint.level
    _logging.configure(verbose=2, stream=stream)
    try:
        logging.getLogger("botocore.endpoint").setLevel(logging.DEBUG)  # even if lowered
        logging.getLogger("botocore.endpoint").debug("Authorization: AWS4-HMAC-SHA256 secret")
        logging.getLogger("aiobotocore.endpoint").debug("headers: secret")
        logging.getLogger("botocore.retries.standard").debug("Retry needed, delay of: 0.5")
        logging.getLogger("mongosnap.x").debug("detail")
    finally:  # leave pytest's logging as it was
        root.handlers[:], _, _ = saved
        root.setLevel(saved[1])
        endpoint.setLevel(saved[2])
        for name in _logging.QUIET_LOGGERS + _logging.RETRY_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
    assert "secret" not in stream.getvalue()
    assert "Retry needed" in stream.getvalue() and "detail" in stream.getvalue()
    assert _logging.level_for(0, quiet=True) == logging.ERROR


# -- the URI off the command line ------------------------------------------------


def test_uri_from_the_environment(tmp_path: Path, mongo_uri: str, seeded: str) -> None:
    env = subprocess_env(MONGOSNAP_URI=mongo_uri)
    done = run_cli("backup", str(tmp_path), seeded, "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["documents"] == 23
    both = run_cli("backup", str(tmp_path), host_of(mongo_uri), seeded, env=env)
    assert both.returncode == 2 and "not both" in both.stderr


def test_uri_file_beats_the_environment_and_uri_beats_both(
    tmp_path: Path, mongo_uri: str, seeded: str
) -> None:
    env = subprocess_env(MONGOSNAP_URI="mongodb://127.0.0.1:9/")
    path = uri_file(tmp_path, mongo_uri)
    done = run_cli("backup", str(tmp_path / "a"), "--uri-file", str(path), seeded, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # mode 600: no warning
    missing = str(tmp_path / "missing")
    done = run_cli("backup", str(tmp_path / "b"), "--uri", mongo_uri, "--uri-file", missing, seeded)
    assert done.returncode == 0, done.stderr


def test_uri_file_readable_by_others_warns(tmp_path: Path, mongo_uri: str, seeded: str) -> None:
    path = uri_file(tmp_path, mongo_uri, 0o644)
    args = ["heal", str(tmp_path), "--uri-file", str(path), seeded, "apps"]
    done = run_cli(*args, env=subprocess_env())
    assert done.returncode == 0, done.stderr
    assert (
        done.stderr == f"mongosnap: warning: {path} is readable by group or others; chmod 600 it\n"
    )
    assert run_cli(*args, "-q", env=subprocess_env()).stderr == ""  # -q: errors only


@pytest.mark.parametrize("content", [None, ""])
def test_unreadable_or_empty_uri_file(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "uri"
    if content is not None:
        path.write_text(content)
    done = run_cli("backup", str(tmp_path), "--uri-file", str(path), "db")
    assert done.returncode == 2
    assert done.stderr.startswith("mongosnap: error: ") and done.stderr.count("\n") == 1


# -- --json errors and times -------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["backup", "s3://", "h", "db"],
        ["heal", "s3://", "h", "db", "c"],
        ["restore", "latest", "s3://", "h", "db"],
        ["list", "s3://"],
        ["verify", "latest", "s3://"],
        ["prune", "s3://", "--keep-last", "1"],
        ["backup", "DEST", "h", "--bogus-flag"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_json_error_object_for_each_command(args: list[str]) -> None:
    done = run_cli(*args, "--json")
    assert done.returncode == 2
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "UsageError" and error["exit_code"] == 2
    assert error["message"] and "\n" not in error["message"]
    assert done.stderr.splitlines()[-1].endswith(error["message"])


def test_json_error_of_a_runtime_failure(tmp_path: Path) -> None:
    done = run_cli(
        "backup", str(tmp_path), "--uri", "mongodb://u:hunter2@127.0.0.1:9/", "db",
        "--connect-timeout", "1", "--json",
    )  # fmt: skip
    assert done.returncode == 11
    assert json.loads(done.stdout)["error"]["type"] == "ServerUnreachable"
    assert "hunter2" not in done.stdout + done.stderr


def test_check_json_error_is_unknown() -> None:
    done = run_cli("check", "s3://", "--json")
    assert done.returncode == 3
    assert json.loads(done.stdout)["error"]["type"] == "UsageError"


def test_json_times_are_rfc3339_with_z(
    destination: Destination, mongo_uri: str, seeded: str
) -> None:
    env = subprocess_env(destination)
    done = run_cli("backup", destination.url, host_of(mongo_uri), seeded, "--json", env=env)
    result = json.loads(done.stdout)
    assert result["started"].endswith("Z") and result["finished"].endswith("Z")
    pruned = json.loads(
        run_cli("prune", destination.url, "--keep-last", "1", "--json", env=env).stdout
    )
    assert pruned["archives"] and all(a["created"].endswith("Z") for a in pruned["archives"])


# -- a fast start ------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [["--version"], ["--help"], ["backup", "--help"], ["heal", "--help"]]
)
def test_version_and_help_load_no_driver(args: list[str]) -> None:
    code = (
        "import sys\n"
        "from mongosnap.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('pymongo', 'bson', 'aiobotocore', 'botocore', 'rich', 'prometheus_client')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stderr.strip() == "[]"
    assert "mongosnap" in done.stdout
