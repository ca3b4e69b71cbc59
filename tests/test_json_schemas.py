"""Every command's ``--json`` output matches the schema documented in docs/cli.md.

The schema block is read from the docs themselves ("JSON output and errors",
"Schemas"), so an output key that is added, dropped or retyped without the
docs following fails here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli, seed
from pymongo import MongoClient

from mongosnap import archive_oplog
from mongosnap.oplog.archiver import ArchiverStats

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
COMMANDS = {
    *("backup", "heal", "restore", "list", "list --uploads", "verify", "prune", "check"),
    "undo",
    *("oplog --list", "list --leftovers", "error", "copy", "drill", "diff", "rekey"),
}
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
SCALARS: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "time": lambda v: isinstance(v, str) and TIME.match(v) is not None,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array of string": lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
    "map of string": lambda v: isinstance(v, dict) and all(isinstance(s, str) for s in v.values()),
}


@dataclass
class Node:
    """One documented value: its type, whether null is allowed, its keys if an object."""

    type: str
    nullable: bool = False
    keys: dict[str, Node] = field(default_factory=dict)
    optional: set[str] = field(default_factory=set)


def documented() -> dict[str, Node]:
    """The schema block of docs/cli.md, parsed by indentation."""
    text = DOCS.read_text()
    section = text[text.index("### Schemas") :]
    block = section[section.index("```text\n") + len("```text\n") :]
    block = block[: block.index("```")]
    roots: dict[str, Node] = {}
    stack: list[tuple[int, Node]] = []
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip())
        name, _, kind = line.strip().partition(": ")
        nullable = kind.endswith(" or null")
        node = Node(kind.removesuffix(" or null"), nullable)
        assert node.type in SCALARS or node.type in ("object", "array of object"), line
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if not stack:
            roots[name] = node
        else:
            parent = stack[-1][1]
            if name.endswith("?"):
                name = name[:-1]
                parent.optional.add(name)
            parent.keys[name] = node
        stack.append((indent, node))
    return roots


def problems(value: Any, node: Node, where: str = "$") -> list[str]:
    """Every way ``value`` departs from ``node``; empty when it matches."""
    if value is None:
        return [] if node.nullable else [f"{where}: null"]
    if node.type in SCALARS:
        return [] if SCALARS[node.type](value) else [f"{where}: {value!r} is no {node.type}"]
    if node.type == "array of object":
        if not isinstance(value, list):
            return [f"{where}: {value!r} is no array"]
        item = Node("object", keys=node.keys, optional=node.optional)
        return [p for i, v in enumerate(value) for p in problems(v, item, f"{where}[{i}]")]
    if not isinstance(value, dict):
        return [f"{where}: {value!r} is no object"]
    if not node.keys:
        return []  # free-form
    found: list[str] = []
    for key in sorted(set(value) - set(node.keys)):
        found.append(f"{where}.{key}: not documented")
    for key in sorted(set(node.keys) - set(value) - node.optional):
        found.append(f"{where}.{key}: missing")
    for key in sorted(set(value) & set(node.keys)):
        found.extend(problems(value[key], node.keys[key], f"{where}.{key}"))
    return found


def check(command: str, output: Any) -> None:
    assert problems(output, documented()[command]) == []


def run_json(*args: str, code: int = 0) -> Any:
    done = run_cli(*args, "--json")
    assert done.returncode == code, done.stderr
    return json.loads(done.stdout.splitlines()[0] if "\n{" in done.stdout else done.stdout)


@pytest.fixture
def backed_up(mongo_uri: str, new_database: str, tmp_path: Path) -> tuple[str, str]:
    """A database of two collections and a directory holding one backup of it."""
    seed(mongo_uri, new_database, {"apps": 3, "users": 2})
    dest = str(tmp_path / "backups")
    output = run_json("backup", dest, "--uri", mongo_uri, new_database)
    check("backup", output)
    assert [c["name"] for c in output["collections"]] == ["apps", "users"]
    return dest, new_database


def test_every_command_has_a_documented_schema() -> None:
    assert set(documented()) == COMMANDS


def test_the_checker_sees_an_extra_a_missing_and_a_mistyped_key() -> None:
    schema = documented()["verify"]
    good: dict[str, Any] = {
        **{"destination": "/b", "archive": "k", "status": "complete", "ok": True},
        **{"documents": 1, "bytes_read": 9, "duration": 0.5, "problems": []},
        "collections": [{"database": "d", "name": "c", "documents": 1, "bytes": 9, "ok": True}],
    }
    assert problems(good, schema) == []
    assert problems({**good, "new": 1}, schema) == ["$.new: not documented"]
    assert problems({k: v for k, v in good.items() if k != "ok"}, schema) == ["$.ok: missing"]
    bad = {**good, "collections": [{**good["collections"][0], "documents": "1"}]}
    assert problems(bad, schema) == ["$.collections[0].documents: '1' is no integer"]
    assert problems({**good, "duration": True}, schema) == ["$.duration: True is no number"]
    assert problems("2026-12-01T03:30:00Z", Node("time")) == []
    assert problems("2026-12-01T03:30:00+00:00", Node("time")) != []


def test_list_verify_check_and_prune(backed_up: tuple[str, str]) -> None:
    dest, database = backed_up
    listed = run_json("list", dest)
    check("list", listed)
    assert len(listed) == 1
    verified = run_json("verify", "latest", dest)
    check("verify", verified)
    assert len(verified["collections"]) == 2
    check("check", run_json("check", dest, database))
    pruned = run_json("prune", dest, "--keep-last", "1")
    check("prune", pruned)
    assert len(pruned["archives"]) == 1


def test_list_uploads(backed_up: tuple[str, str]) -> None:
    dest, _ = backed_up
    # An unfinished write of the local storage: a hidden '.partial' file beside its target.
    (Path(dest) / ".2026-01-01-00-00-00-mongodb-dump.tar.gz.x1.partial").write_bytes(b"x")
    uploads = run_json("list", dest, "--uploads")
    check("list --uploads", uploads)
    assert len(uploads) == 1


def test_list_leftovers(backed_up: tuple[str, str]) -> None:
    dest, _ = backed_up
    (Path(dest) / "2026-01-01-00-00-00-mongodb-dump.tar.gz.claim").write_bytes(b"{}")
    leftovers = run_json("list", dest, "--leftovers")
    check("list --leftovers", leftovers)
    assert [x["kind"] for x in leftovers] == ["name claim"]


def test_heal_and_restore(backed_up: tuple[str, str], mongo_uri: str) -> None:
    dest, database = backed_up
    with MongoClient(mongo_uri) as client:
        client[database].drop_collection("apps")
    healed = run_json("heal", dest, "--uri", mongo_uri, database, "apps", "users")
    check("heal", healed)
    assert [c["name"] for c in healed["restored"]] == ["apps"]
    with MongoClient(mongo_uri) as client:
        client[database].drop_collection("users")
    restored = run_json("restore", "latest", dest, "--uri", mongo_uri, database, "-c", "users")
    check("restore", restored)
    assert [c["name"] for c in restored["collections"]] == ["users"]


def test_drill_diff_and_check_with_drills(backed_up: tuple[str, str], mongo_uri: str) -> None:
    dest, database = backed_up
    drilled = run_json("drill", dest, "--uri", mongo_uri, database, "--compare-live")
    check("drill", drilled)
    assert drilled["ok"] is True and len(drilled["collections"]) == 2
    checked = run_json("check", dest, database, "--max-drill-age", "1d")
    check("check", checked)
    assert checked["drill"]["record"] == drilled["record_key"]
    with MongoClient(mongo_uri) as client:
        client[database].apps.delete_one({})
    differs = run_json("diff", dest, "--uri", mongo_uri, database, "latest", "live", code=46)
    check("diff", differs)
    assert [c["state"] for c in differs["collections"]] == ["changed", "same"]


def test_errors_and_a_failed_check(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()  # empty; a missing directory is a missing bucket (21)
    empty = str(tmp_path / "empty")
    error = run_json("verify", "latest", empty, code=40)
    check("error", error)
    assert error["error"]["type"] == "NoBackupsFound"
    critical = run_json("check", empty, code=2)  # nothing there: CRITICAL, no error object
    check("check", critical)
    assert critical["status"] == "CRITICAL" and "error" not in critical
    unknown = run_json("check", empty, "db", "extra", code=3)  # could not look: UNKNOWN
    check("check", unknown)
    assert unknown["error"]["type"] == "UsageError"


async def test_oplog_list(mongo_oplog_uri: str, tmp_path: Path) -> None:
    dest = tmp_path / "oplog"
    with MongoClient(mongo_oplog_uri) as client:
        client[f"schema_{uuid.uuid4().hex[:8]}"]["c"].insert_one({"n": 1})
    stats = ArchiverStats()
    task = asyncio.create_task(archive_oplog(mongo_oplog_uri, str(dest), interval=0.2, stats=stats))
    try:
        while stats.last is None:
            assert not task.done(), task
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    listed = await asyncio.to_thread(run_json, "oplog", str(dest), "--list")
    check("oplog --list", listed)
    assert listed["spans"]
