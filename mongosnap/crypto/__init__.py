"""Client-side encryption in the age v1 format (age-encryption.org/v1).

keys: recipients and identities (X25519, scrypt passphrases). header: the
age header and its MAC. stream: the chunked payload and its offset math.
writer: EncryptingWriter, an ObjectWriter that encrypts. storage:
DecryptedView, a Storage whose reads decrypt, ranged. file: whole files.
Every primitive comes from ``cryptography``.
"""

from __future__ import annotations

from .file import decrypt, encrypt
from .header import Header, Stanza, encrypt_header
from .keys import (
    Identity,
    Recipient,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    X25519Recipient,
    read_identities,
    read_recipients,
)
from .storage import DecryptedView
from .writer import EncryptingWriter

__all__ = [
    "DecryptedView",
    "EncryptingWriter",
    "Header",
    "Identity",
    "Recipient",
    "ScryptIdentity",
    "ScryptRecipient",
    "Stanza",
    "X25519Identity",
    "X25519Recipient",
    "decrypt",
    "encrypt",
    "encrypt_header",
    "read_identities",
    "read_recipients",
]
