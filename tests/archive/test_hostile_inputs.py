"""Hostile sidecars, metadata files and BSON members: typed errors, explicit bounds."""

from __future__ import annotations

import json
import struct

import bson
import pytest
from archive_support import many_types_documents
from test_manifest import sample

from mongosnap import CorruptArchive, MongosnapError, UnsafeArchive
from mongosnap.archive import bsonstream
from mongosnap.archive.bsonstream import MAX_NESTING, BsonSplitter
from mongosnap.archive.jsonlimits import too_deep, value_bound
from mongosnap.archive.manifest import (
    MAX_COLLECTIONS,
    MAX_MANIFEST_BYTES,
    MAX_MANIFEST_DEPTH,
    Manifest,
)
from mongosnap.archive.metadata import (
    MAX_INDEXES,
    MAX_METADATA_DEPTH,
    MAX_METADATA_VALUES,
    parse_metadata,
)

# ------------------------------------------------------------------ JSON depth


@pytest.mark.parametrize("opener", ["[", '{"a":', '[{"a":'])
def test_deeply_nested_manifest_is_corrupt_not_a_recursion_error(opener: str) -> None:
    closer = {"[": "]", '{"a":': "}", '[{"a":': "}]"}[opener]
    data = (opener * 100_000 + "1" + closer * 100_000).encode()
    with pytest.raises(CorruptArchive, match="deeper"):
        Manifest.from_json(data)


def test_deeply_nested_manifest_without_its_closing_brackets() -> None:
    with pytest.raises(CorruptArchive, match="deeper"):
        Manifest.from_json(b'{"format": ' + b"[" * 1_000_000)


def test_nesting_inside_strings_does_not_count() -> None:
    assert not too_deep('{"a": "[[[[[[[[[[{{{{{{", "b": "\\"[[[["}', 1)
    assert too_deep('{"a": "[[[[[[[[[[{{{{{{", "b": {}}', 1)
    assert not too_deep('[[["x\\\\", "]]]]"]]]', 3) and too_deep('[[["x\\\\", []]]]', 3)
    assert not too_deep('"' + '\\"[' * 50_000, 1)  # never ends: linear, no depth
    assert value_bound('{"a": 1, "b": [2, 3]}') == 7


@pytest.mark.parametrize("field", ["options", "indexes", "collectionName", "uuid"])
def test_deeply_nested_metadata_is_unsafe_not_a_recursion_error(field: str) -> None:
    data = '{"' + field + '": ' + "[" * 50_000 + "1" + "]" * 50_000 + "}"
    with pytest.raises(UnsafeArchive, match="deeper"):
        parse_metadata(data.encode(), member="dump/app/x.metadata.json")


def test_metadata_at_the_depth_limit_parses() -> None:
    inner = "{}"
    for _ in range(MAX_METADATA_DEPTH - 2):  # the file's object and "options" add two
        inner = '{"a": ' + inner + "}"
    parsed = parse_metadata(('{"options": ' + inner + ', "indexes": []}').encode())
    assert "a" in parsed.options
    with pytest.raises(UnsafeArchive):
        parse_metadata(('{"options": {"a": ' + inner + '}, "indexes": []}').encode())


def test_manifest_depth_limit_leaves_room_for_the_schema() -> None:
    text = sample().to_json().decode()
    assert too_deep(text, 3) and not too_deep(text, 4) and MAX_MANIFEST_DEPTH >= 4


# ------------------------------------------------------- invalid Extended JSON

MEMBER = "dump/app/users.metadata.json"


@pytest.mark.parametrize(
    "options",
    [
        '{"a": {"$oid": "zz"}}',
        '{"a": {"$numberDecimal": "x"}}',
        '{"a": {"$date": {"$numberLong": "99999999999999999999"}}}',
        '{"a": {"$date": 1e400}}',
        '{"a": {"$numberLong": "abc"}}',
        '{"a": {"$binary": {"base64": "AA==", "subType": "zz"}}}',
        '{"a": {"$timestamp": {"t": "x", "i": 1}}}',
        '{"a": {"$regularExpression": {"pattern": 1, "options": ""}}}',
        '{"a": {"$uuid": "zz"}}',
        '{"a": {"$minKey": 2}}',
        '{"a": {"$code": 1}}',
    ],
)
def test_invalid_extended_json_is_corrupt_and_names_the_member(options: str) -> None:
    data = ('{"options": ' + options + ', "indexes": []}').encode()
    with pytest.raises(CorruptArchive, match=MEMBER):
        parse_metadata(data, member=MEMBER)


@pytest.mark.parametrize(
    "doc",
    [
        '{"indexes": [{"key": {}, "name": "empty"}]}',
        '{"indexes": [{"key": {"a": 1}, "name": 5}]}',
        '{"indexes": [5]}',
        '{"indexes": [], "type": 5}',
        '{"indexes": [], "uuid": 5}',
        '{"indexes": [], "options": {"a\\u0000b": 1}}',
    ],
)
def test_wrong_typed_values_are_corrupt_and_name_the_member(doc: str) -> None:
    with pytest.raises(CorruptArchive, match=MEMBER):
        parse_metadata(doc.encode(), member=MEMBER)


def test_dates_outside_pythons_range_are_valid() -> None:
    data = b'{"options": {"a": {"$date": {"$numberLong": "-99999999999999"}}}, "indexes": []}'
    parsed = parse_metadata(data)
    assert bson.encode(parsed.options) == bson.encode({"a": bson.DatetimeMS(-99999999999999)})


# ------------------------------------------------------------------------ caps


def test_too_many_collections_is_corrupt() -> None:
    doc = json.loads(sample().to_json())
    entry = doc["collections"][0]
    doc["collections"] = [entry] * (MAX_COLLECTIONS + 1)
    with pytest.raises(CorruptArchive, match=f"more than {MAX_COLLECTIONS}"):
        Manifest.from_json(json.dumps(doc).encode())


def test_oversized_manifest_is_corrupt() -> None:
    with pytest.raises(CorruptArchive, match="larger than"):
        Manifest.from_json(b" " * (MAX_MANIFEST_BYTES + 1))


def test_too_many_indexes_is_unsafe() -> None:
    specs = [{"key": {f"f{i}": 1}, "name": f"f{i}_1"} for i in range(MAX_INDEXES + 1)]
    with pytest.raises(UnsafeArchive, match="indexes"):
        parse_metadata(json.dumps({"indexes": specs}).encode())
    assert len(parse_metadata(json.dumps({"indexes": specs[:-1]}).encode()).indexes) == 64


def test_too_many_values_is_unsafe() -> None:
    many = ",".join(["{}"] * MAX_METADATA_VALUES)
    data = '{"options": {"a": [' + many + ']}, "indexes": []}'
    with pytest.raises(UnsafeArchive, match="values"):
        parse_metadata(data.encode())


# ------------------------------------------------------------- BSON validation


def doc(body: bytes) -> bytes:
    return struct.pack("<i", len(body) + 5) + body + b"\0"


INT_A = b"\x10a\x00\x01\x00\x00\x00"
INVALID_DOCUMENTS = {
    "unknown element type": doc(b"\x14a\x00\x01\x00\x00\x00"),
    "type byte 0x00 in the middle": doc(INT_A + b"\x00" + INT_A),
    "bytes after the last element": doc(INT_A + b"\x07"),
    "name not terminated": doc(b"\x10abcdefgh"),
    "string length zero": doc(b"\x02a\x00\x00\x00\x00\x00"),
    "string length past the end": doc(b"\x02a\x00\x09\x00\x00\x00xy\x00"),
    "string without its NUL": doc(b"\x02a\x00\x02\x00\x00\x00xy"),
    "nested length too long": doc(b"\x03a\x00" + b"\x0d\x00\x00\x00" + INT_A + b"\x00\x00"),
    "nested length too short": doc(b"\x04a\x00" + b"\x0b\x00\x00\x00" + INT_A + b"\x00"),
    "binary length negative": doc(b"\x05a\x00\xff\xff\xff\xff\x00"),
    "binary length past the end": doc(b"\x05a\x00\x10\x00\x00\x00\x00xy"),
    "old binary inner length": doc(b"\x05a\x00\x06\x00\x00\x00\x02\x05\x00\x00\x00xy"),
    "boolean 2": doc(b"\x08a\x00\x02"),
    "int32 cut short": doc(b"\x10a\x00\x01\x00"),
    "regex not terminated": doc(b"\x0ba\x00abc"),
}


@pytest.mark.parametrize("name", sorted(INVALID_DOCUMENTS))
def test_invalid_bson_is_corrupt_before_it_is_handed_out(name: str) -> None:
    good = many_types_documents(3)
    splitter = BsonSplitter()
    with pytest.raises(CorruptArchive, match="BSON document 3"):
        splitter.feed(b"".join(good) + INVALID_DOCUMENTS[name])


@pytest.mark.parametrize("name", sorted(INVALID_DOCUMENTS))
def test_the_walker_agrees(name: str) -> None:
    data = INVALID_DOCUMENTS[name]
    with pytest.raises(CorruptArchive):
        bsonstream._walk(data, 0, len(data), 1, "doc")


def test_every_type_passes_both_validators() -> None:
    docs = many_types_documents(20)
    assert BsonSplitter().feed(b"".join(docs)) == docs
    for data in docs:
        bsonstream._walk(data, 0, len(data), 1, "doc")


def nested(levels: int) -> bytes:
    """A document of ``levels`` levels: {"a": {"a": ... {}}}, built in linear time."""
    heads = [struct.pack("<i", 5 + 8 * k) + b"\x03a\x00" for k in range(levels - 1, 0, -1)]
    return b"".join(heads) + b"\x05\0\0\0\0" + b"\0" * (levels - 1)


def test_nesting_is_bounded_explicitly() -> None:
    assert BsonSplitter().feed(nested(MAX_NESTING)) == [nested(MAX_NESTING)]
    with pytest.raises(CorruptArchive, match="deeper"):
        BsonSplitter().feed(nested(MAX_NESTING + 1))
    with pytest.raises(CorruptArchive):
        BsonSplitter().feed(nested(2_000_000 // 7))


def test_validation_can_be_turned_off() -> None:
    bad = INVALID_DOCUMENTS["unknown element type"]
    assert BsonSplitter(validate=False).feed(bad) == [bad]


def test_only_mongosnap_errors() -> None:
    for data in INVALID_DOCUMENTS.values():
        with pytest.raises(MongosnapError):
            BsonSplitter().feed(data)


def test_expected_counts_stop_the_stream_at_the_first_excess() -> None:
    docs = many_types_documents(5)
    data = b"".join(docs)
    exact = BsonSplitter(max_documents=5, max_bytes=len(data))
    assert exact.feed(data) == docs
    exact.close()
    fewer = BsonSplitter(max_documents=4)
    assert fewer.feed(b"".join(docs[:4])) == docs[:4]
    with pytest.raises(CorruptArchive, match="more than the 4 documents"):
        fewer.feed(docs[4])
    smaller = BsonSplitter(max_bytes=len(data) - 1)
    smaller.feed(data[:100])
    with pytest.raises(CorruptArchive, match="bytes expected"):
        smaller.feed(data[100:])  # refused before any of it is split
