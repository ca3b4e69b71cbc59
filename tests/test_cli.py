"""The command line: legacy argument shape, output modes, one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import on_a_terminal, seed
from helpers import run_cli as run

import mongosnap
from mongosnap._errors import all_errors


@pytest.fixture
def host(mongo_uri: str) -> str:
    return mongo_uri.split("://", 1)[1].rstrip("/")


@pytest.fixture
def seeded(mongo_uri: str, new_database: str) -> str:
    seed(mongo_uri, new_database, {"repositories": 20, "users": 3})
    return new_database


def test_backup_with_the_legacy_argument_shape(tmp_path: Path, host: str, seeded: str) -> None:
    done = run("backup", str(tmp_path), host, seeded)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert re.search(r"backed up 2 collections, 23 documents", line), line
    archives = list(tmp_path.glob("*-mongodb-dump.tar.gz"))
    assert len(archives) == 1
    assert archives[0].name in line


def test_json_output(tmp_path: Path, host: str, seeded: str) -> None:
    done = run("backup", str(tmp_path), host, seeded, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["documents"] == 23
    assert {c["name"] for c in result["collections"]} == {"repositories", "users"}
    assert (tmp_path / result["archive_key"]).stat().st_size == result["bytes_out"]


def test_uri_replaces_host(tmp_path: Path, mongo_uri: str, seeded: str) -> None:
    done = run("backup", str(tmp_path), "--uri", mongo_uri, seeded, "--json")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["backup", "DEST", "127.0.0.1:9", "db", "--connect-timeout", "1"], "ServerUnreachable"),
        (["backup", "s3://", "h", "db"], "UsageError"),
        (["backup", "DEST", "h"], "UsageError"),
        (
            [
                "backup",
                "DEST",
                "--uri",
                "mongodb://u:hunter2@127.0.0.1:9/",
                "db",
                "--connect-timeout",
                "1",
            ],
            "ServerUnreachable",
        ),
    ],
)
def test_errors_are_one_line_with_their_exit_code(
    args: list[str], error: str, tmp_path: Path
) -> None:
    args = [str(tmp_path) if a == "DEST" else a for a in args]
    done = run(*args)
    expected = getattr(mongosnap, error).exit_code
    assert done.returncode == expected, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("mongosnap: error: ")
    assert "hunter2" not in done.stderr + done.stdout


def test_missing_database_exit_code(tmp_path: Path, host: str) -> None:
    done = run("backup", str(tmp_path), host, "surely_not_here")
    assert done.returncode == mongosnap.DatabaseNotFound.exit_code
    assert "surely_not_here" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_argparse_usage_errors_exit_2() -> None:
    assert run("backup").returncode == 2
    assert run("nonsense").returncode == 2


def test_every_exit_code_is_documented_and_distinct() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "cli.md").read_text()
    codes = [e.exit_code for e in all_errors()]
    assert len(codes) == len(set(codes))
    for error in all_errors():
        assert re.search(rf"\| {error.exit_code} \| {error.__name__} \|", doc), error.__name__


def test_public_api_is_exactly_this() -> None:
    errors = {e.__name__ for e in all_errors()}
    assert set(mongosnap.__all__) == errors | {
        "__version__",
        *("backup", "heal", "restore", "verify", "prune", "list_archives", "open_storage"),
        *("BackupReport", "CollectionBackup", "HealReport", "RestoreReport", "CollectionOutcome"),
        *("VerifyReport", "PruneReport", "ArchiveInfo", "ArchiveStatus"),
        *("Storage", "S3Storage", "LocalStorage", "MemoryStorage", "S3Config"),
        *("Progress", "ProgressCallback", "Stage"),
        *("archive_oplog", "list_oplog", "undo", "UndoReport"),
        *("Encryption", "Keys"),
        *(
            "Status",
            "SkippedArchive",
            "HealReplay",
            "PruneDecision",
            "CollectionCheck",
            "Problem",
            "opened",
        ),
        *("AsyncMongoClientLike", "MongoSource", "Ts", "TsLike"),
        *("copy", "CopyReport", "CopiedArchive"),
        *("drill", "DrillReport", "DrillCheck", "diff", "DiffReport", "CollectionDiff"),
    }
    for name in mongosnap.__all__:
        assert hasattr(mongosnap, name), name


def test_env_credentials_never_printed(tmp_path: Path, host: str, seeded: str) -> None:
    env: dict[str, Any] = dict(
        os.environ, AWS_SECRET_ACCESS_KEY="zzSECRETzz", AWS_ACCESS_KEY_ID="k"
    )
    done = run(
        "backup",
        "s3://nobucket",
        host,
        seeded,
        "--endpoint-url",
        "http://127.0.0.1:9",
        "--connect-timeout",
        "1",
        env=env,
    )
    assert done.returncode != 0
    assert "zzSECRETzz" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_live_progress_on_a_terminal(tmp_path: Path, host: str, seeded: str) -> None:
    code, text, out = on_a_terminal("backup", str(tmp_path), host, seeded)
    assert code == 0, text
    assert "collection" in text and "repositories" in text and "done" in text, text
    assert "backed up 2 collections" in out


def test_credentials_from_an_aws_profile(
    tmp_path: Path, host: str, seeded: str, testbed: Any, new_bucket: Any
) -> None:
    endpoint = testbed.s3["versitygw"]  # moto would accept any credentials
    bucket = new_bucket(endpoint)
    (tmp_path / "credentials").write_text(
        f"[backup]\naws_access_key_id = {endpoint.access_key}\n"
        f"aws_secret_access_key = {endpoint.secret_key}\n"
        f"[wrong]\naws_access_key_id = {endpoint.access_key}\naws_secret_access_key = nope\n"
    )
    (tmp_path / "config").write_text("[profile backup]\nregion = us-east-1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
        "AWS_CONFIG_FILE": str(tmp_path / "config"),
        "AWS_ENDPOINT_URL_S3": endpoint.endpoint_url,
    }
    url = f"s3://{bucket}/p"
    flags = ["--addressing-style", "path", "--json"]
    done = run("backup", url, host, seeded, "--profile", "backup", *flags, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["documents"] == 23
    denied = run("backup", url, host, seeded, "--profile", "wrong", *flags, env=env)
    assert denied.returncode == mongosnap.AccessDenied.exit_code, denied.stderr
    assert "nope" not in denied.stderr


def _with_stdout_closed(*args: str) -> tuple[int, str]:
    """Run the CLI with its stdout a pipe whose reader has gone (``| head`` done)."""
    child = subprocess.Popen(
        [sys.executable, "-m", "mongosnap", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()
    stderr = child.stderr.read()
    return child.wait(timeout=120), stderr


def test_a_closed_stdout_is_exit_141_without_a_traceback(
    tmp_path: Path, host: str, seeded: str
) -> None:
    """``mongosnap ... | head``: no traceback, no internal error, the work done."""
    code, stderr = _with_stdout_closed("backup", str(tmp_path), host, seeded, "--json")
    assert (code, stderr) == (141, "")
    (archive,) = tmp_path.glob("*.tar.gz")
    assert run("verify", archive.name, str(tmp_path)).returncode == 0  # the backup completed
    for args in (("list", str(tmp_path), "--json"), ("list", str(tmp_path))):
        assert _with_stdout_closed(*args) == (141, "")
    # An error's JSON object cannot be written either: its own code, its one line.
    (tmp_path / "empty").mkdir()
    code, stderr = _with_stdout_closed("verify", "latest", str(tmp_path / "empty"), "--json")
    assert code == mongosnap.NoBackupsFound.exit_code, stderr
    assert stderr.startswith("mongosnap: error: ") and len(stderr.splitlines()) == 1, stderr
    code, stderr = _with_stdout_closed("verify", "--json")  # argparse's usage error
    assert code == mongosnap.UsageError.exit_code
    assert "Traceback" not in stderr, stderr
