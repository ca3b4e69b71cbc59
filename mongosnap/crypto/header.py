"""The age v1 header: stanzas, the header MAC, and the prefix of a file.

A file is ``age-encryption.org/v1``, one stanza per recipient (``-> TYPE
ARGS``, then its body in base64 wrapped at 64 columns, ending with a line
shorter than 64, possibly empty), ``--- `` and the MAC, then a 16-byte nonce
and the STREAM payload (stream.py). Parsing is as strict as the spec asks:
a header that another implementation would read differently is refused.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .._errors import BadKey, DecryptionFailed, NoIdentity
from . import stream

if TYPE_CHECKING:
    from .keys import Identity, Recipient

VERSION_LINE = b"age-encryption.org/v1"
FILE_KEY_SIZE = 16
NONCE_SIZE = 16
COLUMNS = 64
MAX_STANZAS = 1024
"""More than any real file has; bounds the work a hostile header can cause."""

_ARG = re.compile(rb"[\x21-\x7e]+")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*")


class IncompleteHeader(DecryptionFailed):
    """The data ends inside the header or before the nonce: read more of it."""


@dataclass(frozen=True)
class Stanza:
    type: str
    args: tuple[str, ...]
    body: bytes

    def __repr__(self) -> str:  # a body is wrapped key material: keep it out of logs
        return f"Stanza({self.type!r}, {len(self.args)} args, {len(self.body)}-byte body)"

    def encode(self) -> bytes:
        line = b" ".join(s.encode("ascii") for s in ("->", self.type, *self.args))
        text = b64encode(self.body)
        rows = [text[i : i + COLUMNS] for i in range(0, len(text), COLUMNS)]
        if not rows or len(rows[-1]) == COLUMNS:
            rows.append(b"")  # the body always ends with a short line
        return b"\n".join([line, *rows]) + b"\n"


@dataclass(frozen=True)
class Header:
    stanzas: tuple[Stanza, ...]
    mac: bytes
    mac_input: bytes
    """The header text the MAC covers: up to and including ``---``."""

    def __repr__(self) -> str:
        return f"Header({[s.type for s in self.stanzas]})"

    @classmethod
    def build(cls, stanzas: Sequence[Stanza], file_key: bytes) -> Header:
        mac_input = VERSION_LINE + b"\n" + b"".join(s.encode() for s in stanzas) + b"---"
        return cls(tuple(stanzas), header_mac(file_key, mac_input), mac_input)

    def to_bytes(self) -> bytes:
        return self.mac_input + b" " + b64encode(self.mac) + b"\n"

    def verify(self, file_key: bytes) -> None:
        if not hmac.compare_digest(header_mac(file_key, self.mac_input), self.mac):
            raise DecryptionFailed("the header MAC does not match: the header was altered")

    @classmethod
    def parse(cls, data: bytes) -> tuple[Header, int]:
        """The header at the start of data and its length in bytes (up to the nonce).

        Raises IncompleteHeader if data ends inside it, DecryptionFailed if malformed.
        """
        lines = _Lines(data)
        if lines.next() != VERSION_LINE:
            raise DecryptionFailed("not an age-encryption.org/v1 file")
        stanzas: list[Stanza] = []
        while True:
            start = lines.offset
            line = lines.next()
            if line.startswith(b"-> "):
                if len(stanzas) == MAX_STANZAS:
                    raise DecryptionFailed("the age header has too many stanzas")
                stanzas.append(_parse_stanza(line, lines))
            elif line.startswith(b"--- "):
                if not stanzas:
                    raise DecryptionFailed("the age header has no recipient stanza")
                mac = b64decode(line[4:])
                if len(mac) != 32:
                    raise DecryptionFailed("the age header MAC is malformed")
                return cls(tuple(stanzas), mac, data[: start + 3]), lines.offset
            else:
                raise DecryptionFailed("the age header holds a malformed line")


class _Lines:
    """Lines of data ending in ``\\n``; IncompleteHeader past the end."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.offset = 0

    def next(self) -> bytes:
        end = self._data.find(b"\n", self.offset)
        if end < 0:
            # Garbage is refused now rather than read further in search of a header.
            seen = self._data[: len(VERSION_LINE)]
            if not VERSION_LINE.startswith(seen):
                raise DecryptionFailed("not an age-encryption.org/v1 file")
            raise IncompleteHeader("the data ends inside the age header")
        line = self._data[self.offset : end]
        self.offset = end + 1
        return line


def _parse_stanza(line: bytes, lines: _Lines) -> Stanza:
    words = line[3:].split(b" ")
    if not all(_ARG.fullmatch(w) for w in words):
        raise DecryptionFailed("an age header stanza has a malformed argument")
    text = b""
    while True:
        row = lines.next()
        if len(row) > COLUMNS:
            raise DecryptionFailed("an age header stanza has a body line over 64 columns")
        text += row
        if len(row) < COLUMNS:
            break
    type_, *args = (w.decode("ascii") for w in words)
    return Stanza(type_, tuple(args), b64decode(text))


def b64encode(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def b64decode(text: bytes | str) -> bytes:
    """Canonical unpadded standard base64, as the spec requires; DecryptionFailed otherwise."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    if not _BASE64.fullmatch(raw) or len(raw) % 4 == 1:
        raise DecryptionFailed("malformed base64 in the age header")
    try:
        data = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except binascii.Error as exc:
        raise DecryptionFailed("malformed base64 in the age header") from exc
    if b64encode(data) != raw:  # non-zero trailing bits: another decoder may differ
        raise DecryptionFailed("non-canonical base64 in the age header")
    return data


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(hashes.SHA256(), length, salt, info).derive(ikm)


def header_mac(file_key: bytes, mac_input: bytes) -> bytes:
    mac = HMAC(hkdf(file_key, b"", b"header"), hashes.SHA256())
    mac.update(mac_input)
    return mac.finalize()


def encrypt_header(recipients: Sequence[Recipient]) -> tuple[bytes, bytes]:
    """A new file's prefix (header + 16-byte random nonce) and its random file key.

    The payload key is ``stream.payload_key(file_key, prefix[-16:])``.
    """
    if not recipients:
        raise BadKey("no recipient to encrypt to")
    file_key = os.urandom(FILE_KEY_SIZE)
    stanzas = [r.wrap(file_key) for r in recipients]
    if len(stanzas) > 1 and any(s.type == "scrypt" for s in stanzas):
        raise BadKey("a passphrase cannot be combined with other recipients")
    return Header.build(stanzas, file_key).to_bytes() + os.urandom(NONCE_SIZE), file_key


def unwrap_file_key(header: Header, identities: Sequence[Identity]) -> bytes:
    """The file key the first matching identity unwraps, its MAC checked.

    Raises NoIdentity (none given or none matches) or DecryptionFailed.
    """
    if not identities:
        raise NoIdentity("no identity given to decrypt with")
    for identity in identities:
        file_key = identity.unwrap(header.stanzas)
        if file_key is not None:
            header.verify(file_key)
            return file_key
    raise NoIdentity("no identity given matches a recipient of the encrypted object")


def open_prefix(data: bytes, identities: Sequence[Identity]) -> tuple[int, bytes]:
    """(prefix length, payload key) of the file starting with data.

    Raises IncompleteHeader if data ends before the nonce does.
    """
    header, length = Header.parse(data)
    if len(data) < length + NONCE_SIZE:
        raise IncompleteHeader("the data ends before the payload nonce")
    file_key = unwrap_file_key(header, identities)
    nonce = data[length : length + NONCE_SIZE]
    return length + NONCE_SIZE, stream.payload_key(file_key, nonce)
