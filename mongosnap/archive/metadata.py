"""``<coll>.metadata.json``: collection options and index specs, as mongodump writes them.

The file is one line of canonical Extended JSON v2 whose keys come in
mongodump's order: ``options`` (left out when empty), ``indexes`` (always an
array; empty for views), ``uuid`` (lower-case hex of the collection UUID, left
out when unknown), ``collectionName`` and ``type`` (``collection``, ``view`` or
``timeseries``; left out when the server did not report one).
"""

from __future__ import annotations

import math
import uuid as uuid_module
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import bson
from bson import json_util
from bson.binary import Binary
from bson.codec_options import DatetimeConversion
from bson.decimal128 import Decimal128
from bson.json_util import CANONICAL_JSON_OPTIONS

from .._errors import CorruptArchive, UnsafeArchive
from .jsonlimits import bounded_text

MAX_METADATA_BYTES = 16 << 20
"""Largest metadata file read (a listCollections entry is at most 16 MiB of BSON)."""
MAX_METADATA_DEPTH = 128
"""Deepest JSON nesting accepted: 100 BSON levels (the server's limit for stored
documents), their Extended JSON wrappers and the file's own structure."""
MAX_METADATA_VALUES = 500_000
"""Most JSON values one metadata file may hold, counted as containers plus
separators (those inside strings too)."""
MAX_INDEXES = 64
"""Most index specs accepted (the server's per-collection limit)."""
# Dates outside Python's datetime range are valid BSON: keep them as milliseconds.
_READ_OPTIONS = CANONICAL_JSON_OPTIONS.with_options(
    datetime_conversion=DatetimeConversion.DATETIME_AUTO
)
COLLECTION_TYPES = ("collection", "view", "timeseries")

INDEX_OPTIONS = frozenset(
    {
        "2dsphereIndexVersion",
        "background",
        "bits",
        "bucketSize",
        "coarsestIndexedLevel",
        "collation",
        "default_language",
        "expireAfterSeconds",
        "finestIndexedLevel",
        "hidden",
        "key",
        "language_override",
        "max",
        "min",
        "name",
        "partialFilterExpression",
        "prepareUnique",
        "sparse",
        "storageEngine",
        "textIndexVersion",
        "unique",
        "weights",
        "wildcardProjection",
    }
)
"""Index options kept by convert_legacy_index (mongorestore's list, plus
``hidden`` and ``prepareUnique``; without ``ns`` and ``v``, which a restore
leaves to the server as mongorestore does by default)."""


@dataclass(frozen=True)
class CollectionMetadata:
    """What a metadata file says about one collection."""

    name: str
    type: str = "collection"
    options: dict[str, Any] = field(default_factory=dict)
    indexes: list[dict[str, Any]] = field(default_factory=list)
    uuid: str = ""


def collection_uuid(info: Mapping[str, Any]) -> str:
    """The hex UUID from a listCollections entry's ``info.uuid``, or ""."""
    value = (info.get("info") or {}).get("uuid")
    if isinstance(value, uuid_module.UUID):
        return value.hex
    if isinstance(value, Binary) and value.subtype == 4:
        return bytes(value).hex()
    return ""


class CollectionInfo(Protocol):
    """A collection as listCollections described it, already decoded."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def options(self) -> Mapping[str, Any]: ...
    @property
    def uuid(self) -> str: ...


def build_metadata(
    collection: Mapping[str, Any] | CollectionInfo, indexes: Iterable[Mapping[str, Any]] = ()
) -> bytes:
    """The metadata file for a collection and its listIndexes specs.

    ``collection`` is a raw listCollections entry (``name``, ``type``,
    ``options``, ``info.uuid``) or an object with those four attributes
    (``uuid`` as hex). A view's ``indexes`` are always empty.
    """
    if isinstance(collection, Mapping):
        name, ctype = collection["name"], str(collection.get("type") or "")
        options, uuid = collection.get("options") or {}, collection_uuid(collection)
    else:
        name, ctype = collection.name, collection.type
        options, uuid = collection.options, collection.uuid
    doc: dict[str, Any] = {}
    if options:
        doc["options"] = options
    doc["indexes"] = [] if ctype == "view" else list(indexes)
    if uuid:
        doc["uuid"] = uuid
    doc["collectionName"] = name
    if ctype:
        doc["type"] = ctype
    text = json_util.dumps(
        doc, json_options=CANONICAL_JSON_OPTIONS, separators=(",", ":"), ensure_ascii=False
    )
    return text.encode("utf-8")


def parse_metadata(
    data: bytes, *, convert_legacy: bool = True, member: str = "metadata"
) -> CollectionMetadata:
    """Read a metadata file (mongosnap's, mongodump's, or an old mongodump's).

    Missing keys get defaults: no ``collectionName`` gives "", no ``type`` is
    inferred from the options. With ``convert_legacy`` every index spec goes
    through convert_legacy_index. ``member`` names the file in messages.
    Raises CorruptArchive, or UnsafeArchive past the size, depth and value limits.
    """
    doc = _load(data, member)
    options = _get(doc, "options", dict, {}, member)
    indexes = _get(doc, "indexes", list, [], member)
    if len(indexes) > MAX_INDEXES:
        raise UnsafeArchive(f"{member}: more than {MAX_INDEXES} indexes")
    for spec in indexes:
        _check_index(spec, member)
    uuid = _get(doc, "uuid", str, "", member)
    if uuid and (len(uuid) != 32 or any(c not in "0123456789abcdefABCDEF" for c in uuid)):
        raise CorruptArchive(f"{member}: uuid is not 32 hex digits: {uuid[:64]!r}")
    ctype = _get(doc, "type", str, "", member) or _infer_type(options)
    if ctype not in COLLECTION_TYPES:
        raise CorruptArchive(f"{member}: unknown collection type {ctype[:64]!r}")
    if convert_legacy:
        indexes = [convert_legacy_index(i) for i in indexes]
    name = _get(doc, "collectionName", str, "", member)
    return CollectionMetadata(name, ctype, options, indexes, uuid.lower())


def _load(data: bytes, member: str) -> dict[str, Any]:
    """The file as a document, within the limits, and encodable as BSON."""
    text = bounded_text(
        data,
        member,
        max_bytes=MAX_METADATA_BYTES,
        max_depth=MAX_METADATA_DEPTH,
        max_values=MAX_METADATA_VALUES,
        refuse=UnsafeArchive,
    )
    try:
        doc = json_util.loads(text, json_options=_READ_OPTIONS)
    except Exception as exc:  # the Extended JSON decoder raises many types: all mean invalid
        raise CorruptArchive(
            f"{member} is not valid Extended JSON: {type(exc).__name__}: {str(exc)[:200]}"
        ) from exc
    if not isinstance(doc, dict):
        raise CorruptArchive(f"{member} is not a JSON object")
    try:  # what a restore sends the server must be BSON (string keys, no NUL in them)
        bson.encode(doc)
    except Exception as exc:
        raise CorruptArchive(f"{member} cannot be BSON: {str(exc)[:200]}") from exc
    return doc


def _check_index(spec: object, member: str) -> None:
    if not isinstance(spec, dict) or not isinstance(spec.get("key"), dict) or not spec["key"]:
        raise CorruptArchive(f"{member}: index spec without a key document")
    if not isinstance(spec.get("name", ""), str):
        raise CorruptArchive(f"{member}: index name is not a string")


def _get(doc: dict[str, Any], key: str, kind: type, default: Any, member: str) -> Any:
    value = doc.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise CorruptArchive(f"{member}: {key!r} is not a {kind.__name__}")
    return value


def _infer_type(options: Mapping[str, Any]) -> str:
    if "viewOn" in options:
        return "view"
    return "timeseries" if "timeseries" in options else "collection"


def convert_legacy_index(spec: Mapping[str, Any]) -> dict[str, Any]:
    """An index spec that a modern server accepts, as mongorestore's --convertLegacyIndexes.

    Key values: zero (any numeric type), the empty string and non-numeric,
    non-string values become 1; floats and Decimal128 become 1 or -1 by sign;
    numeric strings such as "1" or "-1" become 1 or -1; other strings (index
    types such as "2dsphere", "text", "hashed") and non-zero integers stay.
    Options outside INDEX_OPTIONS are dropped.
    """
    out = {k: v for k, v in spec.items() if k in INDEX_OPTIONS}
    out["key"] = {k: _key_value(v) for k, v in spec["key"].items()}
    return out


def _key_value(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, int):
        return value if value != 0 else 1
    if isinstance(value, float):
        return -1 if value < 0 and not math.isnan(value) else 1
    if isinstance(value, Decimal128):
        return _sign(value.to_decimal())
    if isinstance(value, str):
        if value == "":
            return 1
        try:
            return _sign(Decimal(value))
        except ArithmeticError:
            return value
    return 1


def _sign(number: Decimal) -> int:
    return -1 if number.is_signed() and not number.is_zero() and not number.is_nan() else 1
