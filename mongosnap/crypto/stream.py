"""STREAM, age's payload encryption: 64 KiB chunks, each sealed on its own.

Chunk ``i`` of the plaintext (bytes ``[i*CHUNK, (i+1)*CHUNK)``) is sealed with
ChaCha20-Poly1305 under the payload key, nonce = ``i`` as 11 big-endian bytes
plus a flag byte, 1 for the last chunk and 0 otherwise. Every chunk but the
last holds exactly CHUNK bytes; the last holds 1..CHUNK bytes, or none when
the whole plaintext is empty. A sealed chunk is 16 bytes (the tag) longer, so
plaintext byte ``p`` lies in the sealed chunk at
``prefix + (p // CHUNK) * SEALED`` of the file: any plaintext range maps to a
ciphertext range of whole chunks, each of which authenticates on its own.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .._errors import DecryptionFailed

CHUNK = 65536
TAG = 16
SEALED = CHUNK + TAG
_MAX_INDEX = 1 << 88

Key = bytes | ChaCha20Poly1305
"""A payload key, raw or already made a cipher (cheaper when reused)."""


def payload_key(file_key: bytes, nonce: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, nonce, b"payload").derive(file_key)


def cipher(key: Key) -> ChaCha20Poly1305:
    return key if isinstance(key, ChaCha20Poly1305) else ChaCha20Poly1305(key)


def _nonce(index: int, last: bool) -> bytes:
    if not 0 <= index < _MAX_INDEX:
        raise DecryptionFailed("STREAM chunk index out of range")
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def seal(key: Key, index: int, chunk: bytes, last: bool) -> bytes:
    if len(chunk) > CHUNK or (not last and len(chunk) != CHUNK):
        raise ValueError("only the last STREAM chunk may be shorter than 64 KiB")
    return cipher(key).encrypt(_nonce(index, last), chunk, None)


def open_chunk(key: Key, index: int, sealed: bytes | memoryview, last: bool) -> bytes:
    """The plaintext of one sealed chunk; DecryptionFailed unless it authenticates
    as chunk ``index`` (and as the last one, or not) and has a legal length."""
    if len(sealed) > SEALED or (not last and len(sealed) != SEALED):
        raise DecryptionFailed(f"encrypted chunk {index} has the wrong length: truncated?")
    if last and len(sealed) == TAG and index > 0:
        raise DecryptionFailed("the encrypted payload ends with an empty chunk")
    try:
        return cipher(key).decrypt(_nonce(index, last), sealed, None)
    except InvalidTag:
        raise DecryptionFailed(
            f"encrypted chunk {index} does not authenticate: tampered, truncated or a wrong file"
        ) from None


def chunk_count(plaintext_size: int) -> int:
    return max(1, -(-plaintext_size // CHUNK))


def cipher_size(plaintext_size: int) -> int:
    """Bytes of the sealed payload (without the prefix) of such a plaintext."""
    return plaintext_size + TAG * chunk_count(plaintext_size)


def payload_size(ciphertext_size: int, prefix: int) -> int:
    """The plaintext size of a file of ciphertext_size bytes whose prefix
    (header and nonce) is ``prefix`` bytes; DecryptionFailed if no plaintext
    seals to that size (a truncated or padded file)."""
    sealed = ciphertext_size - prefix
    full, rest = divmod(sealed, SEALED)
    if sealed < TAG or (0 < rest <= TAG and full > 0) or 0 < rest < TAG:
        raise DecryptionFailed("the encrypted object's size is impossible: truncated?")
    return sealed - TAG * (full + (1 if rest else 0))


def cipher_span(prefix_length: int, start: int, end: int) -> tuple[int, int, int]:
    """(cstart, cend, first_index): the file's range of the whole sealed chunks
    that hold plaintext [start, end), and the index of the first of them.

    ``cend`` assumes full chunks; clip it to the file's size for the last one.
    An empty range maps to an empty one.
    """
    first = start // CHUNK
    cstart = prefix_length + first * SEALED
    if end <= start:
        return cstart, cstart, first
    last = (end - 1) // CHUNK
    return cstart, prefix_length + (last + 1) * SEALED, first
