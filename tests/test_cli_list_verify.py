"""``mongosnap list``, ``verify`` and ``prune`` as a user runs them: output and exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from catalog_support import at, backup_at, hostile_archive, repack_legacy
from helpers import run_cli as run
from helpers import seed

from mongosnap import LocalStorage
from mongosnap.archive.manifest import manifest_key


@pytest.fixture
def seeded(mongo_uri: str, new_database: str) -> str:
    seed(mongo_uri, new_database, {"users": 40, "orders": 60})
    return new_database


@pytest.fixture
async def mixed(tmp_path: Path, mongo_uri: str, seeded: str) -> dict[str, str]:
    """A directory with a complete, a legacy, an incomplete and a newest complete archive."""
    root = tmp_path / "backups"
    storage = LocalStorage(root)
    old = await backup_at(at(1), mongo_uri, storage, seeded)
    legacy = "2025-01-02-03-00-00-mongodb-dump.tar.gz"
    (root / legacy).write_bytes(repack_legacy((root / old).read_bytes(), tmp_path / "repack"))
    incomplete = await backup_at(at(3), mongo_uri, storage, seeded)
    (root / manifest_key(incomplete)).unlink()
    newest = await backup_at(at(4), mongo_uri, storage, seeded, codec="zstd")
    return {"dir": str(root), "old": old, "legacy": legacy, "incomplete": incomplete, "new": newest}


def test_list_table(mixed: dict[str, str]) -> None:
    done = run("list", mixed["dir"])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["time", "key", "size", "status", "collections", "documents"]
    rows = [line.split() for line in lines[1:]]
    assert [r[2] for r in rows] == [mixed[k] for k in ("new", "incomplete", "legacy", "old")]
    assert [r[0] + " " + r[1] for r in rows] == [
        "2025-01-04 03:00:00",
        "2025-01-03 03:00:00",
        "2025-01-02 03:00:00",
        "2025-01-01 03:00:00",
    ]
    assert [r[5] for r in rows] == ["complete", "incomplete", "legacy", "complete"]
    assert rows[0][6:] == ["2", "100"] and rows[1][6:] == ["-", "-"]


def test_list_json(mixed: dict[str, str]) -> None:
    done = run("list", mixed["dir"], "--json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert [a["key"] for a in listed] == [mixed[k] for k in ("new", "incomplete", "legacy", "old")]
    newest, incomplete, legacy = listed[0], listed[1], listed[2]
    assert (newest["status"], newest["codec"], newest["collections"]) == ("complete", "zstd", 2)
    assert newest["documents"] == 100 and newest["created"] == "2025-01-04T03:00:00.000Z"
    assert newest["size"] == (Path(mixed["dir"]) / mixed["new"]).stat().st_size
    assert incomplete["status"] == "incomplete" and "sidecar" in incomplete["problem"]
    assert (legacy["status"], legacy["collections"], legacy["problem"]) == ("legacy", None, None)


def test_list_of_nothing(tmp_path: Path) -> None:
    done = run("list", str(tmp_path))
    assert (done.returncode, done.stdout) == (0, "no archives\n")
    assert json.loads(run("list", str(tmp_path), "--json").stdout) == []


def test_list_and_verify_on_s3(
    s3_endpoint: Any, new_bucket: Any, mongo_uri: str, seeded: str
) -> None:
    bucket = new_bucket(s3_endpoint)
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=s3_endpoint.access_key,
        AWS_SECRET_ACCESS_KEY=s3_endpoint.secret_key,
    )
    flags = [
        "--endpoint-url",
        s3_endpoint.endpoint_url,
        "--region",
        s3_endpoint.region,
        "--addressing-style",
        "path",
    ]
    dest = f"s3://{bucket}/nightly"
    host = mongo_uri.split("://", 1)[1].rstrip("/")
    assert run("backup", dest, host, seeded, "-q", *flags, env=env).returncode == 0

    listed = run("list", dest, "--json", *flags, env=env)
    assert listed.returncode == 0, listed.stderr
    [archive] = json.loads(listed.stdout)
    assert archive["status"] == "complete" and archive["documents"] == 100
    checked = run("verify", "latest", dest, *flags, env=env)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(
        f"ok: {archive['key']} (complete): 2 collections, 100 documents"
    )
    missing = run("verify", "latest", f"s3://{bucket}-none", *flags, env=env)
    assert missing.returncode == 21, missing.stderr


def test_verify_sound_archives(mixed: dict[str, str]) -> None:
    done = run("verify", "latest", mixed["dir"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"ok: {mixed['new']} (complete): 2 collections, 100 documents;")
    assert done.stderr == ""
    report = json.loads(run("verify", mixed["legacy"], mixed["dir"], "--json").stdout)
    assert (report["ok"], report["status"], report["documents"]) == (True, "legacy", 100)
    assert {c["name"]: c["documents"] for c in report["collections"]} == {"users": 40, "orders": 60}


def test_verify_an_incomplete_archive(mixed: dict[str, str]) -> None:
    done = run("verify", mixed["incomplete"], mixed["dir"])
    assert done.returncode == 31
    assert done.stdout.startswith(f"FAILED (1 problem): {mixed['incomplete']} (incomplete)")
    assert done.stderr.splitlines() == [
        "mongosnap: CorruptArchive: archive is incomplete: no sidecar manifest,"
        " but the archive holds a mongosnap manifest"
    ]


def test_verify_exit_codes_of_damaged_archives(mixed: dict[str, str]) -> None:
    root = Path(mixed["dir"])
    data = bytearray((root / mixed["old"]).read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the data; the sidecar still matches the size
    (root / mixed["old"]).write_bytes(bytes(data))
    legacy = (root / mixed["legacy"]).read_bytes()
    (root / "2025-02-02-00-00-00-mongodb-dump.tar.gz").write_bytes(legacy[: len(legacy) // 2])
    (root / "2025-02-03-00-00-00-mongodb-dump.tar.gz").write_bytes(hostile_archive("dotdot"))
    expected = {
        mixed["old"]: ("complete", 31),
        "2025-02-02-00-00-00-mongodb-dump.tar.gz": ("legacy", 32),
        "2025-02-03-00-00-00-mongodb-dump.tar.gz": ("legacy", 33),
    }
    for key, (status, code) in expected.items():
        done = run("verify", key, mixed["dir"])
        assert done.returncode == code, (key, done.stdout, done.stderr)
        assert done.stdout.startswith("FAILED (") and f"{key} ({status})" in done.stdout
        lines = done.stderr.splitlines()
        assert lines and all(line.startswith("mongosnap: ") for line in lines)
        assert "Traceback" not in done.stderr
    report = json.loads(
        run("verify", "2025-02-03-00-00-00-mongodb-dump.tar.gz", mixed["dir"], "--json").stdout
    )
    assert report["ok"] is False
    assert report["problems"][0]["error"] == "UnsafeArchive"
    assert report["problems"][0]["exit_code"] == 33


def test_verify_without_archives_or_with_an_unknown_key(tmp_path: Path) -> None:
    done = run("verify", "latest", str(tmp_path))
    assert done.returncode == 40
    assert done.stderr.startswith("mongosnap: error: no archive in")
    unknown = run("verify", "2020-01-01-00-00-00-mongodb-dump.tar.gz", str(tmp_path))
    assert unknown.returncode == 23
    assert run("verify", "nonsense", str(tmp_path)).returncode == 2
    assert run("verify", "latest", str(tmp_path), "extra").returncode == 2


def test_prune(mixed: dict[str, str]) -> None:
    root = Path(mixed["dir"])
    before = sorted(p.name for p in root.iterdir())
    dry = run("prune", mixed["dir"], "--keep-last", "1", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] is True and plan["kept"] == 2 and plan["deleted"] == 2
    assert sorted(p.name for p in root.iterdir()) == before

    done = run("prune", mixed["dir"], "--keep-last", "1", "--keep-within", "1d12h")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:2] == ["keep", mixed["new"]]
    assert lines[-1].startswith("deleted 2 archives")
    # the incomplete one is older than the newest complete one, but it was
    # written moments ago: a backup might still be finishing it
    left = sorted(p.name for p in root.iterdir())
    assert left == sorted([mixed["new"], manifest_key(mixed["new"]), mixed["incomplete"]])


@pytest.mark.parametrize(
    "flags",
    [[], ["--keep-last", "x"], ["--keep-within", "30"], ["--keep-within", "3y"]],
    ids=["no-rule", "not-a-number", "no-unit", "unknown-unit"],
)
def test_prune_usage_errors(tmp_path: Path, flags: list[str]) -> None:
    done = run("prune", str(tmp_path), *flags)
    assert done.returncode == 2, done.stderr
