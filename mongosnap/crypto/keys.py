"""Recipients (who a file is encrypted to) and identities (what opens it).

X25519 (``age1...`` / ``AGE-SECRET-KEY-1...``) and scrypt (a passphrase), as
the age v1 spec defines them. Secret material never appears in a repr, a str
or an error message: errors name the file and line, never the text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .._errors import BadKey, DecryptionFailed
from . import _bech32
from .header import FILE_KEY_SIZE, Stanza, b64decode, b64encode, hkdf

_X25519_INFO = b"age-encryption.org/v1/X25519"
_SCRYPT_SALT = b"age-encryption.org/v1/scrypt"
_ZERO_NONCE = bytes(12)
_WRAPPED = FILE_KEY_SIZE + 16
_WORK_FACTOR = re.compile(r"[1-9][0-9]?")
_RAW = serialization.Encoding.Raw


class Recipient(Protocol):
    def wrap(self, file_key: bytes) -> Stanza:
        """The stanza that lets the matching identity recover file_key."""
        ...


class Identity(Protocol):
    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """The file key if one of the stanzas is for this identity, else None.

        Raises DecryptionFailed for a malformed stanza of its own type.
        """
        ...


def _seal_key(wrap_key: bytes, file_key: bytes) -> bytes:
    return ChaCha20Poly1305(wrap_key).encrypt(_ZERO_NONCE, file_key, None)


def _open_key(wrap_key: bytes, body: bytes) -> bytes | None:
    try:
        return ChaCha20Poly1305(wrap_key).decrypt(_ZERO_NONCE, body, None)
    except InvalidTag:
        return None


def _public_bytes(key: X25519PublicKey) -> bytes:
    return key.public_bytes(_RAW, serialization.PublicFormat.Raw)


def _shared(secret: X25519PrivateKey, public: bytes) -> bytes:
    try:
        shared = secret.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:  # OpenSSL refuses a low-order point (an all-zero secret)
        shared = bytes(32)
    if shared == bytes(32):
        raise DecryptionFailed("an X25519 stanza holds a low-order share")
    return shared


class X25519Recipient:
    def __init__(self, public: bytes) -> None:
        if len(public) != 32:
            raise BadKey("an X25519 recipient is 32 bytes")
        self.public = public

    @classmethod
    def parse(cls, text: str) -> X25519Recipient:
        try:
            hrp, data = _bech32.decode(text.strip())
        except _bech32.Bech32Error as exc:
            raise BadKey(f"malformed age recipient ({exc})") from None
        if hrp != "age" or len(data) != 32:
            raise BadKey("not an age1... X25519 recipient")
        return cls(data)

    def __str__(self) -> str:
        return _bech32.encode("age", self.public)

    def __repr__(self) -> str:
        return f"X25519Recipient({self})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, X25519Recipient) and other.public == self.public

    def __hash__(self) -> int:
        return hash(self.public)

    def wrap(self, file_key: bytes) -> Stanza:
        ephemeral = X25519PrivateKey.generate()
        share = _public_bytes(ephemeral.public_key())
        shared = _shared(ephemeral, self.public)
        wrap_key = hkdf(shared, share + self.public, _X25519_INFO)
        return Stanza("X25519", (b64encode(share).decode(),), _seal_key(wrap_key, file_key))


class X25519Identity:
    def __init__(self, secret: X25519PrivateKey) -> None:
        self._secret = secret
        self.recipient = X25519Recipient(_public_bytes(secret.public_key()))

    @classmethod
    def generate(cls) -> X25519Identity:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def parse(cls, text: str) -> X25519Identity:
        try:
            hrp, data = _bech32.decode(text.strip())
        except _bech32.Bech32Error as exc:
            raise BadKey(f"malformed age identity ({exc})") from None
        if hrp != "age-secret-key-" or len(data) != 32:
            raise BadKey("not an AGE-SECRET-KEY-1... X25519 identity")
        return cls(X25519PrivateKey.from_private_bytes(data))

    def export(self) -> str:
        """The ``AGE-SECRET-KEY-1...`` text: for writing a key file, nothing else."""
        raw = self._secret.private_bytes(_RAW, serialization.PrivateFormat.Raw, _NO_CRYPT)
        return _bech32.encode("age-secret-key-", raw).upper()

    def __repr__(self) -> str:
        return f"X25519Identity(recipient={self.recipient})"

    __str__ = __repr__

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        for stanza in stanzas:
            if stanza.type != "X25519":
                continue
            if len(stanza.args) != 1:
                raise DecryptionFailed("an X25519 stanza must have one argument")
            share = b64decode(stanza.args[0])
            if len(share) != 32 or len(stanza.body) != _WRAPPED:
                raise DecryptionFailed("an X25519 stanza has the wrong length")
            shared = _shared(self._secret, share)
            wrap_key = hkdf(shared, share + self.recipient.public, _X25519_INFO)
            file_key = _open_key(wrap_key, stanza.body)
            if file_key is not None:
                return file_key
        return None


_NO_CRYPT = serialization.NoEncryption()


def _scrypt_key(passphrase: bytes, salt: bytes, work_factor: int) -> bytes:
    kdf = Scrypt(salt=_SCRYPT_SALT + salt, length=32, n=1 << work_factor, r=8, p=1)
    return kdf.derive(passphrase)


def _passphrase(value: str | bytes) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if not data:
        raise BadKey("the passphrase is empty")
    return data


class ScryptRecipient:
    """Encrypt to a passphrase; ``work_factor`` is log2 of scrypt's N."""

    def __init__(self, passphrase: str | bytes, work_factor: int = 18) -> None:
        if not 1 <= work_factor <= 30:
            raise BadKey("the scrypt work factor must be between 1 and 30")
        self._passphrase = _passphrase(passphrase)
        self.work_factor = work_factor

    def __repr__(self) -> str:
        return f"ScryptRecipient(work_factor={self.work_factor})"

    __str__ = __repr__

    def wrap(self, file_key: bytes) -> Stanza:
        salt = os.urandom(16)
        wrap_key = _scrypt_key(self._passphrase, salt, self.work_factor)
        args = (b64encode(salt).decode(), str(self.work_factor))
        return Stanza("scrypt", args, _seal_key(wrap_key, file_key))


class ScryptIdentity:
    """Decrypt with a passphrase; refuses work factors above ``max_work_factor``
    (a hostile file could otherwise ask for hours of work and gigabytes)."""

    def __init__(self, passphrase: str | bytes, max_work_factor: int = 22) -> None:
        self._passphrase = _passphrase(passphrase)
        self.max_work_factor = max_work_factor

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], max_work_factor: int = 22) -> ScryptIdentity:
        """The passphrase is the file's content less one trailing newline."""
        data = _read(path)
        if data.endswith(b"\n"):
            data = data[:-2] if data.endswith(b"\r\n") else data[:-1]
        if not data:
            raise BadKey(f"{path}: the passphrase file is empty")
        return cls(data, max_work_factor)

    def __repr__(self) -> str:
        return f"ScryptIdentity(max_work_factor={self.max_work_factor})"

    __str__ = __repr__

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        scrypt = [s for s in stanzas if s.type == "scrypt"]
        if not scrypt:
            return None
        if len(stanzas) != 1:
            raise DecryptionFailed("an scrypt stanza must be the only one in the header")
        stanza = scrypt[0]
        if len(stanza.args) != 2 or not _WORK_FACTOR.fullmatch(stanza.args[1]):
            raise DecryptionFailed("malformed scrypt stanza")
        salt = b64decode(stanza.args[0])
        if len(salt) != 16 or len(stanza.body) != _WRAPPED:
            raise DecryptionFailed("an scrypt stanza has the wrong length")
        work_factor = int(stanza.args[1])
        if work_factor > self.max_work_factor:
            raise DecryptionFailed(
                f"the scrypt work factor {work_factor} is above the limit {self.max_work_factor}"
            )
        return _open_key(_scrypt_key(self._passphrase, salt, work_factor), stanza.body)


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BadKey(f"cannot read {path}: {exc.strerror}") from None


def _key_lines(path: str | os.PathLike[str]) -> list[tuple[int, str]]:
    try:
        text = _read(path).decode("utf-8")
    except UnicodeDecodeError:
        raise BadKey(f"{path}: not a text file") from None
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            found.append((number, line))
    if not found:
        raise BadKey(f"{path}: holds no key")
    return found


def read_identities(path: str | os.PathLike[str]) -> list[X25519Identity]:
    """The AGE-SECRET-KEY-1 lines of an age identity file (``#`` comments allowed)."""
    identities = []
    for number, line in _key_lines(path):
        try:
            identities.append(X25519Identity.parse(line))
        except BadKey:
            raise BadKey(f"{path}, line {number}: not an AGE-SECRET-KEY-1 identity") from None
    return identities


def read_recipients(path: str | os.PathLike[str]) -> list[X25519Recipient]:
    """The age1 lines of a recipients file (``#`` comments allowed)."""
    recipients = []
    for number, line in _key_lines(path):
        try:
            recipients.append(X25519Recipient.parse(line))
        except BadKey:
            raise BadKey(f"{path}, line {number}: not an age1 X25519 recipient") from None
    return recipients
