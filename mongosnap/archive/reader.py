"""A streaming reader for untrusted archives: compressed chunks in, tar members out.

    async with contextlib.aclosing(read_archive(storage.read(key))) as members:
        async for member in members:
            async for chunk in member.chunks():
                ...

Reads mongosnap archives, legacy ``tar -czf`` archives and single member
ranges (``require_end=False``). Everything is bounded: decompressed output in
total and per call, member sizes, long-name and PAX records. Only regular
files are yielded; directories are skipped; links, devices, FIFOs and other
types raise UnsafeArchive. Names go through validate_member_name.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterator
from dataclasses import dataclass, field

from .._errors import ArchiveError, CorruptArchive, TruncatedArchive, UnsafeArchive
from ..codecs import PIECE, Codec, Decompressor, GzipCodec, detect
from .names import validate_member_name
from .tar import BLOCK

MAX_MEMBER_SIZE = 1 << 40
MAX_TOTAL_SIZE = 1 << 42
MAX_RECORD = 1 << 20
"""Largest GNU long-name or PAX record accepted."""

_ZERO_BLOCK = bytes(BLOCK)
_SNIFF = 263  # bytes that identify a plain tar (the ustar magic ends there)
_REGULAR = (b"0", b"\0", b"7")
_REFUSED = {b"1": "hard link", b"2": "symbolic link", b"3": "character device"}
_REFUSED |= {b"4": "block device", b"6": "FIFO"}


class _Plain:
    """The decompressed byte stream, pulled one bounded piece at a time."""

    def __init__(self, source: AsyncIterable[bytes], codec: Codec | None, max_total: int) -> None:
        self._source = source.__aiter__()
        self._codec = codec
        self._max_total = max_total
        self._decoder: Decompressor | None = None
        self._pieces: Iterator[bytes] = iter(())
        self._buffer = b""
        self._pos = 0
        self._eof = False

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (at least one unless the stream has ended)."""
        if self._pos == len(self._buffer) and not await self._fill():
            return b""
        out = self._buffer[self._pos : self._pos + n]
        self._pos += len(out)
        return out

    async def read_exact(self, n: int, what: str) -> bytes:
        parts, missing = [], n
        while missing:
            part = await self.read(missing)
            if not part:
                raise TruncatedArchive(f"archive ends inside {what}")
            parts.append(part)
            missing -= len(part)
        return b"".join(parts)

    async def skip(self, n: int, what: str) -> None:
        while n:
            part = await self.read(min(n, PIECE))
            if not part:
                raise TruncatedArchive(f"archive ends inside {what}")
            n -= len(part)

    async def _fill(self) -> bool:
        while True:
            piece = next(self._pieces, None)
            if piece is not None:
                if piece:
                    self._buffer, self._pos = piece, 0
                    return True
                continue
            if self._eof:
                return False
            chunk = await self._next_chunk()
            if chunk is None:
                self._eof = True
                if self._decoder is not None:
                    self._decoder.close()
                return False
            assert self._decoder is not None
            self._pieces = self._decoder.feed(chunk)

    async def _next_chunk(self) -> bytes | None:
        try:
            chunk = await self._source.__anext__()
        except StopAsyncIteration:
            return None
        if self._decoder is None:
            while self._codec is None and len(chunk) < _SNIFF:
                try:
                    chunk += await self._source.__anext__()
                except StopAsyncIteration:
                    break
            try:
                codec = self._codec or detect(chunk)
            except CorruptArchive:
                if len(chunk) < _SNIFF:  # a plain tar header would have been longer
                    raise TruncatedArchive("archive shorter than a tar header") from None
                raise
            self._decoder = codec.decompressor(self._max_total)
        return chunk


@dataclass
class TarMember:
    """A regular file in the archive. Read its body before asking for the next member."""

    name: str
    size: int
    typeflag: str
    mtime: int
    _plain: _Plain = field(repr=False)
    _remaining: int = field(repr=False, default=0)
    _closed: bool = field(repr=False, default=False)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, in pieces of at most 256 KiB."""
        while self._remaining:
            if self._closed:
                raise RuntimeError(f"{self.name}: the reader has moved past this member")
            data = await self._plain.read(min(self._remaining, PIECE))
            if not data:
                raise TruncatedArchive(f"archive ends inside {self.name}")
            self._remaining -= len(data)
            yield data

    async def read(self, limit: int) -> bytes:
        """The whole body; UnsafeArchive if it is larger than ``limit``."""
        if self.size > limit:
            raise UnsafeArchive(f"{self.name} is {self.size} bytes, more than {limit}")
        return b"".join([chunk async for chunk in self.chunks()])


def member_body(
    member: TarMember, compressed: bool, max_output: int = MAX_TOTAL_SIZE
) -> AsyncIterator[bytes]:
    """A dump file's content: the member's body, gunzipped while it streams for
    a ``mongodump --gzip`` file (at most ``max_output`` bytes of it)."""
    return _gunzipped(member, max_output) if compressed else member.chunks()


async def read_body(member: TarMember, compressed: bool, limit: int) -> bytes:
    """A dump file's whole content; UnsafeArchive beyond ``limit`` bytes."""
    if not compressed:
        return await member.read(limit)
    if member.size > limit:
        raise UnsafeArchive(f"{member.name} is {member.size} bytes, more than {limit}")
    return b"".join([chunk async for chunk in member_body(member, True, limit)])


async def _gunzipped(member: TarMember, max_output: int) -> AsyncIterator[bytes]:
    decoder = GzipCodec().decompressor(max_output)
    try:
        async for chunk in member.chunks():
            for piece in decoder.feed(chunk):
                yield piece
        decoder.close()
    except ArchiveError as exc:  # the codec's message speaks of "the archive"
        raise type(exc)(f"{member.name}: {exc}") from exc


@dataclass
class _Header:
    name: bytes
    size: int
    mtime: int
    typeflag: bytes


async def read_archive(
    source: AsyncIterable[bytes],
    *,
    codec: Codec | None = None,
    max_member_size: int = MAX_MEMBER_SIZE,
    max_total_size: int = MAX_TOTAL_SIZE,
    require_end: bool = True,
) -> AsyncGenerator[TarMember, None]:
    """Yield the regular files of a compressed tar read from ``source``.

    ``codec`` None detects it from the magic bytes. With ``require_end`` the
    stream must close with the end-of-archive blocks (and only zeros after
    them); without, it may also stop cleanly between members (a ranged read).
    Raises UnsafeArchive, CorruptArchive or TruncatedArchive.
    """
    plain = _Plain(source, codec, max_total_size)
    long_name: bytes | None = None
    pax: dict[str, bytes] = {}
    while True:
        block = await plain.read(BLOCK)
        if not block:
            if require_end or long_name is not None or pax:
                raise TruncatedArchive("archive ends without its end-of-archive blocks")
            return
        if len(block) < BLOCK:
            block += await plain.read_exact(BLOCK - len(block), "a tar header")
        if block == _ZERO_BLOCK:
            await _finish(plain)
            return
        header = _parse_header(block)
        if header.typeflag in (b"L", b"K", b"x", b"g"):
            record = await _read_record(plain, header)
            if header.typeflag == b"L":
                long_name = record.split(b"\0", 1)[0]
            elif header.typeflag == b"x":
                pax = _parse_pax(record)
            continue
        raw_name = pax.get("path", long_name or header.name)
        name = _member_name(raw_name)
        size = _pax_size(pax["size"]) if "size" in pax else header.size
        long_name, pax = None, {}
        if header.typeflag in _REFUSED:
            raise UnsafeArchive(f"{name}: {_REFUSED[header.typeflag]} members are refused")
        if size > max_member_size:
            raise UnsafeArchive(f"{name} declares {size} bytes, more than {max_member_size}")
        if header.typeflag == b"5" or (header.typeflag == b"\0" and raw_name.endswith(b"/")):
            await plain.skip(size + (-size % BLOCK), name)
            continue
        if header.typeflag not in _REGULAR:
            raise UnsafeArchive(f"{name}: unsupported member type {header.typeflag!r}")
        member = TarMember(name, size, header.typeflag.decode(), header.mtime, plain, size)
        try:
            yield member
        finally:
            member._closed = True
        await plain.skip(member._remaining + (-size % BLOCK), name)


def _parse_header(block: bytes) -> _Header:
    stored = _number(block[148:156], "checksum")
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    signed = unsigned - 2 * sum(b for b in block[:148] + block[156:] if b > 127)
    if stored not in (unsigned, signed):
        raise CorruptArchive("tar header checksum mismatch")
    name = block[:100].split(b"\0", 1)[0]
    if block[257:263] == b"ustar\x00":  # POSIX ustar: a prefix field completes the name
        prefix = block[345:500].split(b"\0", 1)[0]
        name = prefix + b"/" + name if prefix else name
    size = _number(block[124:136], "size")
    return _Header(name, size, _number(block[136:148], "mtime"), block[156:157])


def _number(field_bytes: bytes, what: str) -> int:
    """An octal field, or a GNU base-256 one (first byte 0x80; negative refused)."""
    if field_bytes[0] == 0x80:
        return int.from_bytes(field_bytes[1:], "big")
    if field_bytes[0] & 0x80:
        raise CorruptArchive(f"tar header: negative {what}")
    text = field_bytes.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise CorruptArchive(f"tar header: {what} is not octal") from None


async def _read_record(plain: _Plain, header: _Header) -> bytes:
    if header.size > MAX_RECORD:
        raise UnsafeArchive(f"tar extension record of {header.size} bytes")
    data = await plain.read_exact(header.size, "a tar extension record")
    await plain.skip(-header.size % BLOCK, "a tar extension record")
    return data


def _parse_pax(record: bytes) -> dict[str, bytes]:
    """PAX ``<length> <key>=<value>\\n`` records; only path and size matter here."""
    out: dict[str, bytes] = {}
    pos = 0
    while pos < len(record):
        space = record.find(b" ", pos)
        digits = record[pos:space] if space > pos else b""
        if not digits.isdigit():
            raise CorruptArchive("malformed PAX record")
        length = int(digits)
        if length <= space - pos or pos + length > len(record):
            raise CorruptArchive("malformed PAX record")
        line = record[space + 1 : pos + length]
        key, sep, value = line.partition(b"=")
        if not sep or not line.endswith(b"\n"):
            raise CorruptArchive("malformed PAX record")
        if key in (b"path", b"size"):
            out[key.decode()] = value[:-1]
        pos += length
    return out


def _pax_size(value: bytes) -> int:
    if not value.isdigit():
        raise CorruptArchive("PAX size is not a decimal number")
    return int(value)


def _member_name(raw: bytes) -> str:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafeArchive(f"member name is not UTF-8: {raw[:100]!r}") from None
    return validate_member_name(name)


async def _finish(plain: _Plain) -> None:
    """After a first zero block: a second one, then nothing but zeros."""
    second = await plain.read_exact(BLOCK, "the end-of-archive blocks")
    if second != _ZERO_BLOCK:
        raise CorruptArchive("a lone zero block inside the archive")
    while data := await plain.read(PIECE):
        if data.count(0) != len(data):
            raise CorruptArchive("data after the end-of-archive blocks")
