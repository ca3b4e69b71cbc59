"""A quiet, parseable, consistent command line: every command's --json, the
human text (plurals, separators, an unreachable server), --file-mode, the
fatal line of --log-format json, -vv, a clean stop, and the flags themselves."""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import make_destination, run_cli, subprocess_env
from pymongo import MongoClient

from mongosnap.cli import build_parser

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
LOOKS_LIKE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")
COUNTS = {"documents", "size", "bytes_in", "bytes_out", "bytes_read", "bytes_fetched", "kept"}
DOCUMENTS = 1234


def host_of(uri: str) -> str:
    return uri.removeprefix("mongodb://").rstrip("/")


@pytest.fixture(scope="module")
def backed_up(mongo_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One database of one collection of 1,234 documents (one index: _id), backed
    up once into a directory; the --json of that backup is kept."""
    database = f"mongosnap_test_{uuid.uuid4().hex[:12]}"
    root = tmp_path_factory.mktemp("consistent") / "backups"
    with MongoClient(mongo_uri) as client:
        client[database]["c"].insert_many([{"_id": i, "v": "x" * 20} for i in range(DOCUMENTS)])
        done = run_cli("backup", str(root), host_of(mongo_uri), database, "--json")
        assert done.returncode == 0, done.stderr
        yield {
            "root": root,
            "database": database,
            "backup": done.stdout,
            "host": host_of(mongo_uri),
        }
        client.drop_database(database)
        client.drop_database(database + "_copy")


def _walk(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    yield key, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v, key)


def _check_lines(stdout: str) -> list[Any]:
    """Every stdout line one compact JSON value; every time one format; counts numbers."""
    lines = stdout.splitlines()
    assert lines and stdout.endswith("\n"), stdout
    parsed = []
    for line in lines:
        value = json.loads(line)
        assert json.dumps(value, separators=(",", ":")) == line, line  # compact
        for key, item in _walk(value):
            if isinstance(item, str) and LOOKS_LIKE_TIME.match(item):
                assert TIME.fullmatch(item), (key, item)
            if key in COUNTS and item is not None and not isinstance(item, dict | list):
                assert isinstance(item, int) and not isinstance(item, bool), (key, item)
        parsed.append(value)
    return parsed


def test_every_command_prints_one_json_line_with_one_time_format(
    backed_up: dict[str, Any],
) -> None:
    root, database, host = str(backed_up["root"]), backed_up["database"], backed_up["host"]
    outputs = {"backup": backed_up["backup"]}
    commands = {
        "list": ["list", root],
        "list --uploads": ["list", root, "--uploads"],
        "list --leftovers": ["list", root, "--leftovers"],
        "verify": ["verify", "latest", root],
        "check": ["check", root, database],
        "heal": ["heal", root, host, database, "c"],
        "restore": ["restore", "latest", root, host, database, "--to-database", database + "_copy"],
        "prune": ["prune", root, "--keep-last", "1", "--dry-run"],
        "oplog --list": ["oplog", root, "--list"],
    }
    for name, words in commands.items():
        done = run_cli(*words, "--json")
        assert done.returncode == 0, (name, done.stderr)
        outputs[name] = done.stdout
    again = run_cli(*commands["restore"], "--json")  # the error: one compact line too
    assert again.returncode == 14, again.stderr
    outputs["restore, refused"] = again.stdout
    parsed = {name: _check_lines(out) for name, out in outputs.items()}
    assert parsed["restore, refused"][-1]["error"]["type"] == "CollectionExists"
    assert parsed["list"][0][0]["documents"] == DOCUMENTS
    assert TIME.fullmatch(parsed["backup"][0]["started"])
    assert TIME.fullmatch(parsed["check"][0]["created"])


def test_counts_have_plurals_and_thousands_separators(backed_up: dict[str, Any]) -> None:
    assert json.loads(backed_up["backup"])["documents"] == DOCUMENTS
    root, database, host = str(backed_up["root"]), backed_up["database"], backed_up["host"]
    verified = run_cli("verify", "latest", root)
    assert ": 1 collection, 1,234 documents;" in verified.stdout, verified.stdout
    checked = run_cli("check", root, database)
    assert "1 collection, 1,234 documents)" in checked.stdout, checked.stdout
    healthy = run_cli("heal", root, host, database, "c")
    assert healthy.stdout == f"the watched collection of {database} is present\n"
    pruned = run_cli("prune", root, "--keep-last", "1", "--dry-run")
    assert "would delete 0 archives (0 B), kept 1\n" in pruned.stdout, pruned.stdout


def test_a_backup_summary_and_a_heal_line_speak_of_one_index(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    with MongoClient(mongo_uri) as client:
        client[new_database]["one"].insert_one({"_id": 1, "a": 1})
        client[new_database]["one"].create_index("a")  # _id's is not counted
    host = host_of(mongo_uri)
    done = run_cli("backup", str(tmp_path), host, new_database)
    assert done.stdout.startswith("backed up 1 collection, 1 document, "), done.stdout
    with MongoClient(mongo_uri) as client:
        client[new_database].drop_collection("one")
    dry = run_cli("heal", str(tmp_path), host, new_database, "one", "--dry-run")
    assert "(1 document, 1 index)" in dry.stdout, dry.stdout


def test_an_unreachable_server_is_one_short_line(tmp_path: Path) -> None:
    done = run_cli("backup", str(tmp_path), "127.0.0.1:1", "db", "--connect-timeout", "1")
    assert done.returncode == 11
    assert (
        done.stderr == "mongosnap: error: cannot reach MongoDB at 127.0.0.1:1: connection refused\n"
    )


def test_the_fatal_line_is_json_with_log_format_json(tmp_path: Path) -> None:
    done = run_cli(
        "backup", str(tmp_path), "127.0.0.1:1", "db", "--connect-timeout", "1",
        "--log-format", "json",
    )  # fmt: skip
    assert done.returncode == 11
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert lines[-1]["level"] == "error" and TIME.fullmatch(lines[-1]["time"])
    assert lines[-1]["message"] == "cannot reach MongoDB at 127.0.0.1:1: connection refused"


def _modes(root: Path) -> set[int]:
    return {stat.S_IMODE(p.stat().st_mode) for p in root.iterdir() if p.is_file()}


def test_file_mode_sets_the_mode_of_archives_and_sidecars(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    with MongoClient(mongo_uri) as client:
        client[new_database]["c"].insert_one({"_id": 1})
    host = host_of(mongo_uri)
    assert run_cli("backup", str(tmp_path / "a"), host, new_database).returncode == 0
    assert _modes(tmp_path / "a") == {0o600}
    done = run_cli("backup", str(tmp_path / "b"), host, new_database, "--file-mode", "0640")
    assert done.returncode == 0, done.stderr
    assert _modes(tmp_path / "b") == {0o640} and len(list((tmp_path / "b").iterdir())) == 2
    for bad in ("0666", "0400", "abc", "01777"):
        refused = run_cli("backup", str(tmp_path / "c"), host, new_database, "--file-mode", bad)
        assert refused.returncode == 2 and "--file-mode" in refused.stderr, refused.stderr
    s3 = run_cli("backup", "s3://bucket/x", host, new_database, "--file-mode", "0640")
    assert s3.returncode == 2 and "--file-mode applies to a directory" in s3.stderr, s3.stderr
    assert not (tmp_path / "c").exists()


def test_vv_leaves_out_botocore_not_retrying(tmp_path: Path, testbed: Any, new_bucket: Any) -> None:
    destination = make_destination("moto", tmp_path, testbed, new_bucket)
    done = run_cli("list", destination.url, "-vv", env=subprocess_env(destination))
    assert done.returncode == 0, done.stderr
    assert "Not retrying request" not in done.stderr, done.stderr


def test_a_sigterm_stops_the_oplog_archiver_with_an_info_line(tmp_path: Path) -> None:
    """SIGTERM once the archiver has connected (to a server that never answers:
    the stop is what is tested, and it comes at a known moment)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(60)
        host = f"127.0.0.1:{server.getsockname()[1]}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "mongosnap", "oplog", str(tmp_path), host],
            stderr=subprocess.PIPE,
            text=True,
        )
        connection, _ = server.accept()  # its signal handlers are in place by now
        with connection:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    line = err.partition(" ")[2]  # a long-running command's lines are timestamped
    assert TIME.fullmatch(err.partition(" ")[0]) and err.count("\n") == 1, err
    assert line == (
        "mongosnap: info: terminated (SIGTERM); archiving stopped; "
        "the next start resumes after the last chunk\n"
    )


# -- the command line itself ------------------------------------------------------------


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_has_help_and_shows_a_meaningful_default() -> None:
    for command, parser in _subparsers().items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            name = action.option_strings[-1] if action.option_strings else action.dest
            assert action.help, (command, name)
            default = action.default
            if action.option_strings and not isinstance(default, bool | None):
                if default in (0, [], "", "text"):
                    continue
                assert "default" in action.help, (command, name, action.help)


def test_version_short_flag_and_sorted_exit_codes() -> None:
    version = run_cli("-V")
    assert version.returncode == 0 and version.stdout.startswith("mongosnap ")
    helped = run_cli("--help").stdout
    codes = [int(c) for c in re.findall(r"(\d+) [A-Z]\w+", helped.partition("Exit codes:")[2])]
    assert codes and codes == sorted(codes)


def test_heal_usage_names_database_once() -> None:
    usage = run_cli("heal", "--help").stdout
    assert "DATABASE COLL [COLL ...]" in usage and "[DATABASE COLL ...]" not in usage


@pytest.mark.parametrize(
    "words",
    [
        ["heal", "DEST", "h", "db", "c", "--sse", "AES256"],
        ["restore", "latest", "DEST", "h", "db", "--storage-class", "GLACIER_IR"],
        ["check", "DEST", "--part-size", "8"],
    ],
)
def test_reading_commands_refuse_write_flags(words: list[str], tmp_path: Path) -> None:
    done = run_cli(*[str(tmp_path) if w == "DEST" else w for w in words])
    assert done.returncode in (2, 3), done.stderr  # check: UNKNOWN (3), usage on stderr
    assert "unrecognized arguments" in done.stderr + done.stdout


def test_prune_names_its_flags(tmp_path: Path) -> None:
    done = run_cli("prune", str(tmp_path))
    assert done.returncode == 2
    assert "--keep-last, --keep-within or --keep-daily" in done.stderr, done.stderr


@pytest.mark.parametrize(
    "words",
    [
        ["backup", "DEST", "127.0.0.1:9", "db"],
        ["restore", "latest", "DEST", "127.0.0.1:9", "db"],
        ["oplog", "DEST", "127.0.0.1:9"],
    ],
)
def test_a_uri_in_the_environment_and_host_is_named(words: list[str], tmp_path: Path) -> None:
    env = subprocess_env(MONGOSNAP_URI="mongodb://127.0.0.1:9/")
    done = run_cli(*[str(tmp_path) if w == "DEST" else w for w in words], env=env)
    assert done.returncode == 2, done.stderr
    assert "give either HOST or $MONGOSNAP_URI, not both" in done.stderr, done.stderr
