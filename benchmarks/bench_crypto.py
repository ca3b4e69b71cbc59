"""Encryption throughput: plaintext through EncryptingWriter, and back through
DecryptedView, with no storage cost.

    .venv/bin/python benchmarks/bench_crypto.py [--mib 200] [--rounds 3]

Encrypt: ``--mib`` MiB in 1 MiB writes into a sink that only counts bytes.
Decrypt: the same amount read back through DecryptedView from a MemoryStorage
(one ranged read of the whole object). The floor: sealing the same 64 KiB
chunks with ChaCha20-Poly1305 directly, the part no bookkeeping can remove.
Printed per step: MB/s (wall) and CPU seconds (process time), best of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mongosnap.crypto import DecryptedView, EncryptingWriter, X25519Identity, stream
from mongosnap.storage import MemoryStorage
from mongosnap.storage.base import ObjectInfo

MIB = 1 << 20


class NullWriter:
    """An ObjectWriter that keeps nothing but a count (and, optionally, the bytes)."""

    def __init__(self, keep: bool = False) -> None:
        self.position = 0
        self.kept: list[bytes] | None = [] if keep else None
        self.discarded: bool | None = None

    async def write(self, data: bytes) -> None:
        self.position += len(data)
        if self.kept is not None:
            self.kept.append(data)

    async def reserve(self, placeholder: bytes) -> int:
        raise NotImplementedError  # the benchmark never reserves

    async def fill(self, offset: int, data: bytes) -> None:
        raise NotImplementedError

    async def commit(self) -> ObjectInfo:
        return ObjectInfo("null", self.position)

    async def abort(self) -> None:
        self.discarded = True

    async def __aenter__(self) -> NullWriter:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.abort()


async def encrypt(piece: bytes, count: int, identity: X25519Identity, keep: bool) -> NullWriter:
    sink = NullWriter(keep)
    writer = EncryptingWriter(sink, [identity.recipient])
    for _ in range(count):
        await writer.write(piece)
    await writer.commit()
    return sink


async def decrypt(storage: MemoryStorage, identity: X25519Identity) -> int:
    view = DecryptedView(storage, [identity])
    total = 0
    async for plain in view.read("k"):
        total += len(plain)
    return total


def seal_only(piece: bytes, count: int) -> None:
    cipher = stream.cipher(os.urandom(32))
    index = 0
    for _ in range(count):
        for at in range(0, len(piece), stream.CHUNK):
            stream.seal(cipher, index, piece[at : at + stream.CHUNK], False)
            index += 1


def measure(label: str, size: int, rounds: int, step: Callable[[], object]) -> None:
    best_wall = best_cpu = float("inf")
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    print(
        f"{label:<8} {size / best_wall / 1e6:8.0f} MB/s  {best_cpu:6.2f} CPU-s  ({size // MIB} MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    piece, count = os.urandom(MIB), args.mib
    size = count * MIB
    identity = X25519Identity.generate()
    measure("seal", size, args.rounds, lambda: seal_only(piece, count))
    measure(
        "encrypt", size, args.rounds, lambda: asyncio.run(encrypt(piece, count, identity, False))
    )
    sink = asyncio.run(encrypt(piece, count, identity, keep=True))
    storage = MemoryStorage()
    assert sink.kept is not None
    asyncio.run(storage.put("k", b"".join(sink.kept)))
    sink.kept.clear()
    measure("decrypt", size, args.rounds, lambda: asyncio.run(decrypt(storage, identity)))


if __name__ == "__main__":
    main()
