"""Member names: mongodump's directory layout and its file-name escaping.

A collection ``coll`` of database ``db`` is stored as

    dump/<db>/<escaped coll>.metadata.json
    dump/<db>/<escaped coll>.bson          (not for views)

and a time-series collection's data as ``dump/<db>/<escaped system.buckets.coll>.bson``,
exactly as mongodump lays out a dump directory. The escaping is mongodump's
(Go's ``url.QueryEscape``): bytes of the UTF-8 name other than ``A-Z a-z 0-9
- _ . ~`` become ``%XX`` (upper-case hex), a space becomes ``+``. An escaped
name longer than 238 bytes is cut to its first 208 bytes, followed by ``%24``
and the unpadded URL-safe base64 of the SHA-1 of the original name, so the
longest file name (``.metadata.json.gz`` added) stays within 255 bytes; the
full name is in the metadata file's ``collectionName`` (collection_name()).

``mongodump --gzip`` writes the same names with ``.gz`` added, each file one
gzip stream (DumpFile.compressed).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote_plus

from .._errors import UnsafeArchive

DUMP_ROOT = "dump"
MANIFEST_MEMBER = "mongosnap/manifest.json"
METADATA_SUFFIX = ".metadata.json"
BSON_SUFFIX = ".bson"
GZIP_SUFFIX = ".gz"
MAX_NAME_BYTES = 4096

_ESCAPED_MAX = 238
_ESCAPED_KEEP = 208
_LONGEST_ESCAPE = 12  # a 4-byte UTF-8 character, escaped
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")

Kind = Literal["metadata", "bson"]


def escape_collection_name(name: str) -> str:
    """The file-name stem mongodump uses for collection ``name``."""
    escaped = quote_plus(name, safe="")
    if len(escaped) > _ESCAPED_MAX:
        digest = hashlib.sha1(name.encode("utf-8")).digest()
        tag = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
        escaped = escaped[:_ESCAPED_KEEP] + "%24" + tag
    return escaped


def unescape_collection_name(stem: str) -> str:
    """Invert escape_collection_name (a truncated stem gives the truncated name).

    Raises ValueError on a malformed escape or a name that is not UTF-8.
    """
    if _BAD_PERCENT.search(stem):
        raise ValueError(f"malformed escape in {stem!r}")
    raw = bytearray()
    i = 0
    while i < len(stem):
        ch = stem[i]
        if ch == "%":
            raw.append(int(stem[i + 1 : i + 3], 16))
            i += 3
            continue
        raw += b" " if ch == "+" else ch.encode("utf-8")
        i += 1
    return raw.decode("utf-8")


def is_shortened(stem: str) -> bool:
    """Whether ``stem`` is one escape_collection_name cut: the real name is
    then only in the metadata's ``collectionName``."""
    return len(stem) == _ESCAPED_MAX and stem[_ESCAPED_KEEP : _ESCAPED_KEEP + 3] == "%24"


def collection_name(stem: str, metadata_name: str = "") -> str:
    """The collection a member's ``stem`` stands for.

    A shortened stem stands for the metadata's ``collectionName`` when that
    name escapes to the stem (a name that does not is not trusted), else for
    shortened_name(). Any other stem stands for its unescaped form (the stem
    itself when it is not a valid escape).
    """
    if is_shortened(stem):
        matches = metadata_name and escape_collection_name(metadata_name) == stem
        return metadata_name if matches else shortened_name(stem)
    try:
        return unescape_collection_name(stem)
    except ValueError:
        return stem


def shortened_name(stem: str) -> str:
    """The name a shortened stem gives without its metadata: the kept part
    unescaped, up to the last whole character, then the rest of the stem as it
    is (``%24`` and the hash: unescaped, ``$`` is refused in names).

    ``"a%2Fb+a%2Fb+...a%2F%24<hash>"`` gives ``"a/b a/b ...a/%24<hash>"``.
    """
    kept = stem[:_ESCAPED_KEEP]
    for end in range(len(kept), max(len(kept) - _LONGEST_ESCAPE, 0) - 1, -1):
        try:
            return unescape_collection_name(kept[:end]) + stem[end:]
        except ValueError:
            continue  # the cut fell inside an escape or a character
    return stem


def check_database_name(db: str) -> str:
    """``db`` if it is usable as a directory name; ValueError otherwise."""
    if db in ("", ".", "..") or any(c in db for c in "/\\\0"):
        raise ValueError(f"unusable database name {db!r}")
    return db


def member_name(db: str, coll: str, kind: Kind, *, collection_type: str = "collection") -> str:
    """The archive member holding ``kind`` of collection ``db.coll``."""
    check_database_name(db)
    if not coll or "\0" in coll:
        raise ValueError(f"unusable collection name {coll!r}")
    if kind == "metadata":
        return f"{DUMP_ROOT}/{db}/{escape_collection_name(coll)}{METADATA_SUFFIX}"
    if collection_type == "view":
        raise ValueError(f"view {db}.{coll} has no data member")
    stem = f"system.buckets.{coll}" if collection_type == "timeseries" else coll
    return f"{DUMP_ROOT}/{db}/{escape_collection_name(stem)}{BSON_SUFFIX}"


@dataclass(frozen=True)
class DumpFile:
    """What a member name under ``dump/`` says: database, escaped stem, kind,
    and whether it is gzipped (``mongodump --gzip``)."""

    database: str
    stem: str
    kind: Kind
    compressed: bool = False


def parse_member_name(name: str) -> DumpFile | None:
    """Split ``dump/<db>/<stem>.bson|.metadata.json`` (``.gz`` added or not);
    None for any other name."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != DUMP_ROOT or not parts[1]:
        return None
    file = parts[2]
    compressed = file.endswith(GZIP_SUFFIX)
    if compressed:
        file = file[: -len(GZIP_SUFFIX)]
    for suffix, kind in ((METADATA_SUFFIX, "metadata"), (BSON_SUFFIX, "bson")):
        if file.endswith(suffix) and len(file) > len(suffix):
            stem = file[: -len(suffix)]
            return DumpFile(parts[1], stem, kind, compressed)  # type: ignore[arg-type]
    return None


def validate_member_name(name: str) -> str:
    """Check a name read from an untrusted archive; return it normalised.

    A leading ``./`` and a directory's trailing ``/`` are dropped. Raises
    UnsafeArchive for absolute paths, ``.``/``..`` or empty components, NUL,
    backslashes and names longer than MAX_NAME_BYTES.
    """
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise UnsafeArchive(f"member name longer than {MAX_NAME_BYTES} bytes")
    if "\0" in name or "\\" in name:
        raise UnsafeArchive(f"member name with NUL or backslash: {name!r}")
    if name.startswith("/"):
        raise UnsafeArchive(f"absolute member name: {name!r}")
    body = name[2:] if name.startswith("./") else name
    body = body[:-1] if body.endswith("/") else body
    if any(part in ("", ".", "..") for part in body.split("/")):
        raise UnsafeArchive(f"member name with empty, '.' or '..' component: {name!r}")
    return body
