"""Whole age files in memory: for small objects and for tests."""

from __future__ import annotations

from collections.abc import Sequence

from . import stream
from .header import encrypt_header, open_prefix
from .keys import Identity, Recipient


def encrypt(plaintext: bytes, recipients: Sequence[Recipient]) -> bytes:
    prefix, file_key = encrypt_header(recipients)
    cipher = stream.cipher(stream.payload_key(file_key, prefix[-16:]))
    count = stream.chunk_count(len(plaintext))
    sealed = (
        stream.seal(cipher, i, plaintext[i * stream.CHUNK : (i + 1) * stream.CHUNK], i == count - 1)
        for i in range(count)
    )
    return prefix + b"".join(sealed)


def decrypt(data: bytes, identities: Sequence[Identity]) -> bytes:
    """The plaintext of a whole age file; NoIdentity or DecryptionFailed."""
    prefix, payload_key = open_prefix(data, identities)
    size = stream.payload_size(len(data), prefix)
    cipher = stream.cipher(payload_key)
    count = stream.chunk_count(size)
    chunks = (
        stream.open_chunk(
            cipher,
            i,
            data[prefix + i * stream.SEALED : prefix + (i + 1) * stream.SEALED],
            i == count - 1,
        )
        for i in range(count)
    )
    return b"".join(chunks)
