"""STREAM: chunk boundaries, sizes and the plaintext-to-ciphertext range map."""

from __future__ import annotations

import os

import pytest

from mongosnap import DecryptionFailed
from mongosnap.crypto import X25519Identity, decrypt, encrypt, stream
from mongosnap.crypto.header import open_prefix

CHUNK, SEALED = stream.CHUNK, stream.SEALED
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK]


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_at_chunk_boundaries(size: int) -> None:
    identity = X25519Identity.generate()
    plaintext = os.urandom(size)
    data = encrypt(plaintext, [identity.recipient])
    prefix = len(data) - stream.cipher_size(size)
    assert stream.payload_size(len(data), prefix) == size
    assert decrypt(data, [identity]) == plaintext


def test_cipher_size_has_one_tag_per_chunk_and_no_empty_final_chunk() -> None:
    assert stream.cipher_size(0) == 16
    assert stream.cipher_size(1) == 17
    assert stream.cipher_size(CHUNK) == SEALED
    assert stream.cipher_size(CHUNK + 1) == SEALED + 17
    assert stream.cipher_size(2 * CHUNK) == 2 * SEALED


@pytest.mark.parametrize("payload", [0, 15, SEALED + 16, SEALED + 5, 2 * SEALED + 16])
def test_impossible_payload_sizes_are_refused(payload: int) -> None:
    with pytest.raises(DecryptionFailed):
        stream.payload_size(100 + payload, 100)


def test_payload_size_inverts_cipher_size() -> None:
    for size in [*SIZES, 3 * CHUNK - 7, 10 * CHUNK]:
        assert stream.payload_size(77 + stream.cipher_size(size), 77) == size


def test_cipher_span_covers_whole_chunks() -> None:
    p = 200
    assert stream.cipher_span(p, 0, 1) == (p, p + SEALED, 0)
    assert stream.cipher_span(p, 0, CHUNK) == (p, p + SEALED, 0)
    assert stream.cipher_span(p, 0, CHUNK + 1) == (p, p + 2 * SEALED, 0)
    assert stream.cipher_span(p, CHUNK - 1, CHUNK + 1) == (p, p + 2 * SEALED, 0)
    assert stream.cipher_span(p, CHUNK, CHUNK + 1) == (p + SEALED, p + 2 * SEALED, 1)
    assert stream.cipher_span(p, 5 * CHUNK + 3, 5 * CHUNK + 3) == (
        p + 5 * SEALED,
        p + 5 * SEALED,
        5,
    )


def test_every_range_of_a_file_decrypts_from_its_span_alone() -> None:
    """Brute force over boundary offsets: the span's bytes alone give the slice."""
    identity = X25519Identity.generate()
    plaintext = os.urandom(3 * CHUNK + 100)
    data = encrypt(plaintext, [identity.recipient])
    prefix = len(data) - stream.cipher_size(len(plaintext))
    key = stream.cipher(open_prefix(data, [identity])[1])
    last = stream.chunk_count(len(plaintext)) - 1
    edges = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK, len(plaintext)]
    for start in edges:
        for end in edges:
            if end <= start:
                continue
            cstart, cend, first = stream.cipher_span(prefix, start, end)
            span = data[cstart:cend]
            out = b""
            for n in range(0, len(span), SEALED):
                index = first + n // SEALED
                out += stream.open_chunk(key, index, span[n : n + SEALED], index == last)
            skip = start - first * CHUNK
            assert out[skip : skip + end - start] == plaintext[start:end], (start, end)


def test_a_chunk_opens_only_at_its_index_and_with_its_last_flag() -> None:
    key = os.urandom(32)
    sealed = stream.seal(key, 3, b"x" * CHUNK, False)
    assert stream.open_chunk(key, 3, sealed, False) == b"x" * CHUNK
    for index, last in [(2, False), (4, False), (3, True)]:
        with pytest.raises(DecryptionFailed):
            stream.open_chunk(key, index, sealed, last)
    with pytest.raises(DecryptionFailed):
        stream.open_chunk(key, 3, sealed[:-1], False)


def test_only_the_last_chunk_may_be_short() -> None:
    with pytest.raises(ValueError):
        stream.seal(os.urandom(32), 0, b"short", False)
