"""--on-trip: run in the background, one at a time per rule, failures only logged;
and the oplog command's usage errors for tripwires (exit 2 before any work)."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import pytest
from helpers import run_cli

from mongosnap._errors import UsageError
from mongosnap.oplog.trip_command import TripCommand
from mongosnap.oplog.tripwire import Trip, parse

RULE = parse("app.users:deletes>1/60s")
TRIP = Trip("app.users", RULE, 2, 1_796_000_000, 1_796_000_060)


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "hook.py"
    path.write_text(body)
    return f"{sys.executable} {path}"


async def test_a_failing_command_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    command = TripCommand(_script(tmp_path, "import sys; sys.exit(3)"))
    command(TRIP)  # returns at once: the run goes on in the background
    await command.close()
    assert (command.runs, command.failures) == (1, 1)
    assert any("exited with 3" in r.getMessage() for r in caplog.records)


async def test_one_run_at_a_time_per_rule(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gate = tmp_path / "gate"
    body = f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.01)\n"
    command = TripCommand(_script(tmp_path, body))
    other = Trip("app.users", parse("app.users:updates>1/60s"), 2, 0, 60)
    caplog.set_level(logging.WARNING)
    command(TRIP)
    command(TRIP)  # its rule's run is still going: skipped
    command(other)  # another rule: runs
    await asyncio.sleep(0)
    gate.touch()
    await command.close()
    assert (command.runs, command.failures) == (2, 0)
    assert sum("previous run is still going" in r.getMessage() for r in caplog.records) == 1


async def test_close_ends_a_run_that_hangs(tmp_path: Path) -> None:
    command = TripCommand(_script(tmp_path, "import time; time.sleep(600)"))
    command(TRIP)
    await asyncio.sleep(0.2)
    await command.close(grace=0.1)
    assert all(task.done() for task in command.running.values())


@pytest.mark.parametrize("text", ["", "   ", "'unclosed", "/no/such/program --flag"])
def test_bad_commands_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        TripCommand(text)


AGE_RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tripwire", "app.users:deletes>1/60"], "tripwire 'app.users:deletes>1/60'"),
        (["--on-trip", "true"], "need --tripwire"),
        (["--stage"], "it needs --tripwire"),
        (
            ["--tripwire", "app.*:deletes>5/1m", "--stage", "--encrypt-to", AGE_RECIPIENT],
            "undo cannot read when it is encrypted",
        ),
        (["--tripwire", "app.*:shrink>5%", "--on-trip", "/no/such/hook"], "not an executable"),
    ],
)
def test_the_oplog_command_refuses_bad_tripwire_flags(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    done = run_cli("oplog", str(tmp_path / "dest"), "127.0.0.1:1", *extra)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert not (tmp_path / "dest").exists()
