"""Update application without a server: $v:2 diffs and $v:1 $set/$unset, per MongoDB's semantics.

Expected documents follow the server's documented behaviour (doc_diff applier,
update tree in oplog-application mode). Types FerretDB refuses (nested arrays,
dotted and $-prefixed keys, NaN, Decimal128) are covered here.
"""

from __future__ import annotations

import math
import random
import tracemalloc
from typing import Any

import bson
import pytest
from bson import Decimal128, Int64
from bson.raw_bson import RawBSONDocument

from mongosnap import ReplayError
from mongosnap.oplog import apply_diff, apply_update
from mongosnap.oplog.diff import is_full_image


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal including field order and BSON types."""
    return bson.encode(a) == bson.encode(b)


# ---------------------------------------------------------------- $v:2 documents


def test_v2_diff_update_keeps_field_position() -> None:
    new = apply_diff({"_id": 1, "a": 1, "b": 2}, {"u": {"a": 10}})
    assert list(new.items()) == [("_id", 1), ("a", 10), ("b", 2)]


def test_v2_diff_insert_appends_field_even_if_present() -> None:
    new = apply_diff({"_id": 1, "a": 1, "b": 2}, {"i": {"a": 5, "c": 3}})
    assert list(new.items()) == [("_id", 1), ("b", 2), ("a", 5), ("c", 3)]


def test_v2_diff_update_of_absent_field_appends_before_inserts() -> None:
    new = apply_diff({"_id": 1}, {"u": {"x": 1}, "i": {"y": 2}})
    assert list(new) == ["_id", "x", "y"]


def test_v2_diff_delete_removes_field() -> None:
    assert apply_diff({"_id": 1, "a": 1, "b": 2}, {"d": {"a": False}}) == {"_id": 1, "b": 2}


def test_v2_diff_delete_of_absent_field_changes_nothing() -> None:
    assert apply_diff({"_id": 1}, {"d": {"zz": False}}) == {"_id": 1}


def test_v2_diff_nested_subdiff_sets_field() -> None:
    doc = {"_id": 1, "a": {"b": {"c": 1, "d": 2}, "e": 3}}
    new = apply_diff(doc, {"sa": {"i": {"f": 4}, "sb": {"d": {"d": False}, "u": {"c": 9}}}})
    assert same(new, {"_id": 1, "a": {"b": {"c": 9}, "e": 3, "f": 4}})


def test_v2_subdiff_on_missing_field_is_ignored() -> None:
    assert apply_diff({"_id": 1}, {"sa": {"u": {"b": 1}}}) == {"_id": 1}


def test_v2_subdiff_type_mismatch_yields_null() -> None:
    doc = {"_id": 1, "a": 5, "b": [1], "c": {"x": 1}}
    d = {"sa": {"u": {"x": 1}}, "sb": {"u": {"x": 1}}, "sc": {"a": True, "u0": 1}}
    new = apply_diff(doc, d)
    assert new == {"_id": 1, "a": None, "b": None, "c": None}


# ---------------------------------------------------------------- $v:2 arrays


def test_v2_array_truncate_then_set() -> None:
    doc = {"_id": 1, "arr": [0, 1, 2, 3, 4]}
    new = apply_diff(doc, {"sarr": {"a": True, "l": 3, "u1": "one"}})
    assert new == {"_id": 1, "arr": [0, "one", 2]}


def test_v2_array_grow_pads_with_null() -> None:
    new = apply_diff({"_id": 1, "arr": [0]}, {"sarr": {"a": True, "l": 4, "u3": "x"}})
    assert new["arr"] == [0, None, None, "x"]


def test_v2_array_set_past_end_without_length_pads() -> None:
    new = apply_diff({"_id": 1, "arr": [0]}, {"sarr": {"a": True, "u2": 2}})
    assert new["arr"] == [0, None, 2]


def test_v2_array_element_subdiff() -> None:
    doc = {"_id": 1, "arr": [{"k": 1, "v": 1}, {"k": 2, "v": 2}]}
    new = apply_diff(doc, {"sarr": {"a": True, "s1": {"u": {"v": 20}, "i": {"w": 1}}}})
    assert same(new, {"_id": 1, "arr": [{"k": 1, "v": 1}, {"k": 2, "v": 20, "w": 1}]})


def test_v2_array_nested_array_subdiff() -> None:
    doc = {"_id": 1, "m": [[1, 2, 3], [4]]}
    new = apply_diff(doc, {"sm": {"a": True, "s0": {"a": True, "l": 2, "u0": 10}}})
    assert new["m"] == [[10, 2], [4]]


def test_v2_array_subdiff_past_end_yields_null() -> None:
    new = apply_diff({"_id": 1, "arr": [1]}, {"sarr": {"a": True, "s2": {"u": {"x": 1}}}})
    assert new["arr"] == [1, None, None]


def test_v2_array_subdiff_on_element_of_wrong_type_yields_null() -> None:
    new = apply_diff({"_id": 1, "arr": [1, 2]}, {"sarr": {"a": True, "s0": {"u": {"x": 1}}}})
    assert new["arr"] == [None, 2]


def test_v2_array_length_zero_empties() -> None:
    assert apply_diff({"_id": 1, "arr": [1, 2]}, {"sarr": {"a": True, "l": 0}})["arr"] == []


@pytest.mark.parametrize(
    ("diff", "message"),
    [
        ({"u": {"a": 1}, "i": {"a": 2}}, "appears twice"),
        ({"i": {"a": 1}, "u": {"b": 2}}, "out of order"),
        ({"sa": {"u": {"x": 1}}, "u": {"b": 2}}, "out of order"),
        ({"x": {"a": 1}}, "unexpected section"),
        ({"b": {"a": {"o": 0}}}, "binary"),
        ({"u": 5}, "not a document"),
        ({"sarr": {"a": True, "l": 1, "u3": 1}}, "past its new length"),
        ({"sarr": {"a": True, "l": "2"}}, "bad array length"),
        ({"sarr": {"a": True, "x1": 1}}, "unexpected array field"),
        ({"sarr": {"a": False}}, "must be true"),
        ({"sarr": {}}, "empty"),
    ],
)
def test_v2_malformed_diff_raises(diff: dict[str, Any], message: str) -> None:
    with pytest.raises(ReplayError, match=message):
        apply_diff({"_id": 1, "a": 0, "arr": [1, 2]}, diff)


# ------------------------------------------------- $v:2 names repeated in the raw bytes


def raw_doc(*pairs: tuple[str, Any]) -> bytes:
    """A BSON document of these elements in order, repeated names kept (a dict cannot)."""
    body = b"".join(bson.encode({name: _embed(value)})[4:-1] for name, value in pairs)
    return (len(body) + 5).to_bytes(4, "little") + body + b"\x00"


def _embed(value: Any) -> Any:
    return RawBSONDocument(value) if isinstance(value, bytes) else value


def raw_update(diff: bytes) -> RawBSONDocument:
    """The ``o`` of a ``$v:2`` update entry as an oplog holds it, around a raw diff."""
    head = bson.encode({"$v": 2})[4:-1]
    body = head + b"\x03diff\x00" + diff
    return RawBSONDocument((len(body) + 5).to_bytes(4, "little") + body + b"\x00")


# The server refuses these (doc_diff applier's table, uassert 4728000 "duplicate
# field name in diff"; the reader's section order, 4770503); decoding keeps the last.
REPEATED = {
    "twice in u": raw_doc(("u", raw_doc(("a", 1), ("a", 2)))),
    "twice in i": raw_doc(("i", raw_doc(("b", 1), ("b", 2)))),
    "twice in d": raw_doc(("d", raw_doc(("a", False), ("a", False)))),
    "section u twice": raw_doc(("u", raw_doc(("a", 1))), ("u", raw_doc(("a", 2)))),
    "sub-diff twice": raw_doc(
        ("sn", raw_doc(("u", raw_doc(("x", 1))))), ("sn", raw_doc(("u", raw_doc(("y", 1)))))
    ),
    "in a sub-diff": raw_doc(("sn", raw_doc(("u", raw_doc(("x", 1), ("x", 2)))))),
    "array index twice": raw_doc(("sarr", raw_doc(("a", True), ("u1", 5), ("u1", 6)))),
    "in an array element's sub-diff": raw_doc(
        ("sarr", raw_doc(("a", True), ("s0", raw_doc(("i", raw_doc(("k", 1), ("k", 2)))))))
    ),
}


@pytest.mark.parametrize("diff", REPEATED.values(), ids=REPEATED.keys())
def test_v2_raw_diff_naming_a_field_twice_is_refused(diff: bytes) -> None:
    current = {"_id": 1, "a": 0, "n": {"x": 0}, "arr": [{"k": 0}, 2]}
    with pytest.raises(ReplayError, match=r"appears twice.*server refuses"):
        apply_update(current, raw_update(diff))


def test_v2_raw_diff_with_unique_names_applies_as_decoded() -> None:
    """The check reads names only: values (user documents) are not its business,
    and a well-formed raw diff gives what its decoded form gives."""
    element = raw_doc(("u", raw_doc(("q", 1))))
    diff = raw_doc(
        ("d", raw_doc(("z", False))),
        ("u", raw_doc(("a", raw_doc(("k", 1), ("k", 2))))),
        ("i", raw_doc(("b", 1))),
        ("sarr", raw_doc(("a", True), ("l", 3), ("u0", 7), ("s1", element))),
    )
    current = {"_id": 1, "z": 1, "a": 0, "arr": [1, {"q": 0}, 3, 4]}
    new = apply_update(current, raw_update(diff))
    assert same(new, apply_update(current, bson.decode(bson.encode(raw_update(diff)))))
    assert new == {"_id": 1, "a": {"k": 2}, "arr": [7, {"q": 1}, 3], "b": 1}


# ---------------------------------------------------------------- $v:1


def test_v1_set_existing_in_place_new_fields_in_name_order() -> None:
    doc = {"_id": 1, "z": 1, "a": 1}
    new = apply_update(doc, {"$v": 1, "$set": {"z": 2, "y": 3, "b": 4}})
    assert list(new.items()) == [("_id", 1), ("z", 2), ("a", 1), ("b", 4), ("y", 3)]


def test_v1_set_orders_paths_by_component_not_by_string() -> None:
    # "a-x" < "a.b" as strings, but the update tree orders by field: "a" < "a-x".
    new = apply_update({"_id": 1}, {"$set": {"a-x": 1, "a.b": 2}})
    assert list(new) == ["_id", "a", "a-x"]


def test_v1_set_creates_nested_path() -> None:
    new = apply_update({"_id": 1, "a": {"x": 1}}, {"$set": {"a.b.c": 5, "d.e": 6}})
    assert same(new, {"_id": 1, "a": {"x": 1, "b": {"c": 5}}, "d": {"e": 6}})


def test_v1_set_array_index_pads_with_null() -> None:
    new = apply_update({"_id": 1, "arr": [1]}, {"$set": {"arr.3": 4, "arr.0": 0}})
    assert new["arr"] == [0, None, None, 4]


def test_v1_set_inside_array_element() -> None:
    new = apply_update({"_id": 1, "arr": [{"a": 1}]}, {"$set": {"arr.0.b": 2}})
    assert new["arr"] == [{"a": 1, "b": 2}]


def test_v1_set_through_scalar_is_skipped_and_others_applied() -> None:
    doc = {"_id": 1, "a": 0, "arr": [1]}
    new = apply_update(doc, {"$set": {"a.b": 1, "arr.x": 1, "c": 1}})
    assert new == {"_id": 1, "a": 0, "arr": [1], "c": 1}


def test_v1_unset_removes_field_and_nulls_array_element() -> None:
    doc = {"_id": 1, "a": {"b": 1, "c": 2}, "arr": [1, 2, 3]}
    new = apply_update(doc, {"$v": 1, "$unset": {"a.b": True, "arr.1": True, "zz": True}})
    assert new == {"_id": 1, "a": {"c": 2}, "arr": [1, None, 3]}


def test_v1_replacement_keeps_id() -> None:
    new = apply_update({"_id": 7, "a": 1}, {"b": 2})
    assert list(new.items()) == [("_id", 7), ("b", 2)]


def test_v1_replacement_with_id_is_taken_as_is() -> None:
    assert apply_update({"_id": 7, "a": 1}, {"_id": 7, "c": 3}) == {"_id": 7, "c": 3}


@pytest.mark.parametrize(
    "o", [{"$inc": {"a": 1}}, {"$v": 3, "x": 1}, {"$v": 2, "diff": 5}, {"$v": 2}]
)
def test_unsupported_update_raises(o: dict[str, Any]) -> None:
    with pytest.raises(ReplayError):
        apply_update({"_id": 1, "a": 1}, o)


def test_full_image_detection() -> None:
    assert is_full_image({"$v": 1, "$set": {"_id": 1, "a": 1}})
    assert not is_full_image({"$v": 1, "$set": {"a": 1}})
    assert not is_full_image({"$set": {"_id": 1}, "$unset": {"b": 1}})


def test_types_survive_update_byte_for_byte() -> None:
    """Types FerretDB refuses survive an update, and untouched values keep their bytes."""
    doc = {
        "_id": Int64(1),
        "small": Int64(2),
        "dec": Decimal128("1.10"),
        "nan": math.nan,
        "neg0": -0.0,
        "nested": [[1, 2], [3]],
        "dotted": {"a.b": 1, "$x": 2},
    }
    new = apply_diff(doc, {"u": {"touched": 1}})
    assert bson.encode(new) == bson.encode({**doc, "touched": 1})
    assert isinstance(new["small"], Int64) and math.copysign(1, new["neg0"]) == -1


# ---------------------------------------------------------------- property


def _value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(6 if depth < 3 else 3)
    if kind == 0:
        return rng.randrange(100)
    if kind == 1:
        return rng.choice(["x", "y", "z"])
    if kind == 2:
        return None
    if kind == 3:
        return {f"f{i}": _value(rng, depth + 1) for i in range(rng.randrange(4))}
    return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def _change(rng: random.Random, old: Any) -> tuple[Any, dict[str, Any] | None]:
    """A new value, and a sub-diff that turns old into it (None: set the value)."""
    if isinstance(old, dict) and rng.random() < 0.7:
        new, d = _change_object(rng, old)
        return new, d or None
    if isinstance(old, list) and rng.random() < 0.7:
        return _change_array(rng, old)
    return _value(rng, 2), None


def _change_object(
    rng: random.Random, old: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    new: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {"d": {}, "u": {}, "i": {}}
    subs: dict[str, Any] = {}
    for name, value in old.items():
        roll = rng.random()
        if roll < 0.15:
            sections["d"][name] = False
        elif roll < 0.45:
            changed, sub = _change(rng, value)
            new[name] = changed
            if sub is None:
                sections["u"][name] = changed
            else:
                subs["s" + name] = sub
        else:
            new[name] = value
    for i in range(rng.randrange(3)):
        name = f"n{rng.randrange(1000)}_{i}"
        if name not in old:
            new[name] = sections["i"][name] = _value(rng, 2)
    d = {k: v for k, v in sections.items() if v}
    d.update(subs)
    return new, d


def _change_array(rng: random.Random, old: list[Any]) -> tuple[list[Any], dict[str, Any]]:
    size = max(0, len(old) + rng.randrange(-2, 3))
    new: list[Any] = []
    d: dict[str, Any] = {"a": True}
    if size != len(old):
        d["l"] = size
    for index in range(size):
        if index < len(old) and rng.random() < 0.6:
            new.append(old[index])
            continue
        if index < len(old):
            value, sub = _change(rng, old[index])
        else:
            value, sub = _value(rng, 2), None
        new.append(value)
        d[f"s{index}" if sub is not None else f"u{index}"] = sub if sub is not None else value
    return new, d


def test_random_diffs_produce_the_target_and_are_idempotent() -> None:
    rng = random.Random(20261201)
    checked = 0
    for _ in range(400):
        fields = {f"f{i}": _value(rng, 0) for i in range(rng.randrange(6))}
        changed, d = _change_object(rng, fields)
        if not d:
            continue
        before, after = {"_id": 1, **fields}, {"_id": 1, **changed}
        once = apply_diff(before, d)
        assert same(once, after), (before, d)
        assert same(apply_diff(once, d), once), (before, d)
        checked += 1
    assert checked > 300


# ---------------------------------------------------------------- bounds


@pytest.mark.parametrize(
    "o",
    [
        {"$v": 2, "diff": {"sarr": {"a": True, "u100000000": 1}}},  # 100 bytes, 10^8 nulls
        {"$v": 2, "diff": {"sarr": {"a": True, "l": 100_000_000}}},
        {"$v": 2, "diff": {"sarr": {"a": True, "u1500002": 1}}},  # just past the server's pad
        {"$v": 1, "$set": {"arr.100000000": 1}},
        {"$v": 1, "$set": {"arr." + "9" * 5000: 1}},  # past int()'s digit limit too
    ],
    ids=["diff-index", "diff-length", "diff-just-past", "set-index", "set-5000-digits"],
)
def test_array_padding_is_bounded_as_the_server_bounds_it(o: dict[str, Any]) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ReplayError, match=r"padded with [0-9,]+ nulls"):
            apply_update({"_id": 1, "arr": [1]}, o)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak  # refused before anything is allocated for it


def test_padding_up_to_the_server_bound_is_applied() -> None:
    new = apply_update(
        {"_id": 1, "arr": [1]}, {"$v": 2, "diff": {"sarr": {"a": True, "u1500001": 2}}}
    )
    assert len(new["arr"]) == 1_500_002 and new["arr"][-1] == 2 and new["arr"][1] is None


def test_padding_of_many_arrays_is_bounded_in_all() -> None:
    """Each array within the server's bound, together more nulls than 16 MiB can hold."""
    doc = {"_id": 1, **{f"a{i}": [] for i in range(5)}}
    diff = {f"sa{i}": {"a": True, "u1400000": 1} for i in range(5)}
    with pytest.raises(ReplayError, match="more nulls than 16 MiB can hold"):
        apply_update(doc, {"$v": 2, "diff": diff})


def test_a_path_of_more_than_100_components_is_refused() -> None:
    deep = ".".join(["a"] * 3000)
    with pytest.raises(ReplayError, match="a path of 3,000 components"):
        apply_update({"_id": 1}, {"$v": 1, "$set": {deep: 1}})
    with pytest.raises(ReplayError, match="a path of 101 components"):
        apply_update({"_id": 1}, {"$v": 1, "$unset": {".".join(["a"] * 101): ""}})
    new = apply_update({"_id": 1}, {"$v": 1, "$set": {".".join(["a"] * 100): 1}})
    assert bson.encode(new)  # 100 levels: built and encoded
