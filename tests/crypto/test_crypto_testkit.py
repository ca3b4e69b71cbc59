"""Every C2SP CCTV age vector (testkit/README.md) against mongosnap's decryptor."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest
from testkit_support import Vector, vectors

from mongosnap import DecryptionFailed, EncryptionError, NoIdentity
from mongosnap.crypto import DecryptedView, decrypt, stream
from mongosnap.crypto.header import NONCE_SIZE, Header
from mongosnap.storage import MemoryStorage

VECTORS = vectors()

ARMOR = "ASCII armor: mongosnap stores binary age files and never reads armored ones"
HYBRID = "mlkem768x25519 (post-quantum hybrid) identities are not implemented"
UNSUPPORTED = {
    **{
        name: ARMOR
        for name in [
            "armor_crlf",
            "armor_empty",
            "armor_empty_last_line",
            "armor_empty_line_begin",
            "armor_empty_line_end",
            "armor_eol_between_padding",
            "armor_full_last_line",
            "armor_garbage_encoded",
            "armor_garbage_leading",
            "armor_garbage_trailing",
            "armor_header_crlf",
            "armor_headers",
            "armor_hybrid",
            "armor_invalid_character_header",
            "armor_invalid_character_payload",
            "armor_long_line",
            "armor_lowercase",
            "armor_no_end_line",
            "armor_no_eol",
            "armor_no_match",
            "armor_no_padding",
            "armor_not_canonical",
            "armor_pgp_checksum",
            "armor_scrypt",
            "armor_short_line",
            "armor_whitespace_begin",
            "armor_whitespace_end",
            "armor_whitespace_eol",
            "armor_whitespace_last_line",
            "armor_whitespace_line_start",
            "armor_whitespace_outside",
            "armor_wrong_type",
            "armor_x25519",
        ]
    },
    **{
        name: HYBRID
        for name in [
            "hybrid",
            "hybrid_and_x25519",
            "hybrid_bad_tag",
            "hybrid_currupted_enc_mlkem",
            "hybrid_currupted_enc_x25519",
            "hybrid_extra_argument",
            "hybrid_grease",
            "hybrid_identity",
            "hybrid_long_file_key",
            "hybrid_long_share",
            "hybrid_low_order",
            "hybrid_multiple_recipients",
            "hybrid_no_match",
            "hybrid_not_canonical_body",
            "hybrid_not_canonical_enc",
            "hybrid_short_share",
            "hybrid_uppercase",
        ]
    },
}
SUPPORTED = [v for v in VECTORS if v.name not in UNSUPPORTED]


def test_the_unsupported_list_is_exactly_the_armored_and_post_quantum_vectors() -> None:
    """Nothing is skipped silently: a new vector is run unless it is named above."""
    needing = {v.name for v in VECTORS if v.armored or v.needs_pq}
    assert needing == set(UNSUPPORTED)
    assert (len(VECTORS), len(SUPPORTED), len(UNSUPPORTED)) == (143, 93, 50)
    assert Counter(UNSUPPORTED.values()) == {ARMOR: 33, HYBRID: 17}


def _outcome(vector: Vector) -> str:
    """Which step fails, in the vocabulary of the vectors' ``expect``."""
    try:
        header, length = Header.parse(vector.data)
    except DecryptionFailed:
        return "header failure"
    if len(vector.data) < length + NONCE_SIZE:
        return "header failure"  # the nonce is part of the header for the vectors
    try:
        keys = [k for k in (i.unwrap(header.stanzas) for i in vector.decryptors()) if k is not None]
    except DecryptionFailed:
        return "header failure"  # a malformed stanza of a type the identity reads
    if not keys:
        return "no match"
    try:
        header.verify(keys[0])
    except DecryptionFailed:
        return "HMAC failure"
    try:
        plaintext = decrypt(vector.data, vector.decryptors())
    except DecryptionFailed:
        return "payload failure"
    assert hashlib.sha256(plaintext).hexdigest() == vector.payload
    return "success"


@pytest.mark.parametrize("vector", SUPPORTED, ids=lambda v: v.name)
def test_vector(vector: Vector) -> None:
    assert _outcome(vector) == vector.expect
    expected = {"success": None, "no match": NoIdentity}.get(vector.expect, DecryptionFailed)
    if expected is None:
        decrypt(vector.data, vector.decryptors())
    else:
        with pytest.raises(expected):
            decrypt(vector.data, vector.decryptors())


@pytest.mark.parametrize("vector", SUPPORTED, ids=lambda v: v.name)
async def test_vector_through_the_ranged_reader(vector: Vector) -> None:
    """The streaming reader gives the same verdicts; on a payload failure it
    has released whole authenticated chunks only: the plaintext the vector's
    hash covers, or (when the object's size already betrays it) fewer chunks."""
    inner = MemoryStorage()
    await inner.put("k", vector.data)
    released = b""
    error: EncryptionError | None = None
    try:
        async for piece in DecryptedView(inner, vector.decryptors()).read("k"):
            released += piece
    except EncryptionError as exc:
        error = exc
    digest = hashlib.sha256(released).hexdigest()
    if vector.expect == "success":
        assert error is None and digest == vector.payload
    elif vector.expect == "no match":
        assert isinstance(error, NoIdentity)
    else:
        assert isinstance(error, DecryptionFailed) and not isinstance(error, NoIdentity)
        assert digest == vector.payload or len(released) % stream.CHUNK == 0
