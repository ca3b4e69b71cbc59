"""The manifest index (docs/format.md, section 18): built from a real archive's
manifest, read back from the archive's own manifest member in every codec,
and any damage to it refused (CorruptArchive), never a wrong entry used."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import AsyncIterator, Iterator

import pytest
from index_support import collection_name, write_many
from test_fuzz import mutate

from mongosnap._errors import CorruptArchive, MongosnapError
from mongosnap.archive.index import (
    INDEX_THRESHOLD,
    MAX_INDEX_BYTES,
    build_index,
    index_key,
)
from mongosnap.archive.manifest import Manifest, manifest_key
from mongosnap.catalog import newest_archives
from mongosnap.indexed import partial_manifest
from mongosnap.pipelines.verify import verify
from mongosnap.storage.memory import MemoryStorage

CASES = int(os.environ.get("MONGOSNAP_FUZZ_CASES", "5000")) // 10
SEED = int(os.environ.get("MONGOSNAP_FUZZ_SEED", "0"))


class ReadCounting(MemoryStorage):
    """A real in-memory storage that counts the bytes every read returns, by key."""

    def __init__(self) -> None:
        super().__init__()
        self.read_by_key: dict[str, int] = {}

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        async for chunk in super().read(key, start, end):
            self.read_by_key[key] = self.read_by_key.get(key, 0) + len(chunk)
            yield chunk

    async def read_bytes(self, key: str, *, limit: int) -> bytes:
        data = await super().read_bytes(key, limit=limit)
        self.read_by_key[key] = self.read_by_key.get(key, 0) + len(data)
        return data


@pytest.fixture(scope="module")
def big() -> Iterator[tuple[ReadCounting, str, Manifest]]:
    """10,000 collections in one database, gzip: a 5 MB manifest."""
    storage = ReadCounting()
    key, manifest, _ = asyncio.run(write_many(storage, 10_000))
    yield storage, key, manifest


async def size_of(storage: MemoryStorage, key: str) -> int:
    return (await storage.stat(key)).size


async def test_one_collection_of_10000_reads_at_most_64_kib(
    big: tuple[ReadCounting, str, Manifest],
) -> None:
    storage, key, manifest = big
    storage.read_by_key.clear()
    size = await size_of(storage, key)

    found = await partial_manifest(storage, key, size, "gzip", [("app", "c07777")])

    assert found is not None
    assert sum(storage.read_by_key.values()) <= 64 * 1024
    assert manifest_key(key) not in storage.read_by_key  # only its HEAD
    wanted = [c for c in found.collections if c.name == "c07777"]
    assert wanted == [c for c in manifest.collections if c.name == "c07777"]
    assert (found.manifest, found.totals, found.databases) == (
        manifest.manifest,
        manifest.totals,
        manifest.databases,
    )
    assert len(found.collections) <= 48


@pytest.mark.parametrize("codec", ["gzip", "zstd", "none"])
async def test_every_entry_reads_back_in_every_codec(codec: str) -> None:
    storage = MemoryStorage()
    key, manifest, _ = await write_many(storage, 300, codec=codec, databases=("a", "b"))
    size = await size_of(storage, key)
    by_key = {(c.database, c.name): c for c in manifest.collections}

    for database in ("a", "b"):
        for i in (0, 47, 48, 199, 299):
            wanted = (database, collection_name(i))
            found = await partial_manifest(storage, key, size, codec, [wanted])
            assert found is not None
            assert by_key[wanted] in found.collections


async def test_a_name_in_no_page_is_left_to_the_whole_sidecar() -> None:
    storage = MemoryStorage()
    key, _, _ = await write_many(storage, INDEX_THRESHOLD)
    size = await size_of(storage, key)

    for absent in [("app", "c00000a"), ("app", "zzz"), ("aaa", "c00001")]:
        assert await partial_manifest(storage, key, size, "gzip", [absent]) is None


async def test_small_or_unsorted_manifests_get_no_index() -> None:
    storage = MemoryStorage()
    key, manifest, document = await write_many(storage, INDEX_THRESHOLD - 1)
    assert build_index(manifest, document) is None
    assert [o.key async for o in storage.list()] == [key, manifest_key(key)]
    key, manifest, document = await write_many(MemoryStorage(), INDEX_THRESHOLD)
    assert build_index(manifest, document) is not None
    swapped = list(manifest.collections)
    swapped[3], swapped[4] = swapped[4], swapped[3]
    unsorted = Manifest.from_json(document)
    object.__setattr__(unsorted, "collections", tuple(swapped))
    assert build_index(unsorted, document) is None


async def test_the_catalog_falls_back_to_the_sidecar_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    storage = MemoryStorage()
    key, manifest, _ = await write_many(storage, INDEX_THRESHOLD)
    wanted = {"c00100"}

    infos = [i async for i in newest_archives(storage, database="app", collections=wanted)]
    assert infos[0].partial and len(infos[0].manifest.collections) <= 48  # type: ignore[union-attr]

    index = json.loads(await storage.read_bytes(index_key(key), limit=MAX_INDEX_BYTES))
    index["pages"][2][4] = "0" * 64  # the page holding c00100, with another hash
    await storage.delete(index_key(key))
    await storage.put(index_key(key), json.dumps(index).encode())
    with caplog.at_level(logging.WARNING, logger="mongosnap.catalog"):
        infos = [i async for i in newest_archives(storage, database="app", collections=wanted)]
    assert not infos[0].partial and infos[0].manifest == manifest
    assert "manifest index not used" in caplog.text


async def test_a_gone_sidecar_is_not_read_through_the_index() -> None:
    storage = MemoryStorage()
    key, _, _ = await write_many(storage, INDEX_THRESHOLD)
    await storage.delete(manifest_key(key))
    size = await size_of(storage, key)
    with pytest.raises(MongosnapError):
        await partial_manifest(storage, key, size, "gzip", [("app", "c00001")])
    infos = [i async for i in newest_archives(storage, database="app", collections={"c00001"})]
    assert not infos[0].trusted  # incomplete, as without an index


def test_hostile_indexes_are_refused_or_give_genuine_entries() -> None:
    """Mutated and structurally edited indexes: each is refused with
    CorruptArchive, or every entry it yields is the manifest's own."""
    asyncio.run(_fuzz())


async def _fuzz() -> None:
    storage = MemoryStorage()
    key, manifest, _ = await write_many(storage, 500, codec="none")
    size = await size_of(storage, key)
    good = await storage.read_bytes(index_key(key), limit=MAX_INDEX_BYTES)
    genuine = set(manifest.collections)
    rng = random.Random(SEED + 18)
    donors = [good, b'[1, "a", {}]', b"\xff" * 8]
    used = refused = 0
    for case in range(CASES):
        data = _structural(rng, good) if case % 2 else mutate(rng, good, donors)
        await storage.delete(index_key(key))
        await storage.put(index_key(key), data)
        wanted = [("app", collection_name(rng.randrange(500)))]
        try:
            found = await partial_manifest(storage, key, size, "none", wanted)
        except CorruptArchive:
            refused += 1
            continue
        if found is not None:
            assert set(found.collections) <= genuine
            used += 1
    assert refused > CASES // 2 and used > 0


def _structural(rng: random.Random, good: bytes) -> bytes:
    """An index that parses but lies: ranges moved, hashes swapped, keys changed."""
    doc = json.loads(good)
    pages = doc["pages"]
    page = rng.choice(pages)
    kind = rng.randrange(6)
    if kind == 0:
        page[2] += rng.choice([-7, -1, 1, 5])
    elif kind == 1:
        page[4] = rng.choice(pages)[4]
    elif kind == 2:
        page[1] = rng.choice(pages)[1]
    elif kind == 3:
        doc["manifest"]["offset"] += rng.choice([-512, 1, 512])
    elif kind == 4:
        doc["head"][1] += rng.choice([-1, 1])
    else:
        del pages[rng.randrange(len(pages))]
    return json.dumps(doc).encode()


async def test_a_huge_index_is_not_read_past_its_limit() -> None:
    storage = MemoryStorage()
    key, _, _ = await write_many(storage, INDEX_THRESHOLD)
    await storage.delete(index_key(key))
    await storage.put(index_key(key), b" " * (MAX_INDEX_BYTES + 1))
    size = await size_of(storage, key)
    with pytest.raises(MongosnapError):
        await partial_manifest(storage, key, size, "gzip", [("app", "c00001")])


async def test_verify_warns_of_an_index_that_is_not_the_manifests(
    caplog: pytest.LogCaptureFixture,
) -> None:
    storage = MemoryStorage()
    key, _, _ = await write_many(storage, INDEX_THRESHOLD)
    with caplog.at_level(logging.WARNING, logger="mongosnap.verify"):
        assert (await verify(storage, key)).ok
    assert "manifest index" not in caplog.text

    index = json.loads(await storage.read_bytes(index_key(key), limit=MAX_INDEX_BYTES))
    index["head"][2] = "0" * 64
    await storage.delete(index_key(key))
    await storage.put(index_key(key), json.dumps(index).encode())
    with caplog.at_level(logging.WARNING, logger="mongosnap.verify"):
        report = await verify(storage, key)
    assert report.ok  # costs the fast path only: not a problem of the archive
    assert "the manifest index does not match the manifest" in caplog.text
