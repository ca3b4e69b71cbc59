"""The new document an oplog update (``op: "u"``) makes of the current one.

Pure functions on decoded documents (dicts keep field order). Two formats:

- ``$v: 1`` (and entries without ``$v``): ``$set`` / ``$unset`` of dotted paths,
  or a whole replacement document (no operator). Paths are applied the way the
  server's update tree applies them, in field-name order level by level, with
  the oplog-application leniency: a path that cannot be created (it crosses a
  scalar, or names a field inside an array) is skipped, not an error, so that
  replaying an entry onto a later state converges.
- ``$v: 2`` ``diff`` documents (MongoDB 5.0+): per object, ``d`` deletes,
  ``u`` updates (in place), ``i`` inserts (appended), ``s<field>`` sub-diffs;
  per array (``a: true``), ``l`` new length, ``u<index>`` element sets and
  ``s<index>`` element sub-diffs. A sub-diff meeting the wrong type, or an
  index past the end, yields null, as the server does when an entry is
  applied twice: a later entry overwrites that value.

Growth is bounded as the server bounds it: one array is padded by at most
1,500,000 nulls (MongoDB's ``kMaxPaddingAllowed``), the nulls one update adds
in all by what a 16 MiB document can hold, and a path has at most 100
components (BSON documents nest at most 100 levels). An update past a bound
could not have been logged by a server and raises ReplayError, before any
memory is spent on it.

A diff that names one field twice in an object diff (twice in a section, or
in two sections), one array index twice, or one section twice is refused, as
the server refuses it (``duplicate field name in diff``, error 4728000). A
decoder keeps the last of repeated names, so this is checked on the raw bytes
of a diff that arrives raw (``check_raw_update``): a decode that refuses any
repeated name first (C speed), then, only when it finds one, a walk of the
diff's own names one level at a time (a user value may repeat names).

Malformed or unsupported updates raise ReplayError; the caller names the entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import bson
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument

from .._errors import CorruptArchive, ReplayError
from ..archive.bsonstream import element_spans
from .entry import plain

Document = dict[str, Any]

_V1_OPERATORS = frozenset({"$set", "$unset"})
_DOC_SECTIONS = "duib"  # then s<field>, in this order (the server's reader enforces it)
_MAX_PAD = 1_500_000  # the server refuses to pad an array further
_MAX_NULLS = 16 * 1024 * 1024 // 3  # a null array element takes at least 3 bytes
MAX_PATH = 100  # components of a dotted path: BSON documents nest at most 100 levels
_MAX_INDEX_DIGITS = 18  # longer decimal indexes are past any bound (and int() limits)


class Unreplayable(ReplayError):
    """An update replay cannot apply (a binary ``b`` diff section): its collection
    stops there and the others go on (``ReplayReport.stopped``). ``ns`` is the
    entry's namespace, set by the replay."""

    ns = ""


class Growth:
    """The nulls one update has padded arrays with so far, bounded."""

    def __init__(self) -> None:
        self.nulls = 0

    def pad(self, array: list[Any], index: int) -> None:
        """Pad ``array`` with nulls up to (not including) ``index``."""
        count = index - len(array)
        if count <= 0:
            return
        if count > _MAX_PAD:
            raise ReplayError(
                f"an array would be padded with {count:,} nulls (the server allows {_MAX_PAD:,})"
            )
        self.nulls += count
        if self.nulls > _MAX_NULLS:
            raise ReplayError("the update pads arrays with more nulls than 16 MiB can hold")
        array.extend([None] * count)


def apply_update(current: Document, o: Mapping[str, Any]) -> Document:
    """The document after update ``o`` (an oplog entry's ``o``, decoded or raw) on ``current``."""
    if isinstance(o, RawBSONDocument):
        check_raw_update(o)
        o = plain(o)
    version = o.get("$v", 1)
    if version == 2:
        diff = o.get("diff")
        if not isinstance(diff, Mapping):
            raise ReplayError("$v:2 update without a 'diff' document")
        return apply_diff(current, diff, Growth())
    if version != 1:
        raise ReplayError(f"unsupported update format $v:{version!r}")
    operators = [k for k in o if k.startswith("$") and k != "$v"]
    if not operators:
        return _replacement(current, o)
    unknown = set(operators) - _V1_OPERATORS
    if unknown:
        raise ReplayError(f"unsupported $v:1 update operator(s) {sorted(unknown)}")
    set_fields, unset_fields = o.get("$set") or {}, o.get("$unset") or {}
    if not isinstance(set_fields, Mapping) or not isinstance(unset_fields, Mapping):
        raise ReplayError("$set and $unset must be documents")
    return apply_v1(current, set_fields, unset_fields)


def is_full_image(o: Mapping[str, Any]) -> bool:
    """A ``$v:1`` ``$set`` carrying ``_id``: the whole new document.

    MongoDB never logs ``_id`` in ``$set`` (it is immutable, and setting it to
    its own value is no change). FerretDB 1.x logs every update this way, so
    its post-image is exactly that ``$set``, fields it removed included.
    """
    fields = o.get("$set")
    return (
        o.get("$v", 1) == 1
        and isinstance(fields, Mapping)
        and "_id" in fields
        and set(o) <= {"$v", "$set"}
    )


def _replacement(current: Document, o: Mapping[str, Any]) -> Document:
    new = {k: v for k, v in o.items() if k != "$v"}
    if "_id" in new or "_id" not in current:
        return new
    return {"_id": current["_id"], **new}


# ---------------------------------------------------------------- $v:1


def apply_v1(
    current: Document, set_fields: Mapping[str, Any], unset_fields: Mapping[str, Any]
) -> Document:
    """Apply ``$set`` and ``$unset`` paths, ordered like the server's update tree."""
    doc: Document = _copy(current)
    paths = [(p, True, v) for p, v in set_fields.items()]
    paths += [(p, False, None) for p in unset_fields]
    for path, _, _ in paths:
        if path.count(".") >= MAX_PATH:
            raise ReplayError(
                f"a path of {path.count('.') + 1:,} components (at most {MAX_PATH}): "
                f"{path[:60]!r}..."
            )
    growth = Growth()
    for path, is_set, value in sorted(paths, key=lambda item: item[0].split(".")):
        parts = path.split(".")
        if is_set:
            _set_path(doc, parts, _copy(value), growth)
        else:
            _unset_path(doc, parts)
    return doc


def _set_path(container: Any, parts: list[str], value: Any, growth: Growth) -> None:
    head, rest = parts[0], parts[1:]
    if isinstance(container, dict):
        if head in container and rest:
            _set_path(container[head], rest, value, growth)
        else:
            container[head] = _build(rest, value) if head not in container else value
        return
    if isinstance(container, list):
        index = _index(head)
        if index is None:
            return  # a field name inside an array: not viable, skipped
        if index < len(container):
            if rest:
                _set_path(container[index], rest, value, growth)
            else:
                container[index] = value
            return
        growth.pad(container, index)
        container.append(_build(rest, value))
    # Any other type cannot hold a field: not viable, skipped.


def _build(parts: list[str], value: Any) -> Any:
    for part in reversed(parts):
        value = {part: value}
    return value


def _unset_path(container: Any, parts: list[str]) -> None:
    head, rest = parts[0], parts[1:]
    if isinstance(container, dict):
        if head not in container:
            return
        if rest:
            _unset_path(container[head], rest)
        else:
            del container[head]
    elif isinstance(container, list):
        index = _index(head)
        if index is None or index >= len(container):
            return
        if rest:
            _unset_path(container[index], rest)
        else:
            container[index] = None  # $unset keeps array positions


def _index(part: str) -> int | None:
    if not (part.isascii() and part.isdigit()):
        return None
    return int(part) if len(part) <= _MAX_INDEX_DIGITS else 10**_MAX_INDEX_DIGITS


# ---------------------------------------------------------------- $v:2 raw checks

_SECTIONS = frozenset({b"d", b"u", b"i", b"b"})
_EMBEDDED = 0x03  # BSON type byte of an embedded document
_DUPLICATE = ": duplicate field name in diff, error 4728000"


def check_raw_update(o: Mapping[str, Any]) -> None:
    """Refuse a raw ``$v:2`` update whose diff names a field, index or section twice."""
    if not isinstance(o, RawBSONDocument) or o.get("$v") != 2:
        return
    diff = o.get("diff")
    if not isinstance(diff, RawBSONDocument):
        return
    raw = bytes(diff.raw)
    if _no_name_repeated(raw):
        return  # the usual case, found at the C decoder's speed
    try:
        _check_raw(raw, 0, len(raw), 0)  # a name repeated: in the diff, or in a value?
    except CorruptArchive as exc:
        raise ReplayError(f"$v:2 diff is not valid BSON: {exc}") from None


class _Repeated(Exception):
    pass


class _NoRepeats(dict[str, Any]):
    """A decoded document that refuses a name it already holds (the C decoder
    sets each element through ``__setitem__``)."""

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self:
            raise _Repeated
        super().__setitem__(key, value)


_STRICT: CodecOptions[_NoRepeats] = CodecOptions(
    document_class=_NoRepeats, datetime_conversion=DatetimeConversion.DATETIME_MS
)


def _no_name_repeated(raw: bytes) -> bool:
    """True when no document in ``raw`` repeats a name; False also when it cannot
    be decoded (the walk then says what is wrong)."""
    try:
        bson.decode(raw, _STRICT)
    except Exception:  # _Repeated, or bytes the decoder refuses
        return False
    return True


def _check_raw(data: bytes, start: int, end: int, depth: int) -> None:
    if depth > MAX_PATH:
        raise ReplayError(f"$v:2 diff: sub-diffs nested deeper than {MAX_PATH} levels")
    elements = list(element_spans(data, start, end, "$v:2 diff"))
    if elements and elements[0][1] == b"a":
        _check_raw_array(data, elements[1:], depth)
        return
    sections: set[bytes] = set()
    fields: set[bytes] = set()
    for kind, name, value, stop in elements:
        _once(sections, name, "section", "")
        if kind != _EMBEDDED:
            continue  # not a document: the decoded checks name it
        if name in _SECTIONS:
            for _, field, _, _ in element_spans(data, value, stop, "$v:2 diff"):
                _once(fields, field, "field", _DUPLICATE)
        elif name[:1] == b"s":
            _once(fields, name[1:], "field", _DUPLICATE)
            _check_raw(data, value, stop, depth + 1)


def _check_raw_array(data: bytes, elements: list[tuple[int, bytes, int, int]], depth: int) -> None:
    indexes: set[bytes] = set()
    for kind, name, value, stop in elements:
        if name == b"l":
            continue
        _once(indexes, name[1:], "array index", "")
        if name[:1] == b"s" and kind == _EMBEDDED:
            _check_raw(data, value, stop, depth + 1)


def _once(seen: set[bytes], name: bytes, what: str, code: str) -> None:
    if name in seen:
        shown = name.decode("utf-8", "replace")
        raise ReplayError(
            f"$v:2 diff: {what} {shown!r} appears twice (the server refuses it{code})"
        )
    seen.add(name)


# ---------------------------------------------------------------- $v:2


def apply_diff(
    current: Document, diff: Mapping[str, Any], growth: Growth | None = None
) -> Document:
    """Apply a ``$v:2`` document diff to a whole document."""
    if _is_array_diff(diff):
        raise ReplayError("$v:2 diff: the top level must be a document diff")
    return _diff_object(current, diff, growth or Growth())


def _is_array_diff(diff: Mapping[str, Any]) -> bool:
    if not diff:
        raise ReplayError("$v:2 diff: empty sub-diff")
    return next(iter(diff)) == "a"


def _diff_object(pre: Document, diff: Mapping[str, Any], growth: Growth) -> Document:
    table, appended = _object_table(diff)
    out: Document = {}
    done: set[str] = set()
    for name, value in pre.items():
        change = table.get(name)
        if change is None:
            out[name] = value
        elif change[0] == "u":
            out[name] = change[1]
            done.add(name)
        elif change[0] == "s":
            out[name] = _sub_diff(value, change[1], growth)
        # "d": dropped; "i": re-added at the end
    for name, value in appended:
        if name not in done:
            out[name] = value
    return out


def _object_table(
    diff: Mapping[str, Any],
) -> tuple[dict[str, tuple[str, Any]], list[tuple[str, Any]]]:
    """Field name -> (kind, value), and the updates then inserts in their order."""
    table: dict[str, tuple[str, Any]] = {}
    appended: list[tuple[str, Any]] = []
    rank = -1
    for key, section in diff.items():
        kind = key[:1]
        order = _DOC_SECTIONS.index(kind) if kind and kind in _DOC_SECTIONS else 4
        if key in ("d", "u", "i", "b") or kind == "s":
            if order < rank or (order == rank and kind != "s"):
                raise ReplayError(f"$v:2 diff: section {key!r} out of order")
            rank = order
        else:
            raise ReplayError(f"$v:2 diff: unexpected section {key!r}")
        if not isinstance(section, Mapping):
            raise ReplayError(f"$v:2 diff: section {key!r} is not a document")
        if kind == "b":
            raise Unreplayable(
                "$v:2 diff: a binary ('b') section (MongoDB 8's in-place BinData changes, "
                "written for time series buckets) cannot be replayed"
            )
        if kind == "s":
            _add(table, key[1:], ("s", section))
            continue
        for name, value in section.items():
            _add(table, name, (kind, value))
            if kind in "ui":
                appended.append((name, value))
    return table, appended


def _add(table: dict[str, tuple[str, Any]], name: str, change: tuple[str, Any]) -> None:
    if name in table:
        raise ReplayError(f"$v:2 diff: field {name!r} appears twice")
    table[name] = change


def _sub_diff(value: Any, diff: Mapping[str, Any], growth: Growth) -> Any:
    """Recurse when the value has the type the sub-diff expects, else null."""
    if _is_array_diff(diff):
        return _diff_array(value, diff, growth) if isinstance(value, list) else None
    return _diff_object(value, diff, growth) if isinstance(value, dict) else None


def _diff_array(pre: list[Any], diff: Mapping[str, Any], growth: Growth) -> list[Any]:
    size, changes = _array_table(diff)
    out: list[Any] = []
    end = len(pre) if size is None else min(len(pre), size)
    for index in range(end):
        change = changes.pop(index, None)
        out.append(pre[index] if change is None else _array_value(pre[index], change, growth))
    if size is not None and any(index >= size for index in changes):
        raise ReplayError(f"$v:2 diff: array change past its new length {size}")
    # Past the old end: the changed indexes in order, nulls between them (bounded).
    for index in sorted(changes):
        growth.pad(out, index)
        kind, payload = changes[index]
        out.append(None if kind == "s" else payload)
    growth.pad(out, size or 0)
    return out


def _array_value(value: Any, change: tuple[str, Any], growth: Growth) -> Any:
    kind, payload = change
    return payload if kind == "u" else _sub_diff(value, payload, growth)


def _array_table(diff: Mapping[str, Any]) -> tuple[int | None, dict[int, tuple[str, Any]]]:
    items = list(diff.items())
    if items[0][1] is not True:
        raise ReplayError("$v:2 diff: array header 'a' must be true")
    size: int | None = None
    rest = items[1:]
    if rest and rest[0][0] == "l":
        size = rest.pop(0)[1]
        if type(size) is not int or size < 0:
            raise ReplayError(f"$v:2 diff: bad array length {size!r}")
    changes: dict[int, tuple[str, Any]] = {}
    for key, value in rest:
        index = _index(key[1:]) if len(key) > 1 else None
        if key[:1] not in ("u", "s") or index is None:
            raise ReplayError(f"$v:2 diff: unexpected array field {key!r}")
        if key[0] == "s" and not isinstance(value, Mapping):
            raise ReplayError(f"$v:2 diff: sub-diff {key!r} is not a document")
        if index in changes:
            raise ReplayError(f"$v:2 diff: array index {index} appears twice")
        changes[index] = (key[0], value)
    return size, changes


def _copy(value: Any) -> Any:
    """A deep copy of dicts and lists (other BSON values are immutable)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
