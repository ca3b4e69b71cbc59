"""Encrypted archives in the pipelines: sealing one after a backup, opening one
for heal, restore and verify (docs/encryption.md).

Writing (backup): the tar stream goes through an age EncryptingWriter into
the archive object, a CiphertextTap hashing what reaches storage; then the
sealed sidecar (binding line + manifest, encrypted to the same recipients),
then the clear sidecar. Only once the clear sidecar is stored does the archive
list as complete.

Reading: ``unseal`` checks what a reader asks for before anything is
restored: a key at all (NoIdentity, naming ``--identity``), the sealed
sidecar decrypts (wrong key: its error), its binding names this archive, the
clear sidecar's databases and ciphertext, and its manifest agrees with the
clear sidecar (ForeignArchive otherwise: a swapped sidecar, an archive of
another database under this name). The engine then reads plaintext ranges
through a DecryptedView, which authenticates every chunk before its bytes
are used.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .._errors import (
    ArchiveError,
    CorruptArchive,
    ForeignArchive,
    NoIdentity,
    TruncatedArchive,
)
from ..archive.clear import ClearSidecar, SealBinding
from ..archive.manifest import MAX_MANIFEST_BYTES, Manifest, sealed_key
from ..catalog import ArchiveInfo
from ..encryption import NO_KEY_HINT, Keys
from ..storage import ObjectInfo, ObjectWriter, Retention, Storage, UploadInfo

if TYPE_CHECKING:
    from ..crypto.keys import Identity, Recipient
    from ..crypto.writer import EncryptingWriter

MAX_SEALED_BYTES = MAX_MANIFEST_BYTES + (1 << 20)
"""A sealed sidecar: the manifest, its binding line, the age header and tags."""


class CiphertextTap:
    """An ObjectWriter between the age EncryptingWriter and the archive's storage
    writer: hashes the ciphertext in object order, for the clear sidecar.

    The encrypting writer reserves the sealed size of a chunk that holds an
    unfilled tar header and fills it later; what follows a reservation is held
    here until it is filled, as the storage writer holds its upload unit (a
    backup fills its headers within GROUP_BYTES: pipelines/backup.py).
    """

    def __init__(self, inner: ObjectWriter) -> None:
        self.inner = inner
        self.digest = hashlib.sha256()
        self._held: list[bytes | int] = []
        """Pieces after the first unfilled reservation: bytes, or a reservation's offset."""
        self._filled: dict[int, bytes] = {}

    @property
    def discarded(self) -> bool | None:
        return self.inner.discarded

    @discarded.setter
    def discarded(self, value: bool | None) -> None:
        self.inner.discarded = value

    @property
    def position(self) -> int:
        return self.inner.position

    async def write(self, data: bytes) -> None:
        if self._held:
            self._held.append(bytes(data))
        else:
            self.digest.update(data)
        await self.inner.write(data)

    async def reserve(self, placeholder: bytes) -> int:
        offset = await self.inner.reserve(placeholder)
        self._held.append(offset)
        return offset

    async def fill(self, offset: int, data: bytes) -> None:
        await self.inner.fill(offset, data)
        self._filled[offset] = bytes(data)
        while self._held:
            first = self._held[0]
            if isinstance(first, int):
                if first not in self._filled:
                    break
                first = self._filled.pop(first)
            self.digest.update(first)
            self._held.pop(0)

    async def commit(self) -> ObjectInfo:
        return await self.inner.commit()

    async def abort(self) -> None:
        self._held.clear()
        await self.inner.abort()

    async def __aenter__(self) -> CiphertextTap:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.inner.__aexit__(exc_type, exc, tb)


def encrypting_writer(
    inner: ObjectWriter, recipients: list[Recipient]
) -> tuple[EncryptingWriter, CiphertextTap]:
    """The writer a backup writes its tar stream into, and the tap below it."""
    from ..crypto.writer import EncryptingWriter

    tap = CiphertextTap(inner)
    return EncryptingWriter(tap, recipients), tap


async def store_sealed(
    storage: Storage,
    key: str,
    document: bytes,
    manifest: Manifest,
    sink: EncryptingWriter,
    tap: CiphertextTap,
    size: int,
    recipients: list[Recipient],
    lock: Mapping[str, Any] | None = None,
) -> tuple[ClearSidecar, bytes]:
    """Store the sealed sidecar (with ``lock``: Storage.put's retention keyword);
    return the clear one (stored by the caller, last) and the sealed bytes."""
    from ..crypto.file import encrypt
    from ..crypto.header import NONCE_SIZE

    header = sink.prefix_length - NONCE_SIZE  # the payload's nonce follows the header
    clear = ClearSidecar.of(manifest, size=size, header=header, sha256=tap.digest.hexdigest())
    binding = SealBinding(clear.archive, clear.databases, size, clear.sha256)
    # In a thread: wrapping the file key may be scrypt's CPU or a KMS call.
    sealed_document = await asyncio.to_thread(encrypt, binding.seal(document), recipients)
    await storage.put(sealed_key(key), sealed_document, **(lock or {}))
    return clear, sealed_document


# ----------------------------------------------------------------- reading


async def unseal(
    storage: Storage, info: ArchiveInfo, keys: Keys | None
) -> tuple[Storage, ArchiveInfo]:
    """An encrypted archive's plaintext view and its info with the full manifest.

    A plain archive comes back as it is. Raises NoIdentity without a key,
    the key's error when it opens nothing, ForeignArchive when the sealed
    manifest is not this archive's, CorruptArchive when it is malformed.
    """
    if not info.encrypted:
        return storage, info
    if keys is None or keys.empty:
        raise NoIdentity(f"{info.key} is encrypted: {NO_KEY_HINT}")
    clear = info.clear
    if clear is None:  # not COMPLETE: nothing to check it against
        raise CorruptArchive(f"{info.key} has no usable clear sidecar: {info.problem}")
    view = decrypted(storage, keys.resolved())
    plaintext = await view.read_bytes(sealed_key(info.key), limit=MAX_SEALED_BYTES)
    binding, document = SealBinding.open(plaintext)
    manifest = Manifest.from_json(document)
    _check_binding(info, clear, binding, manifest)
    return ArchiveView(storage, info.key, view), replace(info, manifest=manifest)


def decrypted(storage: Storage, identities: list[Identity]) -> Storage:
    from ..crypto.storage import DecryptedView

    return DecryptedView(storage, identities)


def _check_binding(
    info: ArchiveInfo, clear: ClearSidecar, binding: SealBinding, manifest: Manifest
) -> None:
    name = info.key.rsplit("/", 1)[-1]
    if binding.archive != name or manifest.archive != name:
        raise ForeignArchive(
            f"{info.key}: its sealed manifest is that of {manifest.archive!r}"
            " (a swapped sidecar or a renamed archive)"
        )
    if (binding.encrypted_bytes, binding.sha256) != (clear.encrypted_bytes, clear.sha256):
        raise ForeignArchive(
            f"{info.key}: its sealed manifest was made for other ciphertext than its"
            " clear sidecar describes (a swapped sidecar)"
        )
    if binding.databases != clear.databases or tuple(manifest.databases) != clear.databases:
        raise ForeignArchive(
            f"{info.key}: the clear sidecar lists databases {list(clear.databases)},"
            f" the sealed manifest {list(manifest.databases)}"
        )
    if (manifest.codec, manifest.totals.compressed_bytes) != (clear.codec, clear.compressed_bytes):
        raise ForeignArchive(f"{info.key}: the sealed manifest's codec or size differs")


class ArchiveView:
    """The storage, with one key (the archive) read as plaintext through ``view``.

    Everything else (oplog chunks, leases) is the storage itself: only the
    archive is encrypted.
    """

    def __init__(self, storage: Storage, key: str, view: Storage) -> None:
        self.storage = storage
        self.key = key
        self.view = view

    @property
    def url(self) -> str:
        return self.storage.url

    async def check(self) -> None:
        await self.storage.check()

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        return self.storage.list(prefix)

    async def stat(self, key: str) -> ObjectInfo:
        return await (self.view if key == self.key else self.storage).stat(key)

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        return (self.view if key == self.key else self.storage).read(key, start, end)

    async def read_bytes(self, key: str, *, limit: int) -> bytes:
        return await (self.view if key == self.key else self.storage).read_bytes(key, limit=limit)

    async def put(self, key: str, data: bytes, *, retention: Retention | None = None) -> ObjectInfo:
        return await self.storage.put(key, data, retention=retention)

    def open_writer(self, key: str, *, retention: Retention | None = None) -> ObjectWriter:
        return self.storage.open_writer(key, retention=retention)

    async def delete(self, key: str) -> None:
        await self.storage.delete(key)

    def uploads(self, prefix: str = "") -> AsyncIterator[UploadInfo]:
        return self.storage.uploads(prefix)

    async def abort_upload(self, upload: UploadInfo) -> None:
        await self.storage.abort_upload(upload)

    async def aclose(self) -> None:
        """The storage belongs to the caller: nothing to release here."""


async def check_ciphertext(storage: Storage, info: ArchiveInfo) -> tuple[int, list[ArchiveError]]:
    """``verify --no-decrypt``: the object's size and SHA-256 against its clear
    sidecar (no key needed). Returns the bytes read and the problems found."""
    clear = info.clear
    if clear is None:
        return 0, [CorruptArchive(f"archive is incomplete: {info.problem}")]
    digest = hashlib.sha256()
    read = 0
    async for chunk in storage.read(info.key):
        digest.update(chunk)
        read += len(chunk)
    if read < clear.encrypted_bytes:
        return read, [
            TruncatedArchive(f"{read} bytes, the clear sidecar says {clear.encrypted_bytes}")
        ]
    if read != clear.encrypted_bytes or digest.hexdigest() != clear.sha256:
        return read, [
            CorruptArchive("the ciphertext's SHA-256 or size differs from the clear sidecar")
        ]
    return read, []
