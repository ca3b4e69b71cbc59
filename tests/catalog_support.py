"""Archives for the catalog, verify, prune and CLI tests: real backups at chosen
times, legacy re-packs made with GNU tar, corrupted copies and hostile tars."""

from __future__ import annotations

import io
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

from helpers import Destination

import mongosnap
from mongosnap.archive.manifest import Manifest, manifest_key
from mongosnap.codecs import get_codec
from mongosnap.pipelines import backup as backup_module
from mongosnap.storage import Storage

SIZES = {"users": 300, "orders": 2000, "empty": 0}


def at(day: int, hour: int = 3, minute: int = 0) -> datetime:
    """A fixed UTC time in January 2025."""
    return datetime(2025, 1, day, hour, minute, tzinfo=UTC)


@contextmanager
def clock(when: datetime) -> Iterator[None]:
    """Make the backup pipeline believe it starts at ``when`` (it names the archive),
    and the server agree: a backup of the past, not one from a host whose clock is
    off (tests/test_clock_skew.py runs those)."""

    class Fixed(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return when

    async def server_time(self: Any) -> datetime:
        return when

    with (
        mock.patch.object(backup_module, "datetime", Fixed),
        mock.patch.object(backup_module.Source, "server_time", server_time),
    ):
        yield


async def backup_at(
    when: datetime, uri: str, dest: Destination | Storage, database: str, codec: str = "gzip"
) -> str:
    """A real backup named for ``when``; returns the archive key."""
    target = dest if isinstance(dest, Storage) else dest.url
    s3 = None if isinstance(dest, Storage) else dest.s3
    with clock(when):
        result = await mongosnap.backup(uri, target, database=database, codec=codec, s3=s3)
    return result.archive_key


async def get(storage: Storage, key: str) -> bytes:
    return b"".join([chunk async for chunk in storage.read(key)])


async def replace(storage: Storage, key: str, data: bytes) -> None:
    """Overwrite an object (storages never overwrite: delete, then put)."""
    await storage.delete(key)
    await storage.put(key, data)


async def sidecar(storage: Storage, key: str) -> Manifest:
    return Manifest.from_json(await get(storage, manifest_key(key)))


def repack_legacy(archive: bytes, work: Path) -> bytes:
    """What the legacy script made: GNU tar extracts ``dump/`` and ``tar -czf`` packs it."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "in.tar.gz").write_bytes(archive)
    (work / "out").mkdir()
    subprocess.run(
        ["tar", "-xzf", str(work / "in.tar.gz"), "-C", str(work / "out"), "dump"], check=True
    )
    subprocess.run(
        ["tar", "-czf", str(work / "legacy.tar.gz"), "-C", str(work / "out"), "dump"], check=True
    )
    return (work / "legacy.tar.gz").read_bytes()


def rename_member(archive: bytes, codec: str, offset: int, new_name: str) -> bytes:
    """Rename the member whose stored header member starts at ``offset``, keeping
    every length (so the archive still matches its sidecar's size)."""
    c = get_codec(codec)
    length = c.stored_length(512)
    header = _unstore(archive[offset : offset + length], codec)
    info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
    info.name = new_name
    stored = c.stored(info.tobuf(tarfile.GNU_FORMAT))
    assert len(stored) == length
    return archive[:offset] + stored + archive[offset + length :]


def replace_stored(archive: bytes, codec: str, offset: int, body: bytes) -> bytes:
    """Replace a stored member (at ``offset``) with one holding ``body`` of the same length."""
    c = get_codec(codec)
    length = c.stored_length(len(body))
    return archive[:offset] + c.stored(body) + archive[offset + length :]


def _unstore(member: bytes, codec: str) -> bytes:
    if codec == "gzip":
        import gzip

        return gzip.decompress(member)
    if codec == "zstd":
        import zstandard

        return bytes(zstandard.ZstdDecompressor().decompress(member))
    return member


# ------------------------------------------------------------------ hostile

HOSTILE = ("dotdot", "absolute", "symlink", "absurd-size", "bson-2gib")


def hostile_archive(kind: str) -> bytes:
    """A gzip tar that a careless extractor would regret, built with tarfile."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        _add(tar, "dump/db/ok.metadata.json", b'{"indexes":[],"collectionName":"ok"}')
        if kind == "dotdot":
            _add(tar, "dump/../../x", b"escaped")
        elif kind == "absolute":
            _add(tar, "/etc/passwd", b"root::0:0::/:/bin/sh\n")
        elif kind == "symlink":
            link = tarfile.TarInfo("dump/db/link.bson")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
            tar.addfile(link)
        elif kind == "absurd-size":
            return _absurd_size()
        elif kind == "bson-2gib":
            doc = (2**31 - 1).to_bytes(4, "little") + b"\x00" * 60
            _add(tar, "dump/db/ok.bson", doc)
        else:
            raise ValueError(kind)
    return out.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _absurd_size() -> bytes:
    """A member whose header declares 2**60 bytes (base-256 size field), then nothing."""
    import gzip

    info = tarfile.TarInfo("dump/db/huge.bson")
    info.size = 1
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[124:136] = b"\x80" + (2**60).to_bytes(11, "big")
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}\0 ".encode()
    return gzip.compress(bytes(header) + bytes(1024))
