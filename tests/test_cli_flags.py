"""Commands that write no object (list, verify, prune, heal, restore, check) accept
only the flags that do something there."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from helpers import run_cli as run

from mongosnap.cli import build_parser

WRITE_ONLY = ("--sse", "--sse-kms-key-id", "--storage-class", "--part-size")
"""S3 flags that only shape objects being written."""


def flags(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {o for action in sub.choices[command]._actions for o in action.option_strings}


@pytest.mark.parametrize("command", ["list", "verify", "prune", "heal", "restore", "check"])
def test_read_and_delete_commands_leave_out_write_flags(command: str) -> None:
    assert not set(WRITE_ONLY) & flags(command)
    kept = {"--endpoint-url", "--region", "--profile", "--checksum", "--json"}
    assert kept <= flags(command)


@pytest.mark.parametrize("command", ["backup", "oplog"])
def test_writing_commands_keep_them(command: str) -> None:
    assert set(WRITE_ONLY) <= flags(command)


@pytest.mark.parametrize(
    "words",
    [
        ["list", "DEST", "--sse", "AES256"],
        ["verify", "latest", "DEST", "--storage-class", "GLACIER_IR"],
        ["prune", "DEST", "--keep-last", "1", "--part-size", "8"],
    ],
)
def test_a_write_flag_is_refused_where_it_would_do_nothing(
    words: list[str], tmp_path: Path
) -> None:
    done = run(*[str(tmp_path) if w == "DEST" else w for w in words])
    assert done.returncode == 2, done.stderr
    assert "unrecognized arguments" in done.stderr and "Traceback" not in done.stderr
