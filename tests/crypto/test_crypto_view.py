"""DecryptedView: ranged plaintext reads cost one ranged ciphertext read."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mongosnap import DecryptionFailed, NoIdentity, ObjectNotFound
from mongosnap.crypto import DecryptedView, X25519Identity, encrypt, stream
from mongosnap.storage import MemoryStorage, open_storage
from mongosnap.storage.base import Storage

CHUNK, SEALED = stream.CHUNK, stream.SEALED
IDENTITY = X25519Identity.generate()


class CountingReads(MemoryStorage):
    """A MemoryStorage that records every ranged read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[int, int | None]] = []

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:  # type: ignore[override]
        self.reads.append((start, end))
        async for piece in super().read(key, start, end):
            yield piece


async def _plain(view: Storage, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([piece async for piece in view.read(key, start, end)])


async def test_ranged_reads_fetch_only_their_chunks() -> None:
    inner = CountingReads()
    plaintext = os.urandom(5 * CHUNK + 1234)
    await inner.put("k", encrypt(plaintext, [IDENTITY.recipient]))
    view = DecryptedView(inner, [IDENTITY])
    assert (await view.stat("k")).size == len(plaintext)
    opened = await view.header("k")
    inner.reads.clear()
    for start, end in [(0, 1), (CHUNK - 1, CHUNK + 1), (3 * CHUNK + 5, 5 * CHUNK + 1234), (7, 7)]:
        assert await _plain(view, "k", start, end) == plaintext[start:end]
    assert await _plain(view, "k") == plaintext
    assert await _plain(view, "k", 5 * CHUNK, 10**9) == plaintext[5 * CHUNK :]
    p = opened.prefix_length
    assert inner.reads == [
        (p, p + SEALED),
        (p, p + 2 * SEALED),
        (p + 3 * SEALED, opened.stored_size),
        (p, opened.stored_size),
        (p + 5 * SEALED, opened.stored_size),
    ]  # one read per range, the header only once, and none for an empty range


async def test_a_long_header_is_read_in_growing_probes(tmp_path: Path) -> None:
    storage = open_storage(tmp_path)
    many = [X25519Identity.generate().recipient for _ in range(60)]  # about 9 KiB of header
    await storage.put("k", encrypt(b"payload", [*many, IDENTITY.recipient]))
    view = DecryptedView(storage, [IDENTITY])
    assert (await view.header("k")).prefix_length > 4096
    assert await view.read_bytes("k", limit=100) == b"payload"


async def test_an_empty_plaintext_authenticates_and_yields_nothing() -> None:
    inner = MemoryStorage()
    await inner.put("k", encrypt(b"", [IDENTITY.recipient]))
    assert await _plain(DecryptedView(inner, [IDENTITY]), "k") == b""


async def test_a_truncated_object_never_yields_a_short_plaintext() -> None:
    plaintext = os.urandom(3 * CHUNK)
    data = encrypt(plaintext, [IDENTITY.recipient])
    inner = MemoryStorage()
    await inner.put("cut-at-chunk", data[:-SEALED])  # a whole chunk gone: sizes still legal
    await inner.put("cut-inside", data[:-1000])
    view = DecryptedView(inner, [IDENTITY])
    for key in ["cut-at-chunk", "cut-inside"]:
        with pytest.raises(DecryptionFailed):
            await _plain(view, key)
    # reading only the first chunk of the cut object still authenticates it
    assert await _plain(view, "cut-inside", 0, 10) == plaintext[:10]


async def test_a_tampered_chunk_fails_only_the_ranges_that_hold_it() -> None:
    plaintext = os.urandom(3 * CHUNK)
    data = bytearray(encrypt(plaintext, [IDENTITY.recipient]))
    prefix = len(data) - stream.cipher_size(len(plaintext))
    data[prefix + SEALED + 100] ^= 1  # inside chunk 1
    inner = MemoryStorage()
    await inner.put("k", bytes(data))
    view = DecryptedView(inner, [IDENTITY])
    assert await _plain(view, "k", 0, CHUNK) == plaintext[:CHUNK]
    assert await _plain(view, "k", 2 * CHUNK) == plaintext[2 * CHUNK :]
    with pytest.raises(DecryptionFailed):
        await _plain(view, "k", CHUNK - 1, CHUNK + 1)


async def test_wrong_or_no_identity_and_missing_object() -> None:
    inner = MemoryStorage()
    await inner.put("k", encrypt(b"x", [IDENTITY.recipient]))
    with pytest.raises(NoIdentity):
        await _plain(DecryptedView(inner, [X25519Identity.generate()]), "k")
    with pytest.raises(NoIdentity):
        await DecryptedView(inner, []).stat("k")
    with pytest.raises(ObjectNotFound):
        await _plain(DecryptedView(inner, [IDENTITY]), "absent")


async def test_a_plaintext_object_is_refused() -> None:
    inner = MemoryStorage()
    await inner.put("k", b"\x1f\x8b" + os.urandom(5000))
    with pytest.raises(DecryptionFailed, match="not an age"):
        await DecryptedView(inner, [IDENTITY]).header("k")


async def test_concurrent_readers_share_one_header_read() -> None:
    inner = CountingReads()
    plaintext = os.urandom(4 * CHUNK)
    await inner.put("k", encrypt(plaintext, [IDENTITY.recipient]))
    view = DecryptedView(inner, [IDENTITY])
    ranges = [(i * 1000, i * 1000 + 70_000) for i in range(12)]
    got = await asyncio.gather(*(_plain(view, "k", s, e) for s, e in ranges))
    assert got == [plaintext[s:e] for s, e in ranges]
    assert [r for r in inner.reads if r[0] == 0] == [(0, 4096)]


async def test_a_failed_open_is_not_cached() -> None:
    inner = MemoryStorage()
    view = DecryptedView(inner, [IDENTITY])
    with pytest.raises(ObjectNotFound):
        await view.header("k")
    await inner.put("k", encrypt(b"late", [IDENTITY.recipient]))
    assert await _plain(view, "k") == b"late"
