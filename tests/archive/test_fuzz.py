"""Bounded, deterministic fuzzing of every parser that reads an untrusted archive.

A seeded mutator works on valid inputs (the archive stream in each codec, the
manifest, metadata files, BSON streams) and on random JSON structures. Every
case must either parse or raise one of mongosnap's own errors; what parses
must stay within the declared limits. Seeds are fixed: a failure replays.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import bson
import pytest
from archive_support import build_archive, many_types_documents
from test_manifest import sample

from mongosnap import MongosnapError
from mongosnap.archive import BsonSplitter, Manifest, bsonstream, read_archive
from mongosnap.archive.bsonstream import MAX_DOCUMENT
from mongosnap.archive.manifest import MAX_COLLECTIONS
from mongosnap.archive.metadata import MAX_INDEXES, build_metadata, parse_metadata
from mongosnap.codecs import get_codec

CASES = int(os.environ.get("MONGOSNAP_FUZZ_CASES", "5000"))
SEED = int(os.environ.get("MONGOSNAP_FUZZ_SEED", "0"))
"""Cases per target and a seed offset; CI runs 5,000 cases from offset 0. Set
MONGOSNAP_FUZZ_CASES / MONGOSNAP_FUZZ_SEED for a longer or different search."""
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x22, 0x5B, 0x5D, 0x7B, 0x7D, 0x5C, 0x2C, 0x3A]
INT32S = [0, 1, 4, 5, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, MAX_DOCUMENT + 1]


def mutate(rng: random.Random, data: bytes, donors: list[bytes]) -> bytes:
    """One to four random edits: flips, interesting bytes and lengths, cuts, splices."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(len(out) + 1)
        kind = rng.randrange(9)
        if kind == 0 and out:
            out[min(pos, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1 and out:
            out[min(pos, len(out) - 1)] = rng.choice(INTERESTING)
        elif kind == 2:
            out[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif kind == 3:
            del out[pos : pos + rng.randint(1, 64)]
        elif kind == 4:
            out[pos : pos + 4] = rng.choice(INT32S).to_bytes(4, "little")
        elif kind == 5:
            start = rng.randrange(len(out) + 1)
            out[pos:pos] = out[start : start + rng.randint(1, 256)]
        elif kind == 6:
            del out[pos:]
        elif kind == 7:
            donor = rng.choice(donors)
            start = rng.randrange(len(donor) + 1)
            out[pos:pos] = donor[start : start + rng.randint(1, 512)]
        else:
            out[pos:pos] = rng.choice([b"[" * 3000, b"{" * 3000, b'{"a":' * 2000, b'"\\'])
    return bytes(out)


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value, sometimes shaped like Extended JSON."""
    kind = rng.randrange(10 if depth < 6 else 5)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 2**53, 2**64, 1.5, -0.0, 10**30])
    if kind == 2:
        return rng.choice(["", "x", "$oid", "Z", "2026-03-01T02:03:04Z", "a" * 5000])
    if kind == 3:
        return rng.choice(["0" * 24, "zz", "1e400", "99999999999999999999", "-1"])
    if kind == 4:
        return rng.choice(["collection", "view", "gzip", "dump/a/b.bson", "\0"])
    if kind in (5, 6):
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == 7:
        key = rng.choice(["$oid", "$date", "$numberLong", "$numberDecimal", "$binary", "$regex"])
        return {key: random_json(rng, depth + 1)}
    keys = ["options", "indexes", "key", "name", "uuid", "type", "collectionName", "format"]
    keys += ["collections", "bson", "metadata", "offset", "end", "size", "totals", "source"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def structural(rng: random.Random, doc: Any) -> Any:
    """A copy of a JSON document with one value somewhere replaced by a random one."""
    if isinstance(doc, dict) and doc and rng.random() < 0.8:
        key = rng.choice(list(doc))
        return {**doc, key: structural(rng, doc[key])}
    if isinstance(doc, list) and doc and rng.random() < 0.8:
        i = rng.randrange(len(doc))
        return [*doc[:i], structural(rng, doc[i]), *doc[i + 1 :]]
    return random_json(rng)


def run_cases(
    seed: int, make: Callable[[random.Random], bytes], check: Callable[[bytes], Any]
) -> int:
    """Run CASES inputs; return how many parsed. Anything but a MongosnapError fails."""
    rng = random.Random(seed + SEED)
    accepted = 0
    for case in range(CASES):
        data = make(rng)
        try:
            check(data)
        except MongosnapError:
            continue
        except Exception as exc:  # the property under test: no other exception escapes
            raise AssertionError(f"seed {seed} case {case}: {exc!r} on {data[:300]!r}") from exc
        accepted += 1
    return accepted


# ----------------------------------------------------------------- manifest


def check_manifest(data: bytes) -> None:
    manifest = Manifest.from_json(data)
    assert len(manifest.collections) <= MAX_COLLECTIONS


def test_fuzz_manifest_json() -> None:
    valid = sample().to_json()
    parsed = json.loads(valid)

    def make(rng: random.Random) -> bytes:
        choice = rng.randrange(3)
        if choice == 0:
            return mutate(rng, valid, [valid])
        if choice == 1:
            return json.dumps(structural(rng, parsed)).encode()
        return json.dumps(random_json(rng)).encode()

    accepted = run_cases(1, make, check_manifest)
    assert accepted > 0  # mutations that keep it valid (whitespace, same-length edits)


# ----------------------------------------------------------------- metadata

METADATA = [
    build_metadata(
        {
            "name": "users",
            "type": "collection",
            "options": {"validator": {"age": {"$gte": 18}}, "capped": True, "size": 4096},
        },
        [
            {"v": 2, "key": {"_id": 1}, "name": "_id_"},
            {"v": 2, "key": {"email": 1, "n": -1}, "name": "email_1_n_-1", "unique": True},
        ],
    ),
    b'{"options":{"viewOn":"users","pipeline":[{"$match":{"d":{"$date":"2020-01-01T00:00:00Z"}}}]},'
    b'"indexes":[],"collectionName":"adults","type":"view"}',
    b'{"options":{"x":{"$oid":"0123456789abcdef01234567"},"y":{"$numberDecimal":"1.5"},'
    b'"z":{"$binary":{"base64":"AAEC","subType":"04"}}},"indexes":[{"key":{"a":"2dsphere"},'
    b'"name":"a_2dsphere","ns":"db.c"}]}',
]


def check_metadata(data: bytes) -> None:
    parsed = parse_metadata(data, member="dump/app/users.metadata.json")
    assert len(parsed.indexes) <= MAX_INDEXES
    bson.encode(parsed.options)  # what a restore sends must encode
    for spec in parsed.indexes:
        bson.encode(spec)


def test_fuzz_metadata_json() -> None:
    parsed = [json.loads(m) for m in METADATA]

    def make(rng: random.Random) -> bytes:
        choice = rng.randrange(3)
        if choice == 0:
            return mutate(rng, rng.choice(METADATA), METADATA)
        if choice == 1:
            return json.dumps(structural(rng, rng.choice(parsed))).encode()
        return json.dumps(random_json(rng)).encode()

    assert run_cases(2, make, check_metadata) > 0


# --------------------------------------------------------------------- BSON

BSON_STREAM = b"".join(many_types_documents(6)[:6])


def check_bson(data: bytes) -> None:
    splitter = BsonSplitter()
    out: list[bytes] = []
    for i in range(0, len(data), 4096):
        out += splitter.feed(data[i : i + 4096])
    splitter.close()
    assert b"".join(out) == data and all(len(d) <= MAX_DOCUMENT for d in out)
    for doc in out:  # the explicit walker agrees with the C decoder on every document
        bsonstream._walk(doc, 0, len(doc), 1, "doc")


def test_fuzz_bson_splitter_and_validator() -> None:
    small = [bson.encode({"a": 1, "s": "x", "d": {"b": [1, 2]}}), bson.encode({})]

    def make(rng: random.Random) -> bytes:
        base = BSON_STREAM if rng.random() < 0.3 else b"".join(rng.choices(small, k=3))
        return mutate(rng, base, [BSON_STREAM, *small])

    assert run_cases(3, make, check_bson) > 0


def test_walker_rejects_what_the_decoder_rejects() -> None:
    """Differential: on single mutated documents, both validators give the same verdict."""
    rng = random.Random(4 + SEED)
    docs = many_types_documents(4)
    disagree = []
    for _ in range(CASES):
        body = mutate(rng, rng.choice(docs)[4:-1], docs)  # a consistent outer frame
        data = (len(body) + 5).to_bytes(4, "little") + body + b"\0"
        try:
            bsonstream._decode_one(data, "doc")
            decoder = True
        except MongosnapError:
            decoder = False
        try:
            bsonstream._walk(data, 0, len(data), 1, "doc")
            walker = True
        except MongosnapError:
            walker = False
        if decoder != walker:
            disagree.append(data)
    assert disagree == []


# ------------------------------------------------------------------ archive

LIMIT = 1 << 20


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 1000):
        yield data[i : i + 1000]


async def read_everything(data: bytes) -> int:
    """Read every member (splitting BSON ones) within a 1 MiB output limit."""
    total = 0
    async with contextlib.aclosing(
        read_archive(_chunks(data), max_member_size=LIMIT, max_total_size=LIMIT)
    ) as members:
        async for member in members:
            assert member.size <= LIMIT
            splitter = BsonSplitter() if member.name.endswith(".bson") else None
            async for chunk in member.chunks():
                total += len(chunk)
                if splitter is not None:
                    splitter.feed(chunk)
            if splitter is not None:
                splitter.close()
    assert total <= LIMIT
    return total


@pytest.mark.parametrize("codec", ["gzip", "zstd", "none"])
def test_fuzz_archive_stream(codec: str) -> None:
    docs = many_types_documents(8)
    files = [
        ("dump/app/users.metadata.json", [METADATA[0]]),
        ("dump/app/users.bson", [b"".join(docs[:4]), b"".join(docs[4:])]),
        ("dump/app/" + "long" * 40 + ".bson", [docs[0]]),
    ]
    compressor = get_codec(codec)
    built = asyncio.run(build_archive(compressor, files, chunk_size=2048))
    valid = built.archive
    plain = b"".join(built.files.values())  # donor bytes: member bodies
    tar = asyncio.run(build_archive(get_codec("none"), files)).archive
    rng = random.Random(5 + len(codec) + SEED)

    def make() -> bytes:
        if rng.random() < 0.5:  # the compressed stream as stored
            return mutate(rng, valid, [valid, plain])
        return compressor.compress(mutate(rng, tar, [tar, plain]))  # the tar beneath

    async def run() -> int:
        accepted = 0
        assert await read_everything(valid) > 0
        for case in range(CASES):
            data = make()
            try:
                await read_everything(data)
            except MongosnapError:
                continue
            except Exception as exc:
                raise AssertionError(f"{codec} case {case}: {exc!r}") from exc
            accepted += 1
        return accepted

    assert asyncio.run(run()) > 0
