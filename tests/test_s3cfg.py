"""The legacy scripts' S3 setup: s3cmd's config file, written by the real s3cmd.

A user moving from backup.bash/healer.bash has ``s3cmd --configure``'s
``~/.s3cfg`` and no AWS variables. mongosnap reads it when the AWS chain finds
no credentials: its archives then go back through ``s3cmd get`` + ``tar -xzf``
+ the real mongorestore, and it heals from an archive ``s3cmd put`` uploaded.
The AWS chain keeps precedence. A missing s3cmd fails these tests.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli, s3_client, seed, server_documents, subprocess_env
from pymongo import MongoClient
from test_mongo_tools import _legacy_archive, assert_mongorestore_gives, tools_dir

SIZES = {"apps": 150, "users": 40}
WRONG_SECRET = "not-the-secret-4e1f0c"


def s3cmd(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The real s3cmd, from the test environment (pyproject's test extras)."""
    binary = shutil.which("s3cmd") or str(Path(sys.executable).with_name("s3cmd"))
    if not Path(binary).exists():
        pytest.fail("s3cmd is not installed: pip install s3cmd (pyproject's test extras)")
    done = subprocess.run(
        [binary, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"s3cmd {args[0]} failed: {done.stderr[-2000:]}"
    return done


def write_s3cfg(path: Path, endpoint: Any, *extra: str, secret: str | None = None) -> Path:
    """A config written by s3cmd itself (--dump-config: --configure's format,
    without its prompts), path style over plain HTTP to a test bed server."""
    host = endpoint.endpoint_url.split("://", 1)[1]
    done = s3cmd(
        *("--config", "/dev/null", "--access_key", endpoint.access_key),
        *("--secret_key", secret or endpoint.secret_key, "--host", host),
        *("--host-bucket", host, "--no-ssl", "--region", endpoint.region, *extra),
        "--dump-config",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(done.stdout)
    path.chmod(0o600)
    return path


def legacy_env(home: Path, **extra: str) -> dict[str, str]:
    """No AWS variable, a HOME of the test's own: only the s3cmd config is there."""
    env = subprocess_env(HOME=str(home), **extra)
    env.pop("S3CMD_CONFIG", None)
    return env | extra


@pytest.fixture
def seeded(mongo_uri: str, new_database: str) -> Iterator[dict[str, list[bytes]]]:
    seed(mongo_uri, new_database, SIZES)
    yield {n: sorted(server_documents(mongo_uri, new_database, n)) for n in SIZES}


def test_backup_with_only_an_s3cfg_round_trips_through_s3cmd_and_mongorestore(
    s3_endpoint: Any,
    new_bucket: Any,
    mongo_uri: str,
    new_database: str,
    seeded: dict[str, list[bytes]],
    tmp_path: Path,
    _mongo_admin: MongoClient[dict[str, object]],
) -> None:
    bucket = new_bucket(s3_endpoint)
    home = tmp_path / "home"
    # moto applies SSE; versitygw ignores it (mongosnap would warn): asked of moto only
    sse = ("--server-side-encryption",) if s3_endpoint.name == "moto" else ()
    config = write_s3cfg(home / ".s3cfg", s3_endpoint, *sse)
    host = mongo_uri.split("://", 1)[1].rstrip("/")

    done = run_cli(
        "backup", "-v", "--json", f"s3://{bucket}/nightly", host, new_database,
        env=legacy_env(home),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "S3 credentials: from ~/.s3cfg" in done.stderr
    assert s3_endpoint.secret_key not in done.stderr + done.stdout
    key = next(
        line.split()[-1].rsplit("/", 1)[1]
        for line in s3cmd("-c", config, "ls", f"s3://{bucket}/nightly/").stdout.splitlines()
        if line.endswith(".tar.gz")
    )
    if sse:
        head = s3_client(s3_endpoint).head_object(Bucket=bucket, Key=f"nightly/{key}")
        assert head["ServerSideEncryption"] == "AES256"

    s3cmd("-c", config, "get", f"s3://{bucket}/nightly/{key}", tmp_path / key)
    subprocess.run(["tar", "-xzf", key], cwd=tmp_path, check=True, timeout=60)
    assert_mongorestore_gives(mongo_uri, tmp_path / "dump", new_database, seeded, _mongo_admin)


def test_heal_from_an_archive_put_with_s3cmd(
    s3_endpoint: Any,
    new_bucket: Any,
    mongo_uri: str,
    new_database: str,
    seeded: dict[str, list[bytes]],
    tmp_path: Path,
    _mongo_admin: MongoClient[dict[str, object]],
) -> None:
    bucket = new_bucket(s3_endpoint)
    config = write_s3cfg(tmp_path / "etc" / "s3cmd.cfg", s3_endpoint)
    archive = _legacy_archive(tools_dir(), mongo_uri, new_database, tmp_path / "legacy")
    s3cmd("-c", config, "put", archive, f"s3://{bucket}/nightly/")  # as backup.bash did
    for name in SIZES:
        _mongo_admin[new_database].drop_collection(name)

    done = run_cli(
        "heal", "-v", "--s3cfg", str(config), "--uri", mongo_uri,
        f"s3://{bucket}/nightly", new_database, *SIZES,
        env=legacy_env(tmp_path / "empty-home"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"S3 credentials: from {config}" in done.stderr
    for name, documents in seeded.items():
        assert sorted(server_documents(mongo_uri, new_database, name)) == documents, name


def test_the_aws_chain_wins_over_an_s3cfg(testbed: Any, new_bucket: Any, tmp_path: Path) -> None:
    server = testbed.s3["versitygw"]  # it checks signatures (moto takes any)
    bucket = new_bucket(server)
    s3_client(server).put_object(Bucket=bucket, Key="nightly/x", Body=b"")
    wrong = write_s3cfg(tmp_path / "wrong.cfg", server, secret=WRONG_SECRET)
    home = tmp_path / "home"
    aws = {
        "AWS_ENDPOINT_URL_S3": server.endpoint_url,
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "AWS_DEFAULT_REGION": server.region,
    }
    url = f"s3://{bucket}/nightly"

    with_env = run_cli("list", "-v", url, env=legacy_env(home, S3CMD_CONFIG=str(wrong), **aws))
    assert with_env.returncode == 0, with_env.stderr
    assert "S3 credentials: from the AWS chain (env)" in with_env.stderr
    assert f"s3cmd config $S3CMD_CONFIG ({wrong}) not used" in with_env.stderr

    # Without the AWS variables the same file is used, and its wrong key refused.
    alone = run_cli("list", "-v", url, env=legacy_env(home, S3CMD_CONFIG=str(wrong)))
    assert alone.returncode == 22, alone.stderr  # AccessDenied
    assert f"S3 credentials: from $S3CMD_CONFIG ({wrong})" in alone.stderr
    assert "no usable S3 credentials" not in alone.stderr
    assert WRONG_SECRET not in alone.stderr + alone.stdout


def test_a_malformed_s3cfg_is_a_usage_error_naming_the_file(tmp_path: Path) -> None:
    config = tmp_path / "broken.s3cfg"
    config.write_text(f"[default]\naccess_key = AKIA\nsecret_key {WRONG_SECRET}\n")
    done = run_cli("list", "--s3cfg", str(config), "s3://any-bucket/x", env=legacy_env(tmp_path))
    assert done.returncode == 2, done.stderr
    assert f"s3cmd config {config} is malformed: line 3" in done.stderr
    assert WRONG_SECRET not in done.stderr
    assert "Traceback" not in done.stderr

    missing = run_cli(
        "list", "--s3cfg", str(tmp_path / "nope"), "s3://any-bucket/x", env=legacy_env(tmp_path)
    )
    assert missing.returncode == 2
    assert f"cannot read s3cmd config {tmp_path / 'nope'}" in missing.stderr


def test_settings_of_a_config_s3cmd_wrote(testbed: Any, tmp_path: Path) -> None:
    """What the test bed cannot serve (TLS, a proxy, KMS, virtual hosts, AWS
    itself), taken from a file s3cmd wrote."""
    from mongosnap.storage import _s3cmd

    moto = testbed.s3["moto"]
    path = write_s3cfg(
        tmp_path / "s3cfg",
        moto,
        *("--ssl", "--ca-certs", "/etc/ca.pem", "--server-side-encryption-kms-id", "key-1"),
        *("--host-bucket", "%(bucket)s.s3.example.net"),
    )
    text = path.read_text().replace("proxy_host = \n", "proxy_host = proxy.example.net\n")
    parsed = _s3cmd.parse(text, "s3cfg", {})
    host = moto.endpoint_url.split("://", 1)[1]
    assert parsed.endpoint_url == f"https://{host}"
    assert parsed.addressing_style == "virtual"
    assert (parsed.sse, parsed.sse_kms_key_id) == ("aws:kms", "key-1")
    assert parsed.verify == "/etc/ca.pem"
    assert parsed.proxies() == {"http": "http://proxy.example.net:3128"} | {
        "https": "http://proxy.example.net:3128"
    }
    assert parsed.region == moto.region

    aws = s3cmd("--config", "/dev/null", "--access_key", "A", "--secret_key", "S",
                "--no-check-certificate", "--dump-config").stdout  # fmt: skip
    default = _s3cmd.parse(aws, "s3cfg", {})
    assert (default.endpoint_url, default.region, default.verify) == (None, "us-east-1", False)
    assert default.addressing_style == "virtual" and default.sse is None and default.proxy is None
