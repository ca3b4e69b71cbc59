"""benchmarks/bench.py keeps working: a tiny run of every contender, in CI.

The run uses this session's FerretDB and versitygw and the real mongo-tools
(found as tests/test_mongo_tools.py finds them); a missing tool fails it.
bench.py verifies each heal and restore against the source's fingerprints
and stops on a difference; the fingerprint test shows one changed byte is seen.
The smoke run takes the 1k and many cases; the layouts test covers all four.
"""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import bson
from helpers import subprocess_env
from pymongo import MongoClient

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "bench.py"
CONTENDERS = {
    "backup/mongosnap",
    "backup/legacy",
    "backup/mongodump-archive",
    "backup/drain-floor",
    "backup/upload-floor",
    "heal/mongosnap",
    "heal/legacy",
    "heal/insert-floor",
    "restore/mongosnap",
    "restore/mongorestore",
    "restore/insert-floor",
}
STAGES = {
    "backup/legacy": ["mongodump --out", "tar -czf", "upload"],
    "heal/legacy": ["download", "tar -xzf", "mongorestore"],
}


def _workload() -> ModuleType:
    path = ROOT / "benchmarks" / "workload.py"
    spec = importlib.util.spec_from_file_location("bench_workload", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def _positive(figures: dict[str, Any]) -> bool:
    return all(figures[k] > 0 for k in ("wall", "cpu", "rss_mib"))


def test_smoke_runs_every_contender_and_verifies_heal_and_restore(
    testbed: Any,
    mongo_uri: str,
    new_bucket: Any,
    new_database: str,
    tmp_path: Path,
    _mongo_admin: MongoClient[dict[str, Any]],
) -> None:
    gw = testbed.s3["versitygw"]
    out = tmp_path / "bench.json"
    env = subprocess_env() | {
        "AWS_ACCESS_KEY_ID": gw.access_key,
        "AWS_SECRET_ACCESS_KEY": gw.secret_key,
        "AWS_DEFAULT_REGION": gw.region,
    }
    argv = [sys.executable, str(BENCH), "--smoke", "--json", str(out), "--mongo-uri", mongo_uri]
    argv += ["--s3-endpoint", gw.endpoint_url, "--bucket", new_bucket(gw)]
    argv += ["--database", new_database, "--work-dir", str(tmp_path)]
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    finally:
        _mongo_admin.drop_database(f"{new_database}_restored")
    assert done.returncode == 0, done.stderr[-4000:]
    figures = json.loads(out.read_text())
    assert set(figures["cases"]) == {"1k", "many"}
    for name, case in figures["cases"].items():
        assert set(case["contenders"]) == CONTENDERS, name
        heal = case["source"]["heal"]
        assert heal["documents"] == case["layout"][0]["documents"] > 0, name
        assert case["source_heal"]["digest"] != case["source_all"]["digest"]
        for key, contender in case["contenders"].items():
            (run,) = contender["runs"]  # one round
            assert _positive(run), (name, key, run)
            if key in STAGES:
                assert list(run["stages"]) == STAGES[key], (name, key)
                assert all(_positive(stage) for stage in run["stages"].values()), (name, key)
            if key.startswith("heal/"):
                assert run["verified"] == case["source_heal"], (name, key)
            if key.startswith("restore/"):
                assert run["verified"] == case["source_all"], (name, key)
        assert case["heal_bytes"]["bytes_fetched"] >= case["heal_bytes"]["compressed_share"] > 0
        assert "\n| mongosnap backup / legacy pipeline |" in done.stdout
    assert len(figures["cases"]["many"]["layout"]) == 20


def test_a_missing_tool_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "mongodump").write_text("")
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--mongo-tools", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "mongorestore, bsondump" in done.stderr, done.stderr


def test_fingerprint_sees_one_changed_byte(mongo_uri: str, new_database: str) -> None:
    workload = _workload()
    with MongoClient(mongo_uri) as client:
        db = client[new_database]
        docs = [{"_id": i, "s": f"value {i}"} for i in range(50)]
        db.a.insert_many(docs)
        db.b.insert_many(list(reversed(docs)))  # the same documents, another order
        db.c.insert_many(docs)
        db.c.update_one({"_id": 17}, {"$set": {"s": "value 18"}})  # one byte differs
        a, b, c = (workload.fingerprint(db, name) for name in "abc")
    assert a == b
    assert (a.documents, a.bytes) == (c.documents, c.bytes)
    assert a.digest != c.digest


def test_layouts_of_every_case() -> None:
    workload = _workload()
    mib = 1 << 20
    plans = {
        case: workload.layout(case, total_bytes=10 * mib, big_bytes=4 * mib, collections=20)
        for case in workload.CASES
    }
    for case, plan in plans.items():
        sizes = {c.name: c.documents * c.doc_bytes for c in plan}
        assert plan[0].name == "heal", case
        assert abs(sizes["heal"] / sum(sizes.values()) - 0.1) < 0.01, case
        assert abs(sum(sizes.values()) - 10 * mib) < 0.01 * 10 * mib, case
    assert len(plans["1k"]) == len(plans["200b"]) == 5
    assert {c.doc_bytes for c in plans["200b"]} == {200}
    assert len(plans["many"]) == 20
    assert {c.name: c.documents for c in plans["big"]}["big"] == 4 * mib // 1024
    rng = random.Random(1)
    for size in (1024, 200):
        encoded = len(bson.encode(workload.document(3, size, rng))) + workload.ID_ELEMENT
        assert abs(encoded - size) <= size // 10, size


def test_only_some_groups(
    testbed: Any,
    mongo_uri: str,
    new_bucket: Any,
    new_database: str,
    tmp_path: Path,
    _mongo_admin: MongoClient[dict[str, Any]],
) -> None:
    """--only restore: the backups it reads are made, unmeasured; only its
    contenders are reported, each verified."""
    gw = testbed.s3["versitygw"]
    out = tmp_path / "bench.json"
    env = subprocess_env() | {
        "AWS_ACCESS_KEY_ID": gw.access_key,
        "AWS_SECRET_ACCESS_KEY": gw.secret_key,
        "AWS_DEFAULT_REGION": gw.region,
    }
    argv = [sys.executable, str(BENCH), "--smoke", "--case", "many", "--only", "restore"]
    argv += ["--json", str(out), "--mongo-uri", mongo_uri, "--s3-endpoint", gw.endpoint_url]
    argv += ["--bucket", new_bucket(gw), "--database", new_database, "--work-dir", str(tmp_path)]
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    finally:
        _mongo_admin.drop_database(f"{new_database}_restored")
    assert done.returncode == 0, done.stderr[-4000:]
    case = json.loads(out.read_text())["cases"]["many"]
    assert set(case["contenders"]) == {c for c in CONTENDERS if c.startswith("restore/")}
    for contender in case["contenders"].values():
        (run,) = contender["runs"]
        assert run["verified"] == case["source_all"]
    assert set(case["ratios"]) == {
        "mongosnap restore / mongorestore",
        "mongosnap restore / insert floor",
    }
    assert "\n| mongosnap restore / mongorestore |" in done.stdout
    assert "backup:" not in done.stdout
