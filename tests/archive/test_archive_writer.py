"""ArchiveWriter: archives that tarfile and GNU tar read, members readable alone by range."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest
from archive_support import MemorySink, build_archive, many_types_documents

from mongosnap.archive import ArchiveWriter, MemberRange
from mongosnap.archive import tar as tarbytes
from mongosnap.archive.names import MANIFEST_MEMBER
from mongosnap.codecs import Codec, get_codec

CODECS = ["gzip", "zstd", "none"]
TAR_FLAG = {"gzip": ["-z"], "zstd": ["--zstd"], "none": []}


def decompress(codec: Codec, data: bytes) -> bytes:
    decoder = codec.decompressor(1 << 34)
    out = b"".join(decoder.feed(data))
    decoder.close()
    return out


def sample_files() -> list[tuple[str, list[bytes]]]:
    docs = many_types_documents(200)
    return [
        ("dump/app/users.metadata.json", [b'{"indexes":[],"collectionName":"users"}']),
        ("dump/app/users.bson", docs),  # many small writes
        ("dump/app/empty.metadata.json", [b"{}"]),
        ("dump/app/empty.bson", []),
        ("dump/app/big.bson", [os.urandom(300_000), b"\x00" * 900_001, os.urandom(7)]),
        ("dump/app/" + "long-" * 40 + ".bson", [b"long name body"]),
        ("dump/app/caf%C3%A9%2Fbar.bson", [b"escaped"]),
    ]


@pytest.mark.parametrize("codec_name", CODECS)
@pytest.mark.parametrize("whole", [False, True])
async def test_tarfile_reads_every_member_byte_for_byte(codec_name: str, whole: bool) -> None:
    codec = get_codec(codec_name)
    built = await build_archive(codec, sample_files(), chunk_size=64 * 1024, whole=whole)
    plain = decompress(codec, built.archive)
    assert len(plain) == built.tar_bytes
    with tarfile.open(fileobj=io.BytesIO(plain), mode="r:") as archive:
        members = archive.getmembers()
        assert [m.name for m in members] == [*built.files, MANIFEST_MEMBER]
        for member in members:
            assert member.isreg() and member.mtime == 1_700_000_000
            handle = archive.extractfile(member)
            assert handle is not None
            expected = built.files.get(member.name, built.manifest)
            assert handle.read() == expected


@pytest.mark.parametrize("codec_name", CODECS)
async def test_gnu_tar_lists_and_extracts_identical_bytes(codec_name: str, tmp_path: Path) -> None:
    built = await build_archive(get_codec(codec_name), sample_files(), chunk_size=100_000)
    path = tmp_path / f"a{get_codec(codec_name).suffix}"
    path.write_bytes(built.archive)
    flag = TAR_FLAG[codec_name]
    listing = await asyncio.to_thread(
        subprocess.run, ["tar", *flag, "-tvf", str(path)], capture_output=True, text=True
    )
    assert listing.returncode == 0
    assert listing.stderr == ""
    lines = listing.stdout.splitlines()
    assert [line.split()[-1] for line in lines] == [*built.files, MANIFEST_MEMBER]
    assert [int(line.split()[2]) for line in lines[:-1]] == [len(b) for b in built.files.values()]
    out = tmp_path / "out"
    out.mkdir()
    command = ["tar", *flag, "-xf", str(path), "-C", str(out)]
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True)
    assert done.returncode == 0 and done.stderr == b""
    for name, body in built.files.items():
        assert (out / name).read_bytes() == body
    assert (out / MANIFEST_MEMBER).read_bytes() == built.manifest


@pytest.mark.parametrize("codec_name", CODECS)
async def test_each_range_decompresses_alone_to_its_tar_bytes(codec_name: str) -> None:
    codec = get_codec(codec_name)
    built = await build_archive(codec, sample_files(), chunk_size=50_000)
    plain = decompress(codec, built.archive)
    tar_offset = 0
    for rng in built.ranges:
        piece = decompress(codec, built.archive[rng.offset : rng.end])
        length = tarbytes.member_length(rng.name, rng.size)
        assert piece == plain[tar_offset : tar_offset + length]
        with tarfile.open(fileobj=io.BytesIO(piece + tarbytes.END_OF_ARCHIVE)) as alone:
            (member,) = alone.getmembers()
            assert member.name == rng.name and member.size == rng.size
        tar_offset += length
    assert plain[tar_offset:] == tarbytes.END_OF_ARCHIVE
    assert built.ranges[-1].end + codec.stored_length(1024) == len(built.archive)
    for before, after in zip(built.ranges, built.ranges[1:], strict=False):
        assert before.end == after.offset


@pytest.mark.parametrize("codec_name", ["gzip", "zstd"])
@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 4096, 70_000])
async def test_header_is_filled_with_the_exact_size(codec_name: str, size: int) -> None:
    codec = get_codec(codec_name)
    body = os.urandom(size)
    pieces = [body[i : i + 333] for i in range(0, size, 333)]
    built = await build_archive(codec, [("dump/d/c.bson", pieces)], chunk_size=1024)
    (rng, _) = built.ranges
    assert rng.size == size
    plain = decompress(codec, built.archive[rng.offset : rng.end])
    assert len(plain) == 512 + size + (-size % 512)
    assert tarfile.TarInfo.frombuf(plain[:512], "utf-8", "strict").size == size
    assert plain[512 : 512 + size] == body
    assert not built.sink.unfilled


async def test_plan_finish_predicts_the_tail() -> None:
    for codec_name in CODECS:
        codec = get_codec(codec_name)
        sink = MemorySink()
        writer = ArchiveWriter(sink, codec)
        await writer.add_file("dump/a/b.bson", b"x" * 1000)
        manifest = b"m" * 70_000  # more than one stored block
        member, totals = writer.plan_finish(len(manifest))
        assert await writer.finish(manifest) == member
        assert member == MemberRange(MANIFEST_MEMBER, member.offset, member.end, 70_000)
        assert totals.compressed_bytes == len(sink.data) == writer.compressed_bytes
        assert totals.tar_bytes == writer.tar_bytes == len(decompress(codec, bytes(sink.data)))


async def test_bson_bytes_pass_through_untouched() -> None:
    docs = many_types_documents(500)
    built = await build_archive(get_codec("gzip"), [("dump/t/all.bson", docs)], chunk_size=4096)
    plain = decompress(get_codec("gzip"), built.archive)
    with tarfile.open(fileobj=io.BytesIO(plain)) as archive:
        handle = archive.extractfile("dump/t/all.bson")
        assert handle is not None and handle.read() == b"".join(docs)


class _CountingCodec(Codec):
    """gzip, slowed down, counting how many compressions run at once."""

    name = "gzip"
    suffix = ".tar.gz"
    default_level = 1

    def __init__(self) -> None:
        super().__init__()
        self.inner = get_codec("gzip", 1)
        self.lock = threading.Lock()
        self.running = self.peak = self.calls = 0

    def compress(self, chunk: bytes) -> bytes:
        with self.lock:
            self.running += 1
            self.calls += 1
            self.peak = max(self.peak, self.running)
        time.sleep(0.01)
        try:
            return self.inner.compress(chunk)
        finally:
            with self.lock:
                self.running -= 1

    def stored(self, data: bytes) -> bytes:
        return self.inner.stored(data)

    @staticmethod
    def stored_length(n: int) -> int:
        return get_codec("gzip").stored_length(n)

    @classmethod
    def sniff(cls, head: bytes) -> bool:
        return False

    def decompressor(self, max_output: int):  # type: ignore[no-untyped-def]
        return self.inner.decompressor(max_output)


async def test_compression_uses_the_workers_in_parallel_and_in_order() -> None:
    codec = _CountingCodec()
    sink = MemorySink()
    writer = ArchiveWriter(sink, codec, chunk_size=4096, workers=2)
    body = os.urandom(4096 * 40)
    await writer.begin("dump/a/b.bson")
    await writer.write(body)
    await writer.end()
    await writer.finish(b"{}")
    assert codec.calls == 40 and codec.peak == 2
    plain = decompress(get_codec("gzip"), bytes(sink.data))
    assert plain[512 : 512 + len(body)] == body


async def test_cancellation_mid_write_does_not_hang() -> None:
    codec = _CountingCodec()
    sink = MemorySink(delay=0.005)
    writer = ArchiveWriter(sink, codec, chunk_size=1024, workers=2)

    async def produce() -> None:
        await writer.begin("dump/a/b.bson")
        while True:
            await writer.write(os.urandom(1024))

    task = asyncio.create_task(produce())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    with pytest.raises(RuntimeError, match="failed"):
        await writer.write(b"more")
    await asyncio.wait_for(writer.aclose(), 5)
    assert sink.unfilled  # the header was never filled: the caller aborts the sink


async def test_sink_error_fails_the_writer() -> None:
    class Broken(MemorySink):
        async def write(self, data: bytes) -> None:
            if self.position > 2000:
                raise OSError("disk full")
            await super().write(data)

    writer = ArchiveWriter(Broken(), get_codec("gzip"), chunk_size=1024)
    await writer.begin("dump/a/b.bson")
    with pytest.raises(OSError, match="disk full"):
        for _ in range(100):
            await writer.write(os.urandom(1024))
    with pytest.raises(RuntimeError):
        await writer.end()


async def test_misuse_is_refused() -> None:
    writer = ArchiveWriter(MemorySink(), get_codec("gzip"))
    with pytest.raises(RuntimeError):
        await writer.write(b"no member open")
    with pytest.raises(ValueError, match="canonical"):
        await writer.begin("../etc/passwd")
    async with ArchiveWriter(MemorySink(), get_codec("gzip")) as other:
        await other.begin("dump/a/b.bson")
        with pytest.raises(RuntimeError):
            await other.begin("dump/a/c.bson")
        with pytest.raises(RuntimeError):
            other.plan_finish(10)
