"""drill and diff read an encrypted archive with its key, and stop with exit
61 without one (never standing in an older plain archive for the newest).
Real FerretDB and a local directory."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_cli, seed

from mongosnap.crypto.keys import X25519Identity


def _host(uri: str) -> str:
    return uri.split("://", 1)[1].rstrip("/")


def test_drill_and_diff_open_an_encrypted_archive_with_its_key(
    tmp_path: Path, mongo_uri: str, new_database: str
) -> None:
    seed(mongo_uri, new_database, {"apps": 20, "users": 200})
    identity = X25519Identity.generate()
    key = tmp_path / "key.txt"
    key.write_text(identity.export() + "\n")
    dest, host = str(tmp_path / "dest"), _host(mongo_uri)
    plain = run_cli("backup", dest, host, new_database, "-q")
    assert plain.returncode == 0, plain.stderr
    made = run_cli("backup", dest, host, new_database, "--encrypt-to", str(identity.recipient))
    assert made.returncode == 0, made.stderr

    drill, diff = ["drill", dest, host, new_database], ["diff", dest, host, new_database]
    for command in (drill, [*diff, "latest", "live"]):
        refused = run_cli(*command)
        assert refused.returncode == 61, refused.stderr
        assert "--identity" in refused.stderr and "Traceback" not in refused.stderr

    drilled = run_cli("drill", dest, host, new_database, "--identity", str(key), "--json")
    assert drilled.returncode == 0, drilled.stderr
    report = json.loads(drilled.stdout)
    assert report["archive_key"].endswith(".tar.gz.age") and report["ok"]
    assert {c["name"]: c["documents"] for c in report["collections"]} == {"apps": 20, "users": 200}

    same = run_cli(
        "diff", dest, host, new_database, "latest", "live", "--identity", str(key), "--json"
    )
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout)["same"] is True
