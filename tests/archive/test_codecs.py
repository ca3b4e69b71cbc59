"""Codecs: independent members, fixed-length stored members, bounded streaming decoding."""

from __future__ import annotations

import gzip
import os
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
import zstandard

from mongosnap import CorruptArchive, TruncatedArchive, UnsafeArchive, UsageError
from mongosnap.codecs import CODECS, PIECE, codec_for_key, detect, get_codec

SIZES = [0, 1, 511, 512, 1536, 65534, 65535, 65536, 131071, 131072, 131073, 300_000]


def decode(name: str, data: bytes, step: int = 1 << 20, limit: int = 1 << 32) -> bytes:
    decoder = get_codec(name).decompressor(limit)
    out = bytearray()
    for i in range(0, len(data), step):
        for piece in decoder.feed(data[i : i + step]):
            assert len(piece) <= PIECE
            out += piece
    decoder.close()
    return bytes(out)


@pytest.mark.parametrize("name", list(CODECS))
@pytest.mark.parametrize("size", SIZES)
def test_stored_length_depends_only_on_the_input_length(name: str, size: int) -> None:
    codec = get_codec(name)
    for data in (bytes(size), os.urandom(size), b"\xff" * size):
        stored = codec.stored(data)
        assert len(stored) == codec.stored_length(size)
        assert decode(name, stored) == data


@pytest.mark.parametrize("size", SIZES)
def test_stored_members_are_read_by_the_reference_tools(size: int) -> None:
    data = os.urandom(size)
    assert gzip.decompress(get_codec("gzip").stored(data)) == data
    frame = get_codec("zstd").stored(data)
    assert zstandard.ZstdDecompressor().decompress(frame) == data
    cli = subprocess.run(["zstd", "-dc"], input=frame, capture_output=True, check=True)
    assert cli.stdout == data


def test_zlib_level_0_is_not_a_fixed_length_on_its_own() -> None:
    """Why gzip stored members are built by hand: zlib's level 0 splits blocks its own way."""
    data = os.urandom(200_000)
    obj = zlib.compressobj(0, zlib.DEFLATED, 31)
    by_zlib = obj.compress(data) + obj.flush()
    assert gzip.decompress(by_zlib) == data
    # the hand-built member has a documented length: 10 + 5 per 65535-byte block + n + 8
    assert get_codec("gzip").stored_length(200_000) == 10 + 5 * 4 + 200_000 + 8


@pytest.mark.parametrize("name", ["gzip", "zstd"])
def test_members_concatenate_and_decode_in_any_feed_size(name: str) -> None:
    codec = get_codec(name)
    parts = [b"head", os.urandom(70_000), b"z" * 3_000_000, b"", b"tail"]
    stream = b"".join(
        codec.stored(p) if i % 2 == 0 else codec.compress(p) for i, p in enumerate(parts)
    )
    for step in (1, 13, 4096, len(stream)):
        assert decode(name, stream, step) == b"".join(parts)


def test_members_are_read_by_gzip_and_zstd_tools() -> None:
    data = os.urandom(1000) + b"a" * 100_000
    stream = b"".join(
        get_codec("gzip").compress(data[i : i + 7000]) for i in range(0, len(data), 7000)
    )
    assert (
        subprocess.run(["gzip", "-dc"], input=stream, capture_output=True, check=True).stdout
        == data
    )
    zst = b"".join(
        get_codec("zstd").compress(data[i : i + 7000]) for i in range(0, len(data), 7000)
    )
    assert (
        subprocess.run(["zstd", "-dc"], input=zst, capture_output=True, check=True).stdout == data
    )


def test_zstd_frames_carry_size_and_checksum() -> None:
    params = zstandard.get_frame_parameters(get_codec("zstd").compress(b"abc" * 1000))
    assert params.content_size == 3000 and params.has_checksum


@pytest.mark.parametrize("name", ["gzip", "zstd"])
def test_compress_is_safe_from_several_threads(name: str) -> None:
    codec = get_codec(name)
    chunks = [os.urandom(50_000) + bytes(50_000) for _ in range(16)]
    with ThreadPoolExecutor(4) as pool:
        members = list(pool.map(codec.compress, chunks))
    assert decode(name, b"".join(members)) == b"".join(chunks)


@pytest.mark.parametrize("name", ["gzip", "zstd"])
def test_output_bound_stops_a_bomb(name: str) -> None:
    bomb = get_codec(name).compress(bytes(64 << 20))
    assert len(bomb) < 1 << 20
    with pytest.raises(UnsafeArchive):
        decode(name, bomb, limit=10 << 20)


def test_zstd_frame_without_declared_size_is_decoded_in_bounded_pieces() -> None:
    cobj = zstandard.ZstdCompressor().compressobj()
    frame = cobj.compress(bytes(20 << 20)) + cobj.flush()
    assert zstandard.get_frame_parameters(frame).content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert decode("zstd", frame) == bytes(20 << 20)
    with pytest.raises(UnsafeArchive):
        decode("zstd", frame, limit=1 << 20)


@pytest.mark.parametrize("name", ["gzip", "zstd"])
def test_truncated_stream_is_reported(name: str) -> None:
    stream = get_codec(name).compress(os.urandom(10_000))
    with pytest.raises(TruncatedArchive):
        decode(name, stream[:-5])
    with pytest.raises(TruncatedArchive):
        decode(name, stream[:2])


@pytest.mark.parametrize("name", ["gzip", "zstd"])
def test_garbage_is_corrupt(name: str) -> None:
    stream = bytearray(get_codec(name).compress(os.urandom(10_000)))
    stream[len(stream) // 2] ^= 0xFF
    with pytest.raises(CorruptArchive):
        decode(name, bytes(stream))
    with pytest.raises(CorruptArchive):
        decode(name, get_codec(name).compress(b"ok") + b"garbage after the member!")


def test_detect_and_registry() -> None:
    assert detect(get_codec("gzip").compress(b"x")).name == "gzip"
    assert detect(get_codec("zstd").compress(b"x")).name == "zstd"
    plain_tar = bytes(257) + b"ustar\x0000" + bytes(300)
    assert detect(plain_tar).name == "none"
    with pytest.raises(CorruptArchive):
        detect(b"PK\x03\x04 a zip file")
    with pytest.raises(UsageError, match="unknown codec"):
        get_codec("lz4")
    assert get_codec("zstd", 9).level == 9
    assert get_codec("gzip").level == 2 and get_codec("zstd").level == 3
    found = codec_for_key("p/2024-01-01-00-00-00-mongodb-dump.tar.zst")
    assert found is not None and found.name == "zstd"
    assert codec_for_key("x.zip") is None


def test_zstd_frames_of_unknown_size_concatenate_with_sized_ones() -> None:
    def unsized(data: bytes) -> bytes:
        cobj = zstandard.ZstdCompressor().compressobj()
        return cobj.compress(data) + cobj.flush()

    parts = [os.urandom(5000) + bytes(3 << 20), b"abc", os.urandom(100_000), b"x" * 10]
    stream = unsized(parts[0]) + unsized(parts[1]) + get_codec("zstd").compress(parts[2])
    stream += unsized(parts[3])
    for step in (1, 100, 5000, len(stream)):
        assert decode("zstd", stream, step) == b"".join(parts)
