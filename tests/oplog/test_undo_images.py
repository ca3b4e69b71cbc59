"""Pre- and post-images from MongoDB-shaped entries FerretDB cannot write: ``$v: 2``
diffs, commands (drop, rename, dropDatabase) and collection UUIDs. No server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import bson
import pytest
from bson.binary import Binary, UuidRepresentation
from bson.decimal128 import Decimal128
from bson.errors import InvalidBSON
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.timestamp import Timestamp

from mongosnap import PointInTimeUnavailable
from mongosnap.oplog.entry import PLAIN
from mongosnap.oplog.position import Ts
from mongosnap.pipelines.undo_images import Timeline, document_key, id_key

NS = "shop.orders"
UI = Binary.from_uuid(uuid.uuid4(), UuidRepresentation.STANDARD)


def _entry(t: int, op: str, o: dict[str, Any], o2: Any = None, **extra: Any) -> bytes:
    doc: dict[str, Any] = {"ts": Timestamp(t, 1), "op": op, "ns": extra.pop("ns", NS), "o": o}
    if o2 is not None:
        doc["o2"] = {"_id": o2}
    return bson.encode({**doc, **extra})


def _timeline(*entries: bytes) -> Timeline:
    """Archive consistent at 100; window [200, 300]."""
    timeline = Timeline("shop", "orders", Ts(100, 1), Ts(200, 0), Ts(300, 0))
    for entry in entries:
        timeline.add(entry)
    return timeline


def test_v2_diffs_give_the_pre_and_post_images() -> None:
    archived = bson.encode({"_id": 1, "qty": 5, "tags": ["a"]})
    timeline = _timeline(
        _entry(150, "u", {"$v": 2, "diff": {"u": {"qty": 6}}}, 1, ui=UI),
        _entry(250, "u", {"$v": 2, "diff": {"d": {"tags": False}, "u": {"qty": 0}}}, 1, ui=UI),
        _entry(260, "d", {"_id": 2}, ui=UI),
        _entry(350, "u", {"$v": 2, "diff": {"u": {"qty": 9}}}, 2, ui=UI),
    )
    assert timeline.touched() == [id_key(1), id_key(2)]
    one = timeline.images(id_key(1), archived)
    assert bson.decode(one.pre or b"") == {"_id": 1, "qty": 6, "tags": ["a"]}
    assert bson.decode(one.post or b"") == {"_id": 1, "qty": 0}
    assert one.kind == "updated" and not one.later
    two = timeline.images(id_key(2), bson.encode({"_id": 2, "qty": 1}))
    assert two.kind == "deleted" and two.later and two.post is None


@pytest.mark.parametrize(
    "command",
    [
        {"drop": "orders"},
        {"renameCollection": "shop.orders", "to": "shop.old"},
        {"renameCollection": "shop.new", "to": "shop.orders", "dropTarget": True},
        {"dropDatabase": 1},
    ],
)
def test_a_drop_or_rename_since_the_archive_is_refused(command: dict[str, Any]) -> None:
    with pytest.raises(PointInTimeUnavailable, match="another incarnation"):
        _timeline(_entry(180, "c", command, ns="shop.$cmd"))


def test_commands_on_other_collections_and_before_the_archive_are_not() -> None:
    _timeline(
        _entry(50, "c", {"drop": "orders"}, ns="shop.$cmd"),  # before the archive
        _entry(180, "c", {"drop": "carts"}, ns="shop.$cmd"),
        _entry(190, "c", {"dropDatabase": 1}, ns="other.$cmd"),
        _entry(195, "c", {"create": "orders"}, ns="shop.$cmd"),
    )


def test_two_collection_uuids_are_refused() -> None:
    other = Binary.from_uuid(uuid.uuid4(), UuidRepresentation.STANDARD)
    with pytest.raises(PointInTimeUnavailable, match="two collection UUIDs"):
        _timeline(_entry(150, "i", {"_id": 1}, ui=UI), _entry(250, "i", {"_id": 2}, ui=other))


def test_entries_inside_apply_ops_count() -> None:
    nested = {"op": "d", "ns": NS, "o": {"_id": 7}}
    timeline = _timeline(_entry(220, "c", {"applyOps": [nested]}, ns="admin.$cmd"))
    assert timeline.touched() == [id_key(7)]
    assert timeline.images(id_key(7), bson.encode({"_id": 7})).kind == "deleted"


def test_an_insert_of_an_existing_id_means_another_incarnation() -> None:
    timeline = _timeline(_entry(250, "i", {"_id": 1, "v": "new"}))
    with pytest.raises(PointInTimeUnavailable, match="dropped and recreated"):
        timeline.images(id_key(1), bson.encode({"_id": 1, "v": "old"}))


def test_before_delete_is_each_deleted_document_as_it_was_just_before() -> None:
    """What heal --restore-missing inserts with the oplog: the state before the
    delete that removed a document for good since the archive (start 100; last 300)."""
    timeline = _timeline(
        _entry(90, "d", {"_id": 9}),  # before the consistent point: the archive has it so
        _entry(150, "u", {"$v": 2, "diff": {"u": {"qty": 6}}}, 1),
        _entry(160, "d", {"_id": 1}),  # archived, updated, deleted
        _entry(170, "i", {"_id": 2, "qty": 2}),
        _entry(180, "d", {"_id": 2}),  # inserted after the archive, deleted
        _entry(190, "d", {"_id": 3}),
        _entry(195, "i", {"_id": 3, "qty": "back"}),  # deleted, then re-inserted
        _entry(250, "i", {"_id": 4, "qty": 4}),
        _entry(260, "d", {"_id": 4}),
        _entry(270, "i", {"_id": 4, "qty": 40}),
        _entry(280, "d", {"_id": 4}),  # the last delete is the one undone
        _entry(350, "d", {"_id": 5}),  # after last: not this repair's
    )
    assert timeline.deleted() == [id_key(1), id_key(2), id_key(3), id_key(4)]
    archived = {1: {"_id": 1, "qty": 5}, 3: {"_id": 3, "qty": 3}, 5: {"_id": 5}}

    def back(key: int) -> Any:
        found = timeline.before_delete(
            id_key(key), bson.encode(archived[key]) if key in archived else None
        )
        return None if found is None else bson.decode(found)

    assert back(1) == {"_id": 1, "qty": 6}
    assert back(2) == {"_id": 2, "qty": 2}
    assert back(3) is None
    assert back(4) == {"_id": 4, "qty": 40}
    assert back(5) is None


_IDS = [
    1,
    -(2**31),
    2**40,
    Int64(7),
    ObjectId(),
    "abc",
    "",
    "ünï\x00code",
    1.5,
    None,
    True,
    {"a": 1, "b": [1, 2]},
    Binary(b"\x00\x01", 0),
    Binary.from_uuid(uuid.uuid4(), UuidRepresentation.STANDARD),
    datetime(2026, 12, 7, tzinfo=UTC),
    Timestamp(5, 6),
    Decimal128("1.10"),
]


@pytest.mark.parametrize("value", _IDS, ids=lambda v: type(v).__name__)
def test_a_documents_key_is_the_key_of_its_decoded_id(value: Any) -> None:
    """Sliced from the raw bytes or decoded, the key is the one the oplog side
    computes from a decoded ``_id`` (else an archived document is never matched)."""
    for doc in ({"_id": value, "pad": "x" * 50}, {"a": 1, "_id": value}, {"_id": value}):
        raw = bson.encode(doc)
        assert document_key(raw) == id_key(bson.decode(raw, PLAIN)["_id"])


def test_a_document_without_id_has_no_key_and_a_bad_string_is_not_sliced() -> None:
    assert document_key(bson.encode({"a": 1})) is None
    raw = bytearray(bson.encode({"_id": "abc", "n": 1}))
    raw[13] = 0xFF  # the string's first byte: no longer UTF-8
    with pytest.raises(InvalidBSON):
        document_key(bytes(raw))
