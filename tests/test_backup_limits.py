"""A backup that no reader could accept is refused before anything is dumped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers import seed

from mongosnap import UsageError, backup
from mongosnap.pipelines import backup as backup_module


def test_more_collections_than_a_manifest_holds_is_refused_up_front(
    mongo_uri: str, new_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(mongo_uri, new_database, {"a": 3, "b": 2, "c": 1})
    monkeypatch.setattr(backup_module, "MAX_COLLECTIONS", 2)
    with pytest.raises(UsageError, match="3 collections to back up, over the 2"):
        asyncio.run(backup(mongo_uri, tmp_path / "store", database=new_database))
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*"))
