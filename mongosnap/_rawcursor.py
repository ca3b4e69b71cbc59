"""A raw-batch cursor that hands the server's batch over without looking inside it.

PyMongo's ``find_raw_batches`` unpacks each reply through a selective decoder
that builds one ``RawBSONDocument`` per document before it joins them back
into one buffer: about 10 µs per document, the largest single cost of a
backup against a fast server. Here the reply is walked element by element at
its top two levels only (a handful of fields: ``cursor``, ``ok``,
``$clusterTime``...); the batch array goes straight to PyMongo's C routine
that turns a BSON array into a document stream, and everything else is
decoded as PyMongo would. The cursor machinery itself (sessions, server
pinning, getMore, killCursors, retries) stays PyMongo's.

It relies on one overridable method of PyMongo's raw batch cursor,
``_unpack_response``; ``raw_batch_cursor`` falls back to the public
``find_raw_batches`` for clients it does not recognise (Motor).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import bson
from bson import _array_of_documents_to_buffer  # C when PyMongo's extension is built
from bson.errors import InvalidBSON
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.cursor import AsyncRawBatchCursor

_BATCH_KEYS = (b"firstBatch", b"nextBatch")
_INT32 = struct.Struct("<i")
# Sizes of fixed-width values, by BSON element type.
_FIXED = {0x01: 8, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8,
          0x13: 16, 0x7F: 0, 0xFF: 0}  # fmt: skip
_LENGTH_PREFIXED = {0x02: 4, 0x0D: 4, 0x0E: 4}  # string-like: int32 length + bytes
_EMBEDDED = {0x03, 0x04, 0x0F}  # document, array, code with scope: int32 total length


def _elements(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int, int]]:
    """(key, type, element start, element end) of each element of a document."""
    found = []
    at = start + 4
    while at < end - 1:
        kind = data[at]
        key_end = data.index(b"\0", at + 1, end)
        value = key_end + 1
        if kind in _FIXED:
            stop = value + _FIXED[kind]
        elif kind in _LENGTH_PREFIXED or kind in _EMBEDDED:
            length = _INT32.unpack_from(data, value)[0]
            stop = value + (length + 4 if kind in _LENGTH_PREFIXED else length)
        elif kind == 0x05:  # binary: int32 length, subtype, bytes
            stop = value + 5 + _INT32.unpack_from(data, value)[0]
        elif kind == 0x0B:  # regex: two cstrings
            first = data.index(b"\0", value, end) + 1
            stop = data.index(b"\0", first, end) + 1
        elif kind == 0x0C:  # DBPointer: string + ObjectId
            stop = value + 4 + _INT32.unpack_from(data, value)[0] + 12
        else:
            raise InvalidBSON(f"unknown BSON element type {kind:#x} in a cursor reply")
        found.append((data[at + 1 : key_end], kind, at, stop))
        at = stop
    return found


def _without(data: bytes, start: int, end: int, cut: tuple[int, int]) -> bytes:
    """The document [start, end) with the element [cut) left out."""
    body = data[start + 4 : cut[0]] + data[cut[1] : end]
    return _INT32.pack(len(body) + 4) + body


def unpack_cursor_reply(payload: bytes | memoryview, codec_options: Any) -> dict[str, Any]:
    """A find/getMore reply as ``find_raw_batches`` gives it, without per-document work.

    ``cursor.firstBatch`` / ``cursor.nextBatch`` becomes ``[stream]`` (or ``[]``);
    every other field is decoded normally. A reply of another shape (an error)
    is decoded whole.
    """
    data = payload if isinstance(payload, bytes) else bytes(payload)
    end = _INT32.unpack_from(data, 0)[0]
    top = _elements(data, 0, end)
    cursor = next((e for e in top if e[0] == b"cursor" and e[1] == 0x03), None)
    if cursor is None:
        return dict(bson.decode(data[:end], codec_options))
    doc_start = cursor[2] + len(b"cursor") + 2
    reply = dict(bson.decode(_without(data, 0, end, cursor[2:]), codec_options))
    inner = _elements(data, doc_start, cursor[3])
    batch = next((e for e in inner if e[0] in _BATCH_KEYS and e[1] == 0x04), None)
    if batch is None:
        reply["cursor"] = bson.decode(data[doc_start : cursor[3]], codec_options)
        return reply
    fields = dict(bson.decode(_without(data, doc_start, cursor[3], batch[2:]), codec_options))
    array = memoryview(data)[batch[2] + len(batch[0]) + 2 : batch[3]]
    stream = _array_of_documents_to_buffer(array)
    fields[batch[0].decode()] = [stream] if stream else []
    reply["cursor"] = fields
    return reply


class FastRawBatchCursor(AsyncRawBatchCursor[Mapping[str, Any]]):
    """PyMongo's raw batch cursor with a reply unpacker that skips the documents."""

    def _unpack_response(
        self,
        response: Any,
        cursor_id: int | None,
        codec_options: Any,
        user_fields: Mapping[str, Any] | None = None,
        legacy_response: bool = False,
    ) -> list[Any]:
        payload = getattr(response, "payload_document", None)
        if legacy_response or payload is None:
            return super()._unpack_response(
                response, cursor_id, codec_options, user_fields, legacy_response
            )
        return [unpack_cursor_reply(payload, codec_options)]


def raw_batch_cursor(collection: Any, **find: Any) -> Any:
    """The fastest raw batch cursor this client offers; ``find`` as for ``find()``."""
    if isinstance(collection, AsyncCollection):
        return FastRawBatchCursor(collection, **find)
    return collection.find_raw_batches(**find)
