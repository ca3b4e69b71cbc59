"""Fixtures shared by the oplog tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pymongo import MongoClient


@pytest.fixture
def target_database(mongo_uri: str) -> Iterator[str]:
    """A fresh database to restore into, beside the source; dropped afterwards."""
    name = f"restored_{uuid.uuid4().hex[:10]}"
    yield name
    with MongoClient(mongo_uri) as client:
        client.drop_database(name)
