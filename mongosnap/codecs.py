"""Compression codecs: one class per algorithm, a registry, and detection by magic bytes.

An archive is a sequence of independent compressed members (gzip members or
zstd frames). Every codec offers:

``compress(chunk)``
    one independent member holding ``chunk``; safe to call from several
    threads at once (the work releases the GIL).
``stored(data)`` / ``stored_length(n)``
    one member holding ``data`` without compression, whose length depends only
    on ``len(data)``; the archive writer reserves tar headers with it.
``decompressor(max_output)``
    a streaming decoder across concatenated members that never returns more
    than ``PIECE`` bytes at a time and raises UnsafeArchive once its total
    output would exceed ``max_output``.
"""

from __future__ import annotations

import struct
import threading
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import ClassVar, cast

import zstandard
from isal import isal_zlib

from ._errors import CorruptArchive, TruncatedArchive, UnsafeArchive, UsageError

PIECE = 256 * 1024
"""Largest piece a decompressor yields at once."""


class Decompressor(ABC):
    """Turns a compressed byte stream, fed in arbitrary pieces, into plain bytes."""

    def __init__(self, max_output: int) -> None:
        self.max_output = max_output
        self.total_out = 0

    @abstractmethod
    def feed(self, data: bytes) -> Iterator[bytes]:
        """Decode ``data``; yield plain pieces of at most PIECE bytes.

        Raises CorruptArchive on invalid data, UnsafeArchive past max_output.
        """

    @abstractmethod
    def close(self) -> None:
        """Declare the end of input; raises TruncatedArchive inside a member."""

    def _count(self, out: bytes) -> bytes:
        self.total_out += len(out)
        if self.total_out > self.max_output:
            raise UnsafeArchive(f"archive decompresses to more than {self.max_output} bytes")
        return out


class Codec(ABC):
    """One compression algorithm."""

    name: ClassVar[str]
    suffix: ClassVar[str]
    default_level: ClassVar[int]

    stored_frame: ClassVar[tuple[int, int, int]] = (0, 0, 0)
    """stored()'s framing: bytes before the first block, bytes of each block's
    header, a block's capacity (0: no blocks, the data as it is)."""

    def __init__(self, level: int | None = None) -> None:
        self.level = self.default_level if level is None else level

    @classmethod
    def stored_spans(cls, start: int, end: int) -> list[tuple[int, int]]:
        """Where bytes ``[start, end)`` of ``data`` lie in ``stored(data)``: one
        ``(offset, end)`` per block they touch, in order. A reader can so take a
        slice of a stored member with one ranged read (the manifest index)."""
        prefix, header, block = cls.stored_frame
        if not block:
            return [(start, end)] if end > start else []
        spans = []
        position = start
        while position < end:
            index = position // block
            stop = min(end, (index + 1) * block)
            at = prefix + header * (index + 1) + position
            spans.append((at, at + stop - position))
            position = stop
        return spans

    def __repr__(self) -> str:
        return f"{type(self).__name__}(level={self.level})"

    @abstractmethod
    def compress(self, chunk: bytes) -> bytes:
        """One independent compressed member holding ``chunk``."""

    @abstractmethod
    def stored(self, data: bytes) -> bytes:
        """One uncompressed member holding ``data``; its length is stored_length()."""

    @staticmethod
    @abstractmethod
    def stored_length(n: int) -> int:
        """Length of ``stored(data)`` for any ``data`` of ``n`` bytes."""

    @classmethod
    @abstractmethod
    def sniff(cls, head: bytes) -> bool:
        """True if ``head`` (the first bytes of an archive) is in this format."""

    @abstractmethod
    def decompressor(self, max_output: int) -> Decompressor:
        """A streaming decoder across concatenated members."""


# --------------------------------------------------------------------- none


class _PlainDecompressor(Decompressor):
    def feed(self, data: bytes) -> Iterator[bytes]:
        for i in range(0, len(data), PIECE):
            yield self._count(data[i : i + PIECE])

    def close(self) -> None:
        pass


class NoCodec(Codec):
    """No compression: a plain tar. Ranges still work, members are just bytes."""

    name = "none"
    suffix = ".tar"
    default_level = 0

    def compress(self, chunk: bytes) -> bytes:
        return bytes(chunk)

    def stored(self, data: bytes) -> bytes:
        return bytes(data)

    @staticmethod
    def stored_length(n: int) -> int:
        return n

    @classmethod
    def sniff(cls, head: bytes) -> bool:
        return len(head) >= 263 and head[257:262] == b"ustar"

    def decompressor(self, max_output: int) -> Decompressor:
        return _PlainDecompressor(max_output)


# --------------------------------------------------------------------- gzip

_GZIP_MAGIC = b"\x1f\x8b"
# ID1 ID2, CM=8 (deflate), FLG=0, MTIME=0, XFL=0, OS=255 (unknown)
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_STORED_MAX = 0xFFFF
_GZIP_ERRORS: tuple[type[Exception], ...] = (zlib.error, cast(type[Exception], isal_zlib.error))


class _GzipDecompressor(Decompressor):
    def __init__(self, max_output: int) -> None:
        super().__init__(max_output)
        self._d: isal_zlib.Decompress | None = None
        self._carry = b""

    def feed(self, data: bytes) -> Iterator[bytes]:
        buf = self._carry + data if self._carry else data
        self._carry = b""
        try:
            while True:
                if self._d is None:
                    if not buf:
                        return
                    self._d = isal_zlib.decompressobj(wbits=31)
                out = self._d.decompress(buf, PIECE)
                if out:
                    yield self._count(out)
                if self._d.eof:
                    buf, self._d = self._d.unused_data, None
                elif len(out) < PIECE:
                    self._carry = self._d.unconsumed_tail  # wait for more input
                    return
                else:
                    buf = self._d.unconsumed_tail  # output was capped: call again
        except _GZIP_ERRORS as exc:
            raise CorruptArchive(f"invalid gzip data: {exc}") from exc

    def close(self) -> None:
        if self._d is not None or self._carry:
            raise TruncatedArchive("gzip stream ends inside a member")


class GzipCodec(Codec):
    """Gzip members (RFC 1952), compressed with ISA-L."""

    name = "gzip"
    suffix = ".tar.gz"
    default_level = 2
    stored_frame = (len(_GZIP_HEADER), 5, _STORED_MAX)

    def compress(self, chunk: bytes) -> bytes:
        return isal_zlib.compress(chunk, self.level, 31)

    def stored(self, data: bytes) -> bytes:
        parts = [_GZIP_HEADER]
        view = memoryview(data)
        starts = range(0, len(data), _STORED_MAX) if data else range(1)
        for start in starts:
            block = view[start : start + _STORED_MAX]
            final = start + _STORED_MAX >= len(data)
            parts.append(struct.pack("<BHH", int(final), len(block), 0xFFFF ^ len(block)))
            parts.append(bytes(block))
        parts.append(struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF))
        return b"".join(parts)

    @staticmethod
    def stored_length(n: int) -> int:
        blocks = max(1, -(-n // _STORED_MAX))
        return len(_GZIP_HEADER) + 5 * blocks + n + 8

    @classmethod
    def sniff(cls, head: bytes) -> bool:
        return head.startswith(_GZIP_MAGIC)

    def decompressor(self, max_output: int) -> Decompressor:
        return _GzipDecompressor(max_output)


# --------------------------------------------------------------------- zstd

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_RAW_BLOCK_MAX = 128 * 1024
# Frame_Header_Descriptor: Frame_Content_Size_flag=2 (4 bytes), Single_Segment_flag=1,
# no checksum, no dictionary (RFC 8878, 3.1.1.1.1).
_RAW_FHD = 0xA0
_FAST_FRAME = 8 << 20
"""Frames declaring at most this much output are decoded in one call."""
_SLOW_SLICE = 2048
"""Input slice for frames without a small declared size (bounds each call's output)."""
_WHOLE = 1 << 62


class _ZstdDecompressor(Decompressor):
    def __init__(self, max_output: int) -> None:
        super().__init__(max_output)
        self._d: zstandard.ZstdDecompressionObj | None = None
        self._slice = 0
        self._head = b""  # the start of a frame, until its header is readable

    def feed(self, data: bytes) -> Iterator[bytes]:
        buf = self._head + data if self._head else data
        self._head = b""
        view, pos = memoryview(buf), 0
        try:
            while pos < len(buf):
                if self._d is None and not self._start(bytes(view[pos : pos + 18])):
                    self._head = bytes(view[pos:])
                    return
                assert self._d is not None
                piece = view[pos : pos + self._slice]
                pos += len(piece)
                out = self._d.decompress(piece)
                for i in range(0, len(out), PIECE):
                    yield self._count(out[i : i + PIECE])
                if self._d.eof:  # the rest of the piece belongs to the next frame
                    pos -= len(self._d.unused_data)
                    self._d = None
        except zstandard.ZstdError as exc:
            raise CorruptArchive(f"invalid zstd data: {exc}") from exc

    def _start(self, head: bytes) -> bool:
        """Begin a frame; False if more bytes are needed to read its header."""
        if len(head) < 4:
            return False
        if head[:4] != _ZSTD_MAGIC:
            raise CorruptArchive("invalid zstd data: bad frame magic")
        try:
            params = zstandard.get_frame_parameters(head)
        except zstandard.ZstdError:
            if len(head) >= 18:  # the longest frame header
                raise
            return False
        size = params.content_size
        known = size != zstandard.CONTENTSIZE_UNKNOWN
        if known and self.total_out + size > self.max_output:
            raise UnsafeArchive(f"archive decompresses to more than {self.max_output} bytes")
        self._slice = _WHOLE if known and size <= _FAST_FRAME else _SLOW_SLICE
        self._d = zstandard.ZstdDecompressor().decompressobj()
        return True

    def close(self) -> None:
        if self._d is not None or self._head:
            raise TruncatedArchive("zstd stream ends inside a frame")


class ZstdCodec(Codec):
    """Zstandard frames (RFC 8878), each with a content size and a checksum."""

    name = "zstd"
    suffix = ".tar.zst"
    default_level = 3
    stored_frame = (9, 3, _RAW_BLOCK_MAX)

    def __init__(self, level: int | None = None) -> None:
        super().__init__(level)
        self._local = threading.local()

    def compress(self, chunk: bytes) -> bytes:
        cctx: zstandard.ZstdCompressor | None = getattr(self._local, "cctx", None)
        if cctx is None:  # a compressor is not safe for concurrent use: one per thread
            cctx = zstandard.ZstdCompressor(level=self.level, write_checksum=True)
            self._local.cctx = cctx
        return cctx.compress(chunk)

    def stored(self, data: bytes) -> bytes:
        if len(data) > 0xFFFFFFFF:
            raise ValueError("a stored zstd frame holds at most 4 GiB")
        parts = [_ZSTD_MAGIC, struct.pack("<BI", _RAW_FHD, len(data))]
        view = memoryview(data)
        starts = range(0, len(data), _RAW_BLOCK_MAX) if data else range(1)
        for start in starts:
            block = view[start : start + _RAW_BLOCK_MAX]
            last = start + _RAW_BLOCK_MAX >= len(data)
            # Block_Header: Last_Block (bit 0), Block_Type 0 = Raw (bits 1-2), Block_Size
            parts.append((int(last) | len(block) << 3).to_bytes(3, "little"))
            parts.append(bytes(block))
        return b"".join(parts)

    @staticmethod
    def stored_length(n: int) -> int:
        blocks = max(1, -(-n // _RAW_BLOCK_MAX))
        return 4 + 1 + 4 + 3 * blocks + n

    @classmethod
    def sniff(cls, head: bytes) -> bool:
        return head.startswith(_ZSTD_MAGIC)

    def decompressor(self, max_output: int) -> Decompressor:
        return _ZstdDecompressor(max_output)


# ----------------------------------------------------------------- registry

CODECS: dict[str, type[Codec]] = {c.name: c for c in (GzipCodec, ZstdCodec, NoCodec)}
DEFAULT_CODEC = "gzip"


def get_codec(name: str, level: int | None = None) -> Codec:
    """The codec called ``name`` (``gzip``, ``zstd``, ``none``); UsageError if unknown."""
    try:
        return CODECS[name](level)
    except (KeyError, TypeError):  # TypeError: an unhashable name
        raise UsageError(f"unknown codec {name!r}; known: {', '.join(CODECS)}") from None


def codec_for_key(key: str) -> Codec | None:
    """The codec an object name's suffix implies, or None."""
    for cls in CODECS.values():
        if key.endswith(cls.suffix):
            return cls()
    return None


def detect(head: bytes) -> Codec:
    """The codec of an archive whose first bytes are ``head`` (at least 263 for ``none``).

    Raises CorruptArchive if no codec recognises it.
    """
    for cls in CODECS.values():
        if cls.sniff(head):
            return cls()
    raise CorruptArchive("not a gzip, zstd or tar stream")
