"""The benchmarks' fake wire server: real clients read its corpus back exactly.

A small corpus keeps this quick; it guards the harness against rot (a driver
upgrade that needs a command it does not answer, a framing slip).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import split_bson, tar_members
from pymongo import MongoClient

import mongosnap

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from fakewire import Corpus, FakeServer
from raw_drain import drain

COLLECTIONS, DOCUMENTS, SIZE = 3, 700, 300


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeServer]:
    with FakeServer.spawn(COLLECTIONS, DOCUMENTS, SIZE) as server:
        yield server


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    # The server generates the same corpus from the same seed.
    return Corpus.generate(COLLECTIONS, DOCUMENTS, SIZE)


def test_pymongo_drains_every_document(fake: FakeServer, corpus: Corpus) -> None:
    with MongoClient(fake.uri) as client:
        names = sorted(client.bench.list_collection_names())
        assert names == sorted(corpus.collections)
        for name in names:
            raw = b"".join(client.bench[name].find_raw_batches(batch_size=256))
            assert split_bson(raw) == corpus.collections[name]


def test_mongosnap_backs_it_up_byte_for_byte(
    fake: FakeServer, corpus: Corpus, tmp_path: Path
) -> None:
    result = asyncio.run(mongosnap.backup(fake.uri, tmp_path, database="bench"))
    members = tar_members((tmp_path / result.archive_key).read_bytes())
    for name, documents in corpus.collections.items():
        assert split_bson(members[f"dump/bench/{name}.bson"]) == documents
    assert result.documents == COLLECTIONS * DOCUMENTS


def test_raw_drain_reads_every_document(fake: FakeServer, corpus: Corpus) -> None:
    # benchmarks/raw_drain.py is bench_client's floor of a Python reader: it must
    # read what PyMongo reads, batch boundaries included (256 of 700 documents).
    read = asyncio.run(drain(fake.uri, 256))
    assert sorted(read) == sorted(corpus.collections)
    for name, documents in corpus.collections.items():
        assert split_bson(read[name]) == documents
