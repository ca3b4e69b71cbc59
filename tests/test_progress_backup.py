"""Backup progress: the server's estimates up front, so a display shows % and ETA
per collection and for the whole run."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import on_a_terminal, seed
from pymongo import MongoClient
from rich.console import Console

from mongosnap import Progress, Stage, backup, display

SIZES = {"apps": 1200, "users": 50, "empty": 0}
"""apps spans two server batches (batch_size 1000)."""


@pytest.fixture(scope="module")
def new_database(mongo_uri: str) -> Iterator[str]:
    """One seeded database for the module: the tests only read it."""
    name = f"mongosnap_test_{uuid.uuid4().hex[:12]}"
    seed(mongo_uri, name, SIZES)
    yield name
    with MongoClient(mongo_uri) as client:
        client.drop_database(name)


@pytest.fixture(scope="module")
def events(
    mongo_uri: str, new_database: str, tmp_path_factory: pytest.TempPathFactory
) -> list[Progress]:
    """Every event of a real backup of the seeded database, in order."""
    found: list[Progress] = []
    where = str(tmp_path_factory.mktemp("backups"))
    asyncio.run(backup(mongo_uri, where, database=new_database, progress=found.append))
    return found


def test_every_collection_is_announced_with_its_estimate_first(
    events: list[Progress], new_database: str
) -> None:
    planned = events[: len(SIZES)]
    assert [e.stage for e in planned] == [Stage.PLANNED] * len(SIZES)
    assert {e.collection: e.total_documents for e in planned} == SIZES
    assert {e.database for e in events} == {new_database}
    for name, count in SIZES.items():
        own = [e for e in events[len(SIZES) :] if e.collection == name]
        assert own[0].stage is Stage.STARTED and own[-1].stage is Stage.DONE
        assert {e.total_documents for e in own} == {count}  # each event carries it
        assert own[-1].documents == count
    assert len([e for e in events if e.stage is Stage.BATCH]) == 3


def render(table: display._Table) -> dict[str, list[str]]:
    """The table as a person sees it: the cells of each row, by its first cell."""
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(table)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    rows = [line.split("  ") for line in text.splitlines()[1:] if line.strip()]
    cells = [[c.strip() for c in row if c.strip()] for row in rows]
    return {row[0]: row[1:] for row in cells}


def test_the_display_shows_percent_eta_and_an_overall_row(
    events: list[Progress], new_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replayed one second apart: halfway through apps, each figure is known."""
    clock = iter(range(1000))
    monkeypatch.setattr(display.time, "monotonic", lambda: float(next(clock)))
    table = display._Table()  # the clock reads 0
    middle = next(i for i, e in enumerate(events) if e.collection == "apps" and e.documents == 1000)
    for event in events[: middle + 1]:
        table.update(event)  # each row starts at the next second
    apps = table.rows[f"{new_database}.apps"]
    percent = f"{apps.documents / SIZES['apps']:.0%}"
    shown = render(table)
    assert shown[f"{new_database}.apps"][3:5] == [percent, apps.eta()]
    assert apps.eta() != ""
    overall = shown["all 3 collections"]
    assert overall[0] == f"{apps.documents:,}"
    assert overall[3] == f"{apps.documents / sum(SIZES.values()):.0%}"
    assert overall[4] != ""  # an ETA for the run
    for event in events[middle + 1 :]:
        table.update(event)
    done = render(table)["all 3 collections"]
    assert done[0] == f"{sum(SIZES.values()):,}" and done[3:] == ["100%", "done"]


def test_backup_draws_percent_and_an_overall_row_on_a_terminal(
    tmp_path: Path, mongo_uri: str, new_database: str
) -> None:
    host = mongo_uri.split("://", 1)[1].rstrip("/")
    code, screen, out = on_a_terminal("backup", str(tmp_path), host, new_database)
    assert code == 0, screen
    last = screen.rsplit("ETA", 1)[1]  # the final frame
    assert f"{new_database}.apps" in last
    assert "all 3 collections" in last and last.count("100%") == 4, last
    assert out.startswith("backed up 3 collections")
