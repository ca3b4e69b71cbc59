"""EncryptingWriter: plaintext offsets, reserve/fill across chunks, bounded memory."""

from __future__ import annotations

import asyncio
import os
import random

import pytest
from crypto_support import CountingWriter, reference

from mongosnap import BadKey, StorageError
from mongosnap.crypto import (
    DecryptedView,
    EncryptingWriter,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    decrypt,
    stream,
)
from mongosnap.storage import MemoryStorage
from mongosnap.storage.base import ObjectWriter, Storage

CHUNK = stream.CHUNK
IDENTITY = X25519Identity.generate()


async def _stored(storage: MemoryStorage, key: str) -> bytes:
    return await storage.read_bytes(key, limit=1 << 30)


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 5])
@pytest.mark.parametrize("piece", [1000, CHUNK, 1 << 20])
async def test_writes_match_a_file_encrypted_in_one_go(size: int, piece: int) -> None:
    storage = MemoryStorage()
    plaintext = os.urandom(size)
    writer = EncryptingWriter(storage.open_writer("k"), [IDENTITY.recipient])
    for at in range(0, size, piece):
        await writer.write(plaintext[at : at + piece])
        assert writer.position == min(at + piece, size)
    info = await writer.commit()
    data = await _stored(storage, "k")
    assert info.size == len(data) == writer.prefix_length + stream.cipher_size(size)
    assert data == reference(data, [IDENTITY], plaintext)


# (offset, length) of reservations: at a chunk's start and end, across one or
# two boundaries, in the final (held) chunk, and one filled only at the end.
RESERVATIONS = [
    (0, 10),
    (CHUNK - 10, 10),
    (2 * CHUNK - 3, 7),
    (3 * CHUNK, 512),
    (4 * CHUNK - 100, CHUNK + 200),
    (6 * CHUNK + 17, 40),
]
TOTAL = 6 * CHUNK + 100


@pytest.mark.parametrize("seed", range(6))
async def test_reserve_and_fill_at_chunk_boundaries(seed: int) -> None:
    rng = random.Random(seed)
    plaintext = bytearray(os.urandom(TOTAL))
    storage = MemoryStorage()
    writer = EncryptingWriter(storage.open_writer("k"), [IDENTITY.recipient])
    pending: list[tuple[int, int]] = []
    at = 0
    for offset, length in RESERVATIONS:
        while at < offset:  # plaintext up to the reservation, in random pieces
            step = min(offset - at, rng.randint(1, 3 * CHUNK))
            await writer.write(bytes(plaintext[at : at + step]))
            at += step
        assert await writer.reserve(b"\0" * length) == offset
        at += length
        pending.append((offset, length))
        if rng.random() < 0.5:  # fill some right away, others later, out of order
            await _fill_one(writer, plaintext, pending, rng)
    await writer.write(bytes(plaintext[at:]))
    while pending:
        await _fill_one(writer, plaintext, pending, rng)
    await writer.commit()
    data = await _stored(storage, "k")
    assert data == reference(data, [IDENTITY], bytes(plaintext))
    assert decrypt(data, [IDENTITY]) == plaintext


async def _fill_one(
    writer: EncryptingWriter,
    plaintext: bytearray,
    pending: list[tuple[int, int]],
    rng: random.Random,
) -> None:
    offset, length = pending.pop(rng.randrange(len(pending)))
    await writer.fill(offset, bytes(plaintext[offset : offset + length]))


async def test_misuse_aborts_the_inner_writer() -> None:
    storage = MemoryStorage()
    writer = EncryptingWriter(storage.open_writer("k"), [IDENTITY.recipient])
    offset = await writer.reserve(b"\0" * 8)
    await writer.write(os.urandom(3 * CHUNK))
    with pytest.raises(StorageError):
        await writer.fill(offset, b"short")
    assert writer.discarded is True
    assert [u async for u in storage.uploads()] == []
    with pytest.raises(StorageError):
        await writer.write(b"more")


async def test_commit_with_an_unfilled_reservation_stores_nothing() -> None:
    storage = MemoryStorage()
    writer = EncryptingWriter(storage.open_writer("k"), [IDENTITY.recipient])
    await writer.reserve(b"\0" * 8)
    with pytest.raises(StorageError, match="never filled"):
        await writer.commit()
    assert [o async for o in storage.list()] == []
    assert [u async for u in storage.uploads()] == []


class _FailingWriter(CountingWriter):
    async def write(self, data: bytes) -> None:
        if self.position > 2 * CHUNK:
            raise StorageError("disk full")
        await super().write(data)


async def test_an_inner_failure_aborts_and_propagates() -> None:
    inner = _FailingWriter()
    writer = EncryptingWriter(inner, [IDENTITY.recipient])
    with pytest.raises(StorageError, match="disk full"):
        for _ in range(10):
            await writer.write(os.urandom(CHUNK))
    assert inner.discarded is True and writer.discarded is True


async def test_leaving_the_block_without_commit_aborts() -> None:
    storage = MemoryStorage()
    async with EncryptingWriter(storage.open_writer("k"), [IDENTITY.recipient]) as writer:
        await writer.write(b"x" * 100)
    assert writer.discarded is True
    assert [o async for o in storage.list()] == []


@pytest.mark.slow
async def test_memory_stays_bounded_through_128_mib() -> None:
    """1 MiB writes, a reservation every 8 MiB filled 2 MiB later: the writer
    holds the open chunk plus the few chunks awaiting a fill, whatever the size."""
    inner = CountingWriter()
    writer = EncryptingWriter(inner, [IDENTITY.recipient])
    piece = os.urandom(1 << 20)
    open_reservation: int | None = None
    peak = 0
    for mib in range(128):
        if mib % 8 == 0:
            open_reservation = await writer.reserve(b"\0" * 700)
        if mib % 8 == 2 and open_reservation is not None:
            await writer.fill(open_reservation, b"h" * 700)
            open_reservation = None
        await writer.write(piece)
        peak = max(peak, writer.buffered)
    await writer.commit()
    assert inner.committed and inner.filled == 16
    assert writer.position == 128 * (1 << 20) + 16 * 700
    assert inner.position == writer.prefix_length + stream.cipher_size(writer.position)
    # reserved chunk(s) + the open chunk, never megabytes
    assert peak <= 3 * CHUNK, peak


def test_the_wrappers_honour_the_storage_protocols() -> None:
    storage = MemoryStorage()
    assert isinstance(
        EncryptingWriter(storage.open_writer("k"), [IDENTITY.recipient]), ObjectWriter
    )
    assert isinstance(DecryptedView(storage, [IDENTITY]), Storage)
    with pytest.raises(BadKey):
        EncryptingWriter(storage.open_writer("k"), [])


def test_secrets_stay_out_of_reprs() -> None:
    for obj in [ScryptRecipient("hunter22"), ScryptIdentity("hunter22"), IDENTITY]:
        assert "hunter22" not in repr(obj) + str(obj)
        assert IDENTITY.export() not in repr(obj) + str(obj)


class _BlockingWriter(CountingWriter):
    """Blocks on its second write until released (an upload that hangs)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked = asyncio.Event()

    async def write(self, data: bytes) -> None:
        if self.position:
            self.blocked.set()
            await asyncio.Event().wait()
        await super().write(data)


async def test_cancelling_a_write_aborts_the_inner_writer() -> None:
    inner = _BlockingWriter()
    writer = EncryptingWriter(inner, [IDENTITY.recipient])

    async def produce() -> None:
        while True:
            await writer.write(bytes(CHUNK))

    task = asyncio.ensure_future(produce())
    await inner.blocked.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert inner.discarded is True and writer.discarded is True
    with pytest.raises(StorageError):
        await writer.write(b"x")
