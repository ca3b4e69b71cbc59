"""The streaming reader: mongosnap and legacy archives in; hostile ones refused precisely."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import os
import subprocess
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import pytest
from archive_support import build_archive, many_types_documents

from mongosnap import CorruptArchive, TruncatedArchive, UnsafeArchive
from mongosnap.archive.names import MANIFEST_MEMBER
from mongosnap.archive.reader import TarMember, read_archive
from mongosnap.codecs import get_codec


async def chunks_of(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def read_all(data: bytes, size: int = 65536, **options: Any) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    async with contextlib.aclosing(read_archive(chunks_of(data, size), **options)) as members:
        async for member in members:
            out[member.name] = b"".join([c async for c in member.chunks()])
            assert len(out[member.name]) == member.size
    return out


def tar_bytes(
    entries: list[tuple[tarfile.TarInfo, bytes]], fmt: Literal[0, 1, 2] = tarfile.GNU_FORMAT
) -> bytes:
    """A plain tar built block by block, so hostile entries get through unaltered."""
    out = bytearray()
    for info, data in entries:
        out += info.tobuf(fmt, "utf-8", "surrogateescape")
        out += data + bytes(-len(data) % 512)
    return bytes(out + bytes(1024))


def entry(
    name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        info.linkname = "/etc/passwd"
    return info, data


FILES = [
    ("dump/app/users.metadata.json", [b'{"indexes":[]}']),
    ("dump/app/users.bson", many_types_documents(300)),
    ("dump/app/empty.bson", []),
    ("dump/app/" + "n" * 150 + ".bson", [os.urandom(70_000)]),
]


@pytest.mark.parametrize("codec_name", ["gzip", "zstd", "none"])
@pytest.mark.parametrize("feed", [1000, 1 << 20])
async def test_reads_back_what_the_writer_wrote(codec_name: str, feed: int) -> None:
    built = await build_archive(get_codec(codec_name), FILES, chunk_size=20_000)
    files = await read_all(built.archive, feed)
    assert files == {**built.files, MANIFEST_MEMBER: built.manifest}


async def test_one_member_range_reads_alone() -> None:
    built = await build_archive(get_codec("zstd"), FILES, chunk_size=20_000)
    meta, data = built.ranges[0], built.ranges[1]
    piece = built.archive[meta.offset : data.end]
    files = await read_all(piece, require_end=False)
    assert files == {meta.name: built.files[meta.name], data.name: built.files[data.name]}
    with pytest.raises(TruncatedArchive):
        await read_all(piece)


async def test_unread_bodies_are_skipped_and_stale_members_refused() -> None:
    built = await build_archive(get_codec("gzip"), FILES, chunk_size=20_000)
    seen: list[TarMember] = []
    async for member in read_archive(chunks_of(built.archive)):
        seen.append(member)
    assert [m.name for m in seen] == [*built.files, MANIFEST_MEMBER]
    with pytest.raises(RuntimeError):
        await seen[1].read(1 << 30)
    first = read_archive(chunks_of(built.archive))
    member = await anext(first)
    with pytest.raises(UnsafeArchive):
        await member.read(3)
    await first.aclose()


async def test_legacy_gnu_tar_archive(tmp_path: Path) -> None:
    dump = tmp_path / "dump" / "app"
    dump.mkdir(parents=True)
    (dump / "users.bson").write_bytes(b"".join(many_types_documents(20)))
    (dump / "users.metadata.json").write_text('{"options":{},"indexes":[]}')
    archive = tmp_path / "legacy.tar.gz"
    command = ["tar", "-czf", str(archive), "-C", str(tmp_path), "dump"]
    await asyncio.to_thread(subprocess.run, command, check=True)
    files = await read_all(archive.read_bytes(), 100)
    assert files == {
        "dump/app/users.bson": (dump / "users.bson").read_bytes(),
        "dump/app/users.metadata.json": (dump / "users.metadata.json").read_bytes(),
    }


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT])
async def test_pax_ustar_and_gnu_names(fmt: Literal[0, 1, 2]) -> None:
    long = "dump/" + "d" * 120 + "/" + "\u00e9" * 20 + ".bson"
    if fmt == tarfile.USTAR_FORMAT:
        long = "dump/" + "d" * 120 + "/" + "e" * 40 + ".bson"  # fits the ustar prefix
    data = tar_bytes([entry(long, b"body"), entry("dump/x", b"x" * 600)], fmt)
    assert await read_all(gzip.compress(data)) == {long: b"body", "dump/x": b"x" * 600}


@pytest.mark.parametrize(
    "name", ["../x", "/etc/passwd", "dump/../../x", "dump//x", "a\\b", "./../x"]
)
async def test_hostile_names_are_refused(name: str) -> None:
    with pytest.raises(UnsafeArchive):
        await read_all(gzip.compress(tar_bytes([entry(name, b"evil")])))


async def test_hostile_name_in_a_pax_record_is_refused() -> None:
    info, data = entry("dump/fine", b"evil")
    info.pax_headers = {"path": "../../evil"}
    with pytest.raises(UnsafeArchive):
        await read_all(tar_bytes([(info, data)], tarfile.PAX_FORMAT))


@pytest.mark.parametrize(
    "kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE]
)
async def test_links_devices_and_fifos_are_refused(kind: bytes) -> None:
    with pytest.raises(UnsafeArchive):
        await read_all(tar_bytes([entry("dump/app/x.bson", kind=kind)]))


async def test_directories_are_skipped_and_unknown_types_refused() -> None:
    data = tar_bytes([entry("dump/", kind=tarfile.DIRTYPE), entry("dump/a", b"1")])
    assert await read_all(data) == {"dump/a": b"1"}
    with pytest.raises(UnsafeArchive):
        await read_all(tar_bytes([entry("dump/s", kind=tarfile.GNUTYPE_SPARSE)]))


async def test_absurd_sizes_are_refused() -> None:
    info, _ = entry("dump/app/huge.bson")
    info.size = 1 << 45  # base-256 in a GNU header
    header = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "strict")
    with pytest.raises(UnsafeArchive):
        await read_all(gzip.compress(header + bytes(4096)))
    record = tarfile.TarInfo("././@LongLink")
    record.type = tarfile.GNUTYPE_LONGNAME
    record.size = 1 << 30  # a long-name record of 1 GiB
    with pytest.raises(UnsafeArchive):
        await read_all(record.tobuf(tarfile.GNU_FORMAT) + bytes(4096))


async def test_total_output_is_bounded() -> None:
    data = tar_bytes([entry("dump/zeros", bytes(10 << 20))])
    bomb = gzip.compress(data)
    assert len(bomb) < 100_000
    with pytest.raises(UnsafeArchive):
        await read_all(bomb, max_total_size=1 << 20)
    with pytest.raises(UnsafeArchive):
        await read_all(bomb, max_member_size=1 << 20)


@pytest.mark.parametrize("codec_name", ["gzip", "zstd", "none"])
async def test_every_truncation_is_reported(codec_name: str) -> None:
    built = await build_archive(get_codec(codec_name), FILES[:2], chunk_size=8192)
    size = len(built.archive)
    cuts = sorted({0, 1, 10, 511, 512, 600, size // 3, size // 2, size - 1024, size - 30, size - 1})
    for cut in cuts:
        with pytest.raises(TruncatedArchive):
            await read_all(built.archive[:cut], 4096)


async def test_garbage_is_corrupt() -> None:
    with pytest.raises(CorruptArchive):
        await read_all(os.urandom(10_000))
    with pytest.raises(CorruptArchive):
        await read_all(gzip.compress(os.urandom(10_000)))
    good = tar_bytes([entry("dump/a", b"1")])
    bad_checksum = bytearray(good)
    bad_checksum[0] ^= 1
    with pytest.raises(CorruptArchive):
        await read_all(bytes(bad_checksum))
    with pytest.raises(CorruptArchive):
        await read_all(good + b"trailing junk")
    lone_zero = bytes(512) + good
    with pytest.raises(CorruptArchive):
        await read_all(lone_zero)
    bad_size = bytearray(good)
    bad_size[124:136] = b"9999999999\0\0"
    bad_size[148:156] = b"        "
    bad_size[148:155] = f"{sum(bad_size[:512]):06o}\0".encode()
    with pytest.raises(CorruptArchive):
        await read_all(bytes(bad_size))


async def test_pure_tarfile_output_reads() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, body in (("dump/a/b.bson", b"\x05\0\0\0\0"), ("dump/a/b.metadata.json", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    assert await read_all(buffer.getvalue(), 7) == {
        "dump/a/b.bson": b"\x05\0\0\0\0",
        "dump/a/b.metadata.json": b"{}",
    }
