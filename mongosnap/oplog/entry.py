"""One oplog entry: decoded from raw BSON or taken from a mapping, named in errors.

Entries arrive as the bytes ``local.oplog.rs`` holds (``bytes`` or a
``RawBSONDocument``) or as mappings. Documents inside an entry stay raw where
they were raw, so an insert is written back as the exact bytes it was logged
with; ``plain`` decodes a value when it must be read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import bson
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from .._errors import ReplayError

# Decoding that re-encodes to the same bytes for every type PyMongo models:
# int64 stays Int64, UUIDs stay Binary, dates out of datetime's range stay DatetimeMS.
PLAIN: CodecOptions[dict[str, Any]] = CodecOptions(
    document_class=dict, datetime_conversion=DatetimeConversion.DATETIME_AUTO
)
RAW: CodecOptions[RawBSONDocument] = CodecOptions(
    document_class=RawBSONDocument, datetime_conversion=DatetimeConversion.DATETIME_AUTO
)


def plain(value: Any) -> Any:
    """A value with every raw document in it decoded to dicts (lists too)."""
    if isinstance(value, RawBSONDocument):
        return bson.decode(value.raw, PLAIN)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def encode(document: Mapping[str, Any]) -> bytes:
    """The BSON bytes of a document (a raw one as it is)."""
    if isinstance(document, RawBSONDocument):
        return bytes(document.raw)
    return bson.encode(document, codec_options=PLAIN)


def format_ts(ts: Timestamp) -> str:
    """``SECONDS:INC``, the form ``--to-ts`` takes."""
    return f"{ts.time}:{ts.inc}"


def parse_ts(text: str) -> Timestamp:
    """Parse ``SECONDS:INC`` into a Timestamp."""
    seconds, sep, inc = text.partition(":")
    if not sep or not seconds.isdigit() or not inc.isdigit():
        raise ReplayError(f"not an oplog timestamp SECONDS:INC: {text!r}")
    return Timestamp(int(seconds), int(inc))


@dataclass(frozen=True)
class OplogEntry:
    """The fields of an entry replay reads; ``fields`` keeps the whole entry."""

    ts: Timestamp
    op: str
    ns: str
    o: Mapping[str, Any]
    o2: Mapping[str, Any] | None
    fields: Mapping[str, Any]

    @property
    def database(self) -> str:
        return self.ns.partition(".")[0]

    @property
    def collection(self) -> str:
        return self.ns.partition(".")[2]

    @property
    def txn_key(self) -> bytes | None:
        """Identifies the transaction (session id and number), None outside one."""
        lsid, number = self.fields.get("lsid"), self.fields.get("txnNumber")
        if lsid is None or number is None:
            return None
        if not isinstance(lsid, Mapping) or type(number) not in (int, bson.Int64):
            raise ReplayError(f"{self.describe()}: lsid or txnNumber of the wrong type")
        return encode(plain(lsid)) + str(int(number)).encode()

    def flag(self, name: str) -> bool:
        """A boolean found in ``o`` or on the entry (``partialTxn``, ``prepare``)."""
        return bool(self.o.get(name) or self.fields.get(name))

    def describe(self) -> str:
        return f"oplog entry ts={format_ts(self.ts)} op={self.op!r} ns={self.ns!r}"


def parse_entry(item: Any, *, ts: Timestamp | None = None) -> OplogEntry:
    """An OplogEntry from bytes, a RawBSONDocument or a mapping.

    ``ts`` is given for the entries nested in an ``applyOps``, which carry none.
    """
    fields = _fields(item)
    try:
        found = fields.get("ts", ts)
        op, ns, o = fields["op"], fields.get("ns", ""), fields.get("o")
    except (KeyError, bson.errors.InvalidBSON) as exc:
        raise ReplayError(f"malformed oplog entry: {exc}") from None
    if not isinstance(found, Timestamp):
        raise ReplayError(f"oplog entry without a timestamp (op={op!r} ns={ns!r})")
    if not isinstance(o, Mapping):
        raise ReplayError(f"oplog entry ts={format_ts(found)} op={op!r} has no 'o' document")
    o2 = fields.get("o2")
    return OplogEntry(found, str(op), str(ns), o, o2 if isinstance(o2, Mapping) else None, fields)


def _fields(item: Any) -> Mapping[str, Any]:
    if isinstance(item, bytes | bytearray | memoryview):
        return RawBSONDocument(bytes(item), RAW)
    if isinstance(item, RawBSONDocument):
        return RawBSONDocument(item.raw, RAW)  # whatever codec options it came with
    if isinstance(item, Mapping):
        return item
    raise ReplayError(f"an oplog entry must be BSON bytes or a mapping, not {type(item).__name__}")
