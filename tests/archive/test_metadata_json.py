"""metadata.json: mongodump's exact shape out, tolerant parsing and legacy index conversion in."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from bson import Binary, Decimal128, Int64

from mongosnap import CorruptArchive, UnsafeArchive
from mongosnap.archive.metadata import (
    CollectionMetadata,
    build_metadata,
    convert_legacy_index,
    parse_metadata,
)

UUID_HEX = "0123456789abcdef0123456789abcdef"
USERS: dict[str, Any] = {
    "name": "users",
    "type": "collection",
    "options": {"validationLevel": "strict", "validator": {"age": {"$gte": 18}}},
    "info": {"readOnly": False, "uuid": Binary(bytes.fromhex(UUID_HEX), 4)},
    "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"},
}
USERS_INDEXES: list[dict[str, Any]] = [
    {"v": 2, "key": {"_id": 1}, "name": "_id_"},
    {"v": 2, "key": {"email": 1, "created": -1}, "name": "email_1_created_-1", "unique": True},
]
USERS_JSON = (
    '{"options":{"validationLevel":"strict","validator":{"age":{"$gte":{"$numberInt":"18"}}}},'
    '"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}},"name":"_id_"},'
    '{"v":{"$numberInt":"2"},"key":{"email":{"$numberInt":"1"},"created":{"$numberInt":"-1"}},'
    '"name":"email_1_created_-1","unique":true}],'
    '"uuid":"0123456789abcdef0123456789abcdef","collectionName":"users","type":"collection"}'
)


def test_collection_with_two_indexes_matches_mongodump_byte_for_byte() -> None:
    assert build_metadata(USERS, USERS_INDEXES).decode() == USERS_JSON


@dataclass
class Spec:
    name: str
    type: str = "collection"
    options: dict[str, Any] = field(default_factory=dict)
    uuid: str = ""


def test_an_object_with_the_four_attributes_gives_the_same_file() -> None:
    spec = Spec("users", "collection", USERS["options"], UUID_HEX)
    assert build_metadata(spec, USERS_INDEXES).decode() == USERS_JSON


def test_empty_options_and_unknown_uuid_are_left_out_like_mongodump() -> None:
    out = build_metadata({"name": "plain", "type": "collection", "options": {}}, [])
    assert out == b'{"indexes":[],"collectionName":"plain","type":"collection"}'
    legacy_server = build_metadata({"name": "old"}, [{"key": {"_id": 1}, "name": "_id_"}])
    assert legacy_server == (
        b'{"indexes":[{"key":{"_id":{"$numberInt":"1"}},"name":"_id_"}],"collectionName":"old"}'
    )


def test_view_has_options_and_no_indexes() -> None:
    view = {
        "name": "adults",
        "type": "view",
        "options": {"viewOn": "users", "pipeline": [{"$match": {"age": {"$gte": 18}}}]},
        "info": {"readOnly": True},
    }
    assert build_metadata(view, USERS_INDEXES) == (
        b'{"options":{"viewOn":"users","pipeline":[{"$match":{"age":{"$gte":{"$numberInt":"18"}}}}]},'
        b'"indexes":[],"collectionName":"adults","type":"view"}'
    )


def test_uuid_decoded_as_uuid_object_and_non_ascii_names() -> None:
    info = {"name": "caf\u00e9", "type": "timeseries", "info": {"uuid": uuid.UUID(UUID_HEX)}}
    text = build_metadata(info, []).decode("utf-8")
    assert f'"uuid":"{UUID_HEX}"' in text and '"collectionName":"caf\u00e9"' in text


def test_parse_round_trip() -> None:
    meta = parse_metadata(build_metadata(USERS, USERS_INDEXES), convert_legacy=False)
    assert meta == CollectionMetadata(
        name="users",
        type="collection",
        options={"validationLevel": "strict", "validator": {"age": {"$gte": 18}}},
        indexes=USERS_INDEXES,
        uuid=UUID_HEX,
    )
    assert list(meta.indexes[1]["key"]) == ["email", "created"]  # key order is kept


def test_parse_converts_by_default() -> None:
    meta = parse_metadata(build_metadata(USERS, USERS_INDEXES))
    assert meta.indexes == [
        {"key": {"_id": 1}, "name": "_id_"},
        {"key": {"email": 1, "created": -1}, "name": "email_1_created_-1", "unique": True},
    ]


def test_parse_old_mongodump_files() -> None:
    old = b'{"options":{},"indexes":[{"v":1,"key":{"_id":1},"ns":"app.users","name":"_id_"}]}'
    meta = parse_metadata(old)
    assert meta == CollectionMetadata("", "collection", {}, [{"key": {"_id": 1}, "name": "_id_"}])
    view = parse_metadata(b'{"options":{"viewOn":"x","pipeline":[]},"indexes":null}')
    assert view.type == "view" and view.indexes == []
    timeseries = parse_metadata(b'{"options":{"timeseries":{"timeField":"t"}},"indexes":[]}')
    assert timeseries.type == "timeseries"
    relaxed = parse_metadata(b'{"indexes":[{"key":{"a":{"$numberLong":"1"}},"name":"a_1"}]}')
    assert relaxed.indexes[0]["key"]["a"] == 1


def test_legacy_index_conversion() -> None:
    spec = {
        "v": 1,
        "key": {
            "a": 1.0,
            "b": -1.0,
            "c": "1",
            "d": "",
            "e": 0,
            "f": Int64(0),
            "g": True,
            "h": None,
            "i": "2dsphere",
            "j": Decimal128("0"),
            "k": Decimal128("-2.5"),
            "l": 5,
            "m": "-1",
            "n": 0.0,
            "o": {"x": 1},
            "p": "hashed",
            "q": -0.0,
        },
        "name": "legacy",
        "ns": "app.c",
        "dropDups": True,
        "safe": None,
        "unique": True,
        "hidden": False,
        "expireAfterSeconds": 60,
    }
    assert convert_legacy_index(spec) == {
        "key": {
            "a": 1,
            "b": -1,
            "c": 1,
            "d": 1,
            "e": 1,
            "f": 1,
            "g": 1,
            "h": 1,
            "i": "2dsphere",
            "j": 1,
            "k": -1,
            "l": 5,
            "m": -1,
            "n": 1,
            "o": 1,
            "p": "hashed",
            "q": 1,
        },
        "name": "legacy",
        "unique": True,
        "hidden": False,
        "expireAfterSeconds": 60,
    }
    assert spec["ns"] == "app.c"  # the input is not modified
    key: dict[str, Any] = spec["key"]  # type: ignore[assignment]
    assert list(convert_legacy_index(spec)["key"]) == list(key)  # nor reordered


@pytest.mark.parametrize(
    "bad",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"indexes": {}}',
        b'{"indexes": [{"name": "no key"}]}',
        b'{"indexes": [], "uuid": "xyz"}',
        b'{"indexes": [], "type": "table"}',
        b'{"indexes": [], "options": []}',
        b'{"indexes": [], "collectionName": 5}',
    ],
)
def test_malformed_metadata_is_corrupt(bad: bytes) -> None:
    with pytest.raises(CorruptArchive):
        parse_metadata(bad)


def test_oversized_metadata_is_unsafe() -> None:
    with pytest.raises(UnsafeArchive):
        parse_metadata(b" " * (16 << 20) + b"{}")
