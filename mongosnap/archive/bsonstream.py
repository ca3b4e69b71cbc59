"""Split concatenated BSON documents from a stream of chunks, and validate them.

Each document starts with its total length (int32, little-endian) and ends with
a NUL byte. Lengths are checked before anything is buffered, so a hostile
length cannot make the splitter hold more than one maximum-size document.

Every document is also validated before it is handed out (``validate=True``,
the default), so nothing malformed reaches a server: see validate_documents.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Iterator
from typing import Any

import bson
from bson.codec_options import CodecOptions, DatetimeConversion

from .._errors import CorruptArchive, TruncatedArchive, UnsafeArchive

MIN_DOCUMENT = 5
MAX_DOCUMENT = 16 * 1024 * 1024 + 16 * 1024
"""The server's document limit plus the headroom it allows internally."""
MAX_NESTING = 200
"""Deepest nesting accepted, the top-level document counting as 1 (the server's
``maxBSONDepth`` default; stored user documents are limited to 100)."""

# Dates as plain milliseconds (never out of range) and strings that are not
# valid UTF-8 kept (a server may hold them; mongorestore copies them as they are).
_DECODE: CodecOptions[dict[str, Any]] = CodecOptions(
    datetime_conversion=DatetimeConversion.DATETIME_MS,
    unicode_decode_error_handler="surrogateescape",
)
# A document nested deeper than MAX_NESTING holds at least MAX_NESTING
# embedded-document elements of 7 bytes or more, each with a type byte of
# 0x03, 0x04 or 0x0F: only such documents need the depth walk.
_DEEP_CANDIDATE = MIN_DOCUMENT + 7 * MAX_NESTING


class BsonSplitter:
    """Feed chunks in, get whole raw documents out (validated unless told not to).

    ``max_documents`` and ``max_bytes`` (a manifest's ``documents`` and
    ``bson_bytes``) stop the stream with CorruptArchive at the first document
    or byte beyond them, before it is handed out.
    """

    def __init__(
        self,
        max_size: int = MAX_DOCUMENT,
        *,
        validate: bool = True,
        max_documents: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.max_size = max_size
        self.validate = validate
        self.max_documents = max_documents
        self.max_bytes = max_bytes
        self.documents = 0
        self.bytes = 0
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The documents completed by ``data``; raises UnsafeArchive or CorruptArchive."""
        if (
            self.max_bytes is not None
            and self.bytes + len(self._buffer) + len(data) > self.max_bytes
        ):
            raise CorruptArchive(f"BSON stream holds more than the {self.max_bytes} bytes expected")
        buffer = self._buffer
        buffer += data
        sizes: list[int] = []
        pos, end = 0, len(buffer)
        while end - pos >= 4:
            size = int.from_bytes(buffer[pos : pos + 4], "little", signed=True)
            if not MIN_DOCUMENT <= size <= self.max_size:
                raise UnsafeArchive(
                    f"BSON document {self.documents + len(sizes)} declares {size} bytes"
                )
            if end - pos < size:
                break
            if buffer[pos + size - 1] != 0:
                raise CorruptArchive(f"BSON document {self.documents + len(sizes)} lacks its NUL")
            sizes.append(size)
            pos += size
        if self.max_documents is not None and self.documents + len(sizes) > self.max_documents:
            raise CorruptArchive(
                f"BSON stream holds more than the {self.max_documents} documents expected"
            )
        whole = bytes(buffer[:pos])
        del buffer[:pos]
        if self.validate and whole:
            validate_documents(whole, sizes, first=self.documents)
        docs, start = [], 0
        for size in sizes:
            docs.append(whole[start : start + size])
            start += size
        self.documents += len(docs)
        self.bytes += pos
        return docs

    def close(self) -> None:
        """Declare the end; raises TruncatedArchive if a partial document is left."""
        if self._buffer:
            raise TruncatedArchive(
                f"BSON stream ends inside document {self.documents} ({len(self._buffer)} bytes)"
            )


def validate_documents(data: bytes, sizes: list[int], *, first: int = 0) -> None:
    """Raise CorruptArchive unless ``data``, documents of ``sizes`` end to end, is valid BSON.

    Checked: every element's type is known; names are NUL-terminated; string,
    code and symbol lengths match and end in NUL; embedded documents, arrays
    and code-with-scope lengths match their contents; binary lengths (and the
    old subtype 2's inner length) fit; booleans are 0 or 1; nothing follows
    the last element; nesting is at most MAX_NESTING deep. ``first`` is the
    index of the first document, for messages.

    PyMongo's C decoder does the structural checks (it is the fastest complete
    validator measured, see docs/format.md); documents that could nest deeper
    than MAX_NESTING are walked here instead, so the bound is explicit.
    """
    deep = _deep_candidates(data, sizes)
    if not deep and _decodes(data):
        return
    # Document by document: the deep ones walked, the others decoded to name the culprit.
    start = 0
    for index, size in enumerate(sizes):
        where = f"BSON document {first + index}"
        if index in deep:
            _walk(data, start, start + size, 1, where)
        else:
            _decode_one(data[start : start + size], where)
        start += size


def _deep_candidates(data: bytes, sizes: list[int]) -> set[int]:
    found: set[int] = set()
    start = 0
    for index, size in enumerate(sizes):
        if size >= _DEEP_CANDIDATE:
            end = start + size
            count = data.count(3, start, end) + data.count(4, start, end)
            if count + data.count(15, start, end) >= MAX_NESTING:
                found.add(index)
        start += size
    return found


def _decodes(data: bytes) -> bool:
    try:
        bson.decode_all(data, _DECODE)
    except Exception:  # the decoder is a black box: any failure means invalid bytes
        return False
    return True


def _decode_one(doc: bytes, where: str) -> None:
    try:
        bson.decode_all(doc, _DECODE)
    except Exception as exc:  # InvalidBSON mostly; any failure means invalid bytes
        raise CorruptArchive(f"{where} is not valid BSON: {exc}") from exc


# Fixed-size element values by type byte; the others are handled in _value_end.
_FIXED = {0x01: 8, 0x06: 0, 0x07: 12, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8}
_FIXED |= {0x13: 16, 0x7F: 0, 0xFF: 0}
_STRINGS = (0x02, 0x0D, 0x0E)


def _walk(data: bytes, start: int, end: int, depth: int, where: str) -> None:
    """Validate the document ``data[start:end]`` element by element (explicit depth bound)."""
    if depth > MAX_NESTING:
        raise CorruptArchive(f"{where} nests deeper than {MAX_NESTING} levels")
    pos, last = _frame(data, start, end, where, "an embedded document")
    while pos < last:
        kind, name_end = _element_name(data, pos, last, where)
        pos = _value_end(data, kind, name_end + 1, last, depth, where)
    if pos != last:
        raise CorruptArchive(f"{where}: an element runs past its document")


def _value_end(data: bytes, kind: int, pos: int, limit: int, depth: int, where: str) -> int:
    """Where the value of type ``kind`` starting at ``pos`` ends; validates it."""
    fixed = _FIXED.get(kind)
    if fixed is not None:
        end = pos + fixed
        if end > limit:
            raise CorruptArchive(f"{where}: an element runs past its document")
        return end
    if kind == 0x08:
        if pos >= limit or data[pos] > 1:
            raise CorruptArchive(f"{where}: invalid boolean")
        return pos + 1
    if kind in _STRINGS:
        return _string_end(data, pos, limit, where)
    if kind in (0x03, 0x04):
        end = pos + _int32(data, pos, limit, where)
        if end > limit:
            raise CorruptArchive(f"{where}: an embedded document runs past its parent")
        _walk(data, pos, end, depth + 1, where)
        return end
    if kind == 0x05:
        size = _int32(data, pos, limit, where)
        end = pos + 5 + size
        if size < 0 or end > limit:
            raise CorruptArchive(f"{where}: invalid binary length")
        if data[pos + 4] == 2 and (size < 4 or _int32(data, pos + 5, end, where) != size - 4):
            raise CorruptArchive(f"{where}: invalid old binary (subtype 2) length")
        return end
    if kind == 0x0B:
        for _ in range(2):
            found = data.find(0, pos, limit)
            if found < 0:
                raise CorruptArchive(f"{where}: a regular expression is not terminated")
            pos = found + 1
        return pos
    if kind == 0x0C:
        end = _string_end(data, pos, limit, where) + 12
        if end > limit:
            raise CorruptArchive(f"{where}: an element runs past its document")
        return end
    if kind == 0x0F:
        end = pos + _int32(data, pos, limit, where)
        if end > limit or end < pos + 14:
            raise CorruptArchive(f"{where}: invalid code-with-scope length")
        scope = _string_end(data, pos + 4, end, where)
        _walk(data, scope, end, depth + 1, where)
        return end
    raise CorruptArchive(f"{where}: unknown BSON element type 0x{kind:02x}")


def element_spans(
    data: bytes, start: int, end: int, where: str = "BSON document"
) -> Iterator[tuple[int, bytes, int, int]]:
    """The elements of the document ``data[start:end]``, one level deep: (type
    byte, name, start and end of the value), names as they are, repeated ones
    included (a decoder keeps the last). Embedded documents are skipped by
    their length, not walked: reading a level costs its own bytes only.
    CorruptArchive when the bytes do not hold together."""
    pos, last = _frame(data, start, end, where, "a document")
    while pos < last:
        kind, name_end = _element_name(data, pos, last, where)
        value = name_end + 1
        if kind in (0x03, 0x04):
            stop = value + _int32(data, value, last, where)
            if stop > last or stop < value + MIN_DOCUMENT:
                raise CorruptArchive(f"{where}: an embedded document runs past its parent")
        else:
            stop = _value_end(data, kind, value, last, 1, where)
        yield kind, bytes(data[pos + 1 : name_end]), value, stop
        pos = stop
    if pos != last:
        raise CorruptArchive(f"{where}: an element runs past its document")


def _string_end(data: bytes, pos: int, limit: int, where: str) -> int:
    size = _int32(data, pos, limit, where)
    end = pos + 4 + size
    if size < 1 or end > limit or data[end - 1] != 0:
        raise CorruptArchive(f"{where}: invalid string length or terminator")
    return end


def _frame(data: bytes, start: int, end: int, where: str, what: str) -> tuple[int, int]:
    """The first element's and the NUL's offsets of the document ``data[start:end]``,
    once its length and NUL are checked."""
    if end - start < MIN_DOCUMENT or _int32(data, start, end, where) != end - start:
        raise CorruptArchive(f"{where}: {what}'s length is inconsistent")
    if data[end - 1] != 0:
        raise CorruptArchive(f"{where}: a document lacks its NUL")
    return start + 4, end - 1


def _element_name(data: bytes, pos: int, last: int, where: str) -> tuple[int, int]:
    """The type byte of the element at ``pos`` and the offset of its name's NUL."""
    name_end = data.find(0, pos + 1, last)
    if name_end < 0:
        raise CorruptArchive(f"{where}: an element name is not terminated")
    return data[pos], name_end


def _int32(data: bytes, pos: int, limit: int, where: str) -> int:
    if pos + 4 > limit:
        raise CorruptArchive(f"{where}: an element runs past its document")
    return int.from_bytes(data[pos : pos + 4], "little", signed=True)


async def split_documents(
    chunks: AsyncIterable[bytes], *, max_size: int = MAX_DOCUMENT, validate: bool = True
) -> AsyncGenerator[bytes, None]:
    """Yield each raw (validated) document of a BSON stream (a ``.bson`` member's body)."""
    splitter = BsonSplitter(max_size, validate=validate)
    async for chunk in chunks:
        for doc in splitter.feed(chunk):
            yield doc
    splitter.close()
