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

from bson import json_util
from bson.binary import Binary
from bson.decimal128 import Decimal128
from bson.json_util import CANONICAL_JSON_OPTIONS

from .._errors import CorruptArchive, UnsafeArchive

MAX_METADATA_BYTES = 16 << 20
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


def parse_metadata(data: bytes, *, convert_legacy: bool = True) -> CollectionMetadata:
    """Read a metadata file (mongosnap's, mongodump's, or an old mongodump's).

    Missing keys get defaults: no ``collectionName`` gives "", no ``type`` is
    inferred from the options. With ``convert_legacy`` every index spec goes
    through convert_legacy_index. Raises CorruptArchive or UnsafeArchive.
    """
    if len(data) > MAX_METADATA_BYTES:
        raise UnsafeArchive(f"metadata file larger than {MAX_METADATA_BYTES} bytes")
    try:
        doc = json_util.loads(data.decode("utf-8"), json_options=CANONICAL_JSON_OPTIONS)
    except (UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
        raise CorruptArchive(f"metadata is not valid Extended JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise CorruptArchive("metadata is not a JSON object")
    options = _get(doc, "options", dict, {})
    indexes = _get(doc, "indexes", list, [])
    if not all(isinstance(i, dict) and isinstance(i.get("key"), dict) for i in indexes):
        raise CorruptArchive("metadata index spec without a key document")
    uuid = _get(doc, "uuid", str, "")
    if uuid and (len(uuid) != 32 or any(c not in "0123456789abcdefABCDEF" for c in uuid)):
        raise CorruptArchive(f"metadata uuid is not 32 hex digits: {uuid!r}")
    ctype = _get(doc, "type", str, "") or _infer_type(options)
    if ctype not in COLLECTION_TYPES:
        raise CorruptArchive(f"unknown collection type {ctype!r}")
    if convert_legacy:
        indexes = [convert_legacy_index(i) for i in indexes]
    name = _get(doc, "collectionName", str, "")
    return CollectionMetadata(name, ctype, options, indexes, uuid.lower())


def _get(doc: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = doc.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise CorruptArchive(f"metadata {key!r} is not a {kind.__name__}")
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
