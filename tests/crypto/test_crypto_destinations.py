"""EncryptingWriter and DecryptedView over every real backend: a local
directory, moto and versitygw (multipart uploads with reserved parts)."""

from __future__ import annotations

import random

import pytest
from age_cli import AgeCli
from helpers import Destination

from mongosnap import ObjectNotFound, StorageError
from mongosnap.crypto import DecryptedView, EncryptingWriter, X25519Identity

MIB = 1 << 20
SIZE = 12 * MIB + 999  # two parts of an S3 upload (8 MiB parts)
HEADER_AT = 8 * MIB - 40  # a reservation across a chunk boundary near the part boundary


@pytest.fixture(scope="module")
def plaintext() -> bytes:
    return random.Random(3).randbytes(SIZE)


async def test_encrypted_object_round_trips_with_ranged_reads(
    destination: Destination,
    plaintext: bytes,
    age_cli: AgeCli,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    identity = X25519Identity.generate()
    storage = destination.storage()
    try:
        writer = EncryptingWriter(storage.open_writer("db.tar.gz.age"), [identity.recipient])
        await writer.write(plaintext[:HEADER_AT])
        offset = await writer.reserve(bytes(100))
        await writer.write(plaintext[HEADER_AT + 100 :])
        await writer.fill(offset, plaintext[HEADER_AT : HEADER_AT + 100])  # after 4 MiB more
        await writer.commit()

        stored = await storage.read_bytes("db.tar.gz.age", limit=2 * SIZE)
        keyfile = tmp_path_factory.mktemp("key") / "key.txt"
        keyfile.write_text(identity.export() + "\n")
        assert age_cli.run("age", "-d", "-i", str(keyfile), data=stored) == plaintext

        view = DecryptedView(storage, [identity])
        assert (await view.stat("db.tar.gz.age")).size == SIZE
        for start, end in [(HEADER_AT - 5, HEADER_AT + 200), (0, 10), (SIZE - 70_000, SIZE)]:
            got = b"".join([p async for p in view.read("db.tar.gz.age", start, end)])
            assert got == plaintext[start:end]
    finally:
        await storage.aclose()


async def test_a_failed_encrypted_write_leaves_nothing(destination: Destination) -> None:
    storage = destination.storage()
    try:
        writer = EncryptingWriter(
            storage.open_writer("x.age"), [X25519Identity.generate().recipient]
        )
        await writer.write(random.randbytes(9 * MIB))  # a part is uploaded already
        await writer.reserve(bytes(10))
        with pytest.raises(StorageError, match="never filled"):
            await writer.commit()
        assert writer.discarded is True
        assert [o.key async for o in storage.list()] == []
        assert destination.pending_uploads() == []
        with pytest.raises(ObjectNotFound):
            await DecryptedView(storage, []).stat("x.age")
    finally:
        await storage.aclose()
