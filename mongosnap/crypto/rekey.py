"""Change who can open an age file without re-encrypting it.

The file key stays; only the header's stanzas change (some dropped, new ones
wrapping the same file key added) and its MAC is computed anew. The nonce
and the payload after the header are kept byte for byte, so the new file is
``new header + old[header length:]``.

age hides whose an X25519 stanza is: one can be recognized, to drop it, only
by an identity that opens it. A KMS stanza names its key id, so it can be
dropped by that id.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from .._errors import BadKey, UsageError
from . import stream
from .header import NONCE_SIZE, Header, Stanza, b64decode, unwrap_file_key
from .keys import Identity, Recipient
from .kms import STANZA_TYPE as KMS_STANZA


@dataclass(frozen=True)
class Change:
    """What a rekey does to every header: stanzas to drop, recipients to add."""

    add: Sequence[Recipient] = ()
    drop_openers: Sequence[Identity] = ()
    """A stanza that one of these opens is dropped."""
    drop_kms: Collection[str] = ()
    """KMS stanzas naming one of these key ids are dropped."""

    def __repr__(self) -> str:
        return f"Change(add={len(self.add)}, drop={len(self.drop_openers) + len(self.drop_kms)})"


@dataclass(frozen=True)
class Rewrapped:
    header: bytes
    """The new header, up to the nonce."""
    old_length: int
    """The old header's length: the nonce and payload start there."""
    file_key: bytes
    stanzas: tuple[Stanza, ...]
    dropped: int

    def __repr__(self) -> str:
        return f"Rewrapped({len(self.stanzas)} stanzas, dropped={self.dropped})"


def rewrap(data: bytes, identities: Sequence[Identity], change: Change) -> Rewrapped:
    """The new header of the age file starting with data (its whole header).

    Raises IncompleteHeader (read more), NoIdentity, DecryptionFailed,
    BadKey (a passphrase file cannot have other recipients) or UsageError
    (no recipient would be left).
    """
    header, length = Header.parse(data)
    file_key = unwrap_file_key(header, identities)
    kept = [s for s in header.stanzas if not _dropped(s, change)]
    stanzas = kept + [r.wrap(file_key) for r in change.add]
    if any(s.type == "scrypt" for s in stanzas) and len(stanzas) > 1:
        raise BadKey("a passphrase-encrypted object cannot have other recipients")
    if not stanzas:
        raise UsageError("the change would leave no recipient: nobody could open it")
    new = Header.build(stanzas, file_key).to_bytes()
    return Rewrapped(new, length, file_key, tuple(stanzas), len(header.stanzas) - len(kept))


def _dropped(stanza: Stanza, change: Change) -> bool:
    if stanza.type == KMS_STANZA and len(stanza.args) == 1:
        return b64decode(stanza.args[0]).decode("utf-8", "replace") in change.drop_kms
    return any(i.unwrap([stanza]) is not None for i in change.drop_openers)


def encrypt_with(plaintext: bytes, stanzas: Sequence[Stanza], file_key: bytes) -> bytes:
    """A whole new age file of plaintext under an existing file key and stanzas
    (a fresh nonce, so a fresh payload key)."""
    nonce = os.urandom(NONCE_SIZE)
    cipher = stream.cipher(stream.payload_key(file_key, nonce))
    count = stream.chunk_count(len(plaintext))
    sealed = b"".join(
        stream.seal(cipher, i, plaintext[i * stream.CHUNK : (i + 1) * stream.CHUNK], i == count - 1)
        for i in range(count)
    )
    return Header.build(stanzas, file_key).to_bytes() + nonce + sealed
