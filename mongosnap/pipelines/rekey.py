"""Add or remove recipients of encrypted archives without re-encrypting them.

Per archive (docs/format.md, "Rekeying" gives the order and what a crash at
each step leaves): the new header is made from the old one (crypto/rekey.py:
same file key, stanzas changed); the archive is read once to check its
SHA-256 against the clear sidecar and to hash the new object; then three
temporary objects ``<key>.rekey`` are written next to the originals: the new
archive (new header + the old payload, copied by the server on S3), verified
by reading it back, the sealed sidecar (its binding names the new size and
hash) and, last, the clear sidecar. Only then is the archive swapped: clear
sidecar deleted (the archive is incomplete from here, so no reader uses a
half-swapped one), sealed sidecar and archive deleted and copied from their
temporary objects, the clear sidecar stored, the temporary objects deleted.
Objects are never overwritten. A temporary clear sidecar whose original is
missing marks a swap that every later ``rekey`` finishes first.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .._aio import shielded
from .._errors import CorruptArchive, ForeignArchive, UsageError
from ..archive.clear import MAX_CLEAR_BYTES, ClearSidecar, SealBinding
from ..archive.manifest import MANIFEST_SUFFIX, manifest_key, sealed_key
from ..catalog import ArchiveInfo, ArchiveStatus, list_archives, resolve
from ..encryption import Encryption, Keys, check_recipients
from ..storage import S3Config, Storage, opened
from ..storage.splice import splice
from .leftovers import REKEY_COPY, REKEY_SUFFIX, Leftover
from .runlock import holding
from .sealed import MAX_SEALED_BYTES

log = logging.getLogger("mongosnap.rekey")

HEADER_PROBE = 64 << 10
"""The first read of an archive: a header of hundreds of stanzas."""


def temporary(key: str) -> str:
    return key + REKEY_SUFFIX


@dataclass(frozen=True)
class RekeyedArchive:
    key: str
    stanzas: int
    """Recipients (header stanzas) after the change."""
    added: int
    removed: int
    size: int
    """The archive object's new size."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "archive": self.key,
            "recipients": self.stanzas,
            "added": self.added,
            "removed": self.removed,
            "size": self.size,
        }


@dataclass(frozen=True)
class RekeyReport:
    destination: str
    archives: list[RekeyedArchive] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    """Archives whose interrupted swap this run completed."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "archives": [a.to_dict() for a in self.archives],
            "finished": self.finished,
        }


async def rekey(
    destination: str | Storage,
    archives: Sequence[str] = (),
    *,
    every: bool = False,
    keys: Keys | None,
    add: Encryption | None = None,
    remove: Sequence[str] = (),
    s3: S3Config | None = None,
    break_lock: bool = False,
) -> RekeyReport:
    """Add the recipients of ``add`` to, and drop the recipients ``remove``
    (an ``age1…`` whose identity is among ``keys``, or a KMS key id) from, the
    named encrypted archives (``every``: all complete ones). ``keys`` open them.

    Holds the destination's rekey lock (pipelines/runlock.py: DestinationBusy
    while another rekey runs; ``break_lock`` removes the others' locks).
    Finishes any interrupted swap first. Raises UsageError (nothing to do, an
    archive that is not encrypted), NoIdentity, ForeignArchive, CorruptArchive
    or a StorageError; archives already done stay done.
    """
    if bool(archives) == every:
        raise UsageError("name the archives to rekey, or give --all (one of them)")
    if keys is None or keys.empty:
        raise UsageError("rekey needs the key of the archives (--identity, --kms, ...)")
    identities = keys.resolved()
    change = await _change(identities, add, remove)
    async with opened(destination, s3) as storage:
        await storage.check()
        # one rekey at a time: a second would take the first's temporary
        # objects for an interrupted run's and delete or swap them
        async with holding(storage, "rekey", break_others=break_lock):
            report = RekeyReport(storage.url, finished=await finish_interrupted(storage))
            for info in await _chosen(storage, archives, every):
                report.archives.append(await _rekey_one(storage, info, identities, change))
                log.info("rekeyed %s", info.key)
    return report


async def _change(identities: list[Any], add: Encryption | None, remove: Sequence[str]) -> Any:
    from ..crypto.keys import X25519Identity
    from ..crypto.rekey import Change

    recipients = add.resolved() if add is not None else []
    if recipients:
        await check_recipients(recipients)
    openers, kms = [], set()
    for text in remove:
        if text.startswith("age1"):
            found = [
                i for i in identities if isinstance(i, X25519Identity) and str(i.recipient) == text
            ]
            if not found:
                raise UsageError(
                    f"to remove {text}, give its identity with --identity (age hides which"
                    " header stanza belongs to which public key)"
                )
            openers += found
        else:
            kms.add(text)
    if not recipients and not openers and not kms:
        raise UsageError("nothing to change: give recipients to add or --remove-recipient")
    return Change(recipients, openers, kms)


async def _chosen(storage: Storage, archives: Sequence[str], every: bool) -> list[ArchiveInfo]:
    if every:
        found = [a for a in await list_archives(storage) if a.encrypted]
        return [a for a in found if a.status is ArchiveStatus.COMPLETE]
    chosen = [await resolve(storage, ref) for ref in archives]
    for info in chosen:
        if not info.encrypted:
            raise UsageError(f"{info.key} is not encrypted: there are no recipients to change")
        if info.status is not ArchiveStatus.COMPLETE or info.clear is None:
            raise CorruptArchive(f"{info.key} is not complete: {info.problem}")
    return chosen


async def _rekey_one(
    storage: Storage, info: ArchiveInfo, identities: list[Any], change: Any
) -> RekeyedArchive:
    from ..crypto.file import decrypt
    from ..crypto.rekey import encrypt_with, rewrap

    key, clear = info.key, info.clear
    assert clear is not None
    stored = (await storage.stat(key)).size
    if stored != clear.encrypted_bytes:
        raise CorruptArchive(
            f"{key}: {stored} bytes, its clear sidecar says {clear.encrypted_bytes}"
        )
    head = await _prefix(storage, key, stored)
    new = await asyncio.to_thread(rewrap, head, identities, change)
    new_hash = await _hashes(storage, key, clear, new.header, new.old_length)
    size = len(new.header) + stored - new.old_length
    sealed_data = await storage.read_bytes(sealed_key(key), limit=MAX_SEALED_BYTES)
    plaintext = await asyncio.to_thread(decrypt, sealed_data, identities)
    binding, document = SealBinding.open(plaintext)
    if (binding.archive, binding.sha256) != (clear.archive, clear.sha256):
        raise ForeignArchive(f"{key}: its sealed sidecar was made for another archive")
    sealed_new = await asyncio.to_thread(rewrap, sealed_data, identities, change)
    bound = replace(binding, encrypted_bytes=size, sha256=new_hash)
    sealed_bytes = encrypt_with(bound.seal(document), sealed_new.stanzas, sealed_new.file_key)
    clear_new = replace(clear, encrypted_bytes=size, header_bytes=len(new.header), sha256=new_hash)
    await _drop_temporaries(storage, key)  # of an earlier run that did not get to its swap
    try:
        await splice(storage, temporary(key), new.header, key, new.old_length)
        await _verify(storage, temporary(key), size, new_hash)
        await storage.put(temporary(sealed_key(key)), sealed_bytes)
        await storage.put(temporary(manifest_key(key)), clear_new.to_json())  # the swap may go on
    except asyncio.CancelledError:  # a signal: the old archive stays, nothing of ours beside it
        await shielded(_drop_temporaries(storage, key))
        raise
    # A signal waits for the swap: a half-swapped archive is unusable until the next rekey.
    await shielded(_swap(storage, key))
    added = len(change.add)
    return RekeyedArchive(key, len(new.stanzas), added, new.dropped, size)


async def _prefix(storage: Storage, key: str, stored: int) -> bytes:
    """The archive's first bytes, enough for its whole header."""
    from ..crypto.header import Header, IncompleteHeader

    probe = HEADER_PROBE
    while True:
        data = b"".join([p async for p in storage.read(key, 0, min(probe, stored))])
        try:
            Header.parse(data)
            return data
        except IncompleteHeader:
            if len(data) >= stored or probe >= 1 << 24:
                raise CorruptArchive(f"{key}: the age header is truncated") from None
            probe *= 4


async def _hashes(
    storage: Storage, key: str, clear: ClearSidecar, header: bytes, payload_at: int
) -> str:
    """The new object's SHA-256, once the old one's matched its clear sidecar."""
    old, new = hashlib.sha256(), hashlib.sha256(header)
    offset = 0
    async for piece in storage.read(key):
        old.update(piece)
        if offset + len(piece) > payload_at:
            new.update(piece[max(payload_at - offset, 0) :])
        offset += len(piece)
    if old.hexdigest() != clear.sha256:
        raise CorruptArchive(f"{key}: its SHA-256 differs from its clear sidecar's; not rekeyed")
    return new.hexdigest()


async def _verify(storage: Storage, key: str, size: int, sha256: str) -> None:
    digest, length = hashlib.sha256(), 0
    async for piece in storage.read(key):
        digest.update(piece)
        length += len(piece)
    if length != size or digest.hexdigest() != sha256:
        raise CorruptArchive(f"{key}: the rekeyed copy does not read back as written")


async def _swap(storage: Storage, key: str) -> None:
    """Replace the archive and its sidecars by their verified temporary copies."""
    clear = await storage.read_bytes(temporary(manifest_key(key)), limit=MAX_CLEAR_BYTES)
    sealed = await storage.read_bytes(temporary(sealed_key(key)), limit=MAX_SEALED_BYTES)
    await storage.delete(manifest_key(key))  # incomplete from here: no reader uses it
    await storage.delete(sealed_key(key))
    await storage.delete(key)
    await splice(storage, key, b"", temporary(key), 0)
    await storage.put(sealed_key(key), sealed)
    await storage.put(manifest_key(key), clear)  # complete again, with the new header
    await _drop_temporaries(storage, key)


async def _drop_temporaries(storage: Storage, key: str) -> None:
    for name in (manifest_key(key), sealed_key(key), key):  # the clear one first
        await storage.delete(temporary(name))


async def finish_interrupted(storage: Storage) -> list[str]:
    """Finish the swaps a crash interrupted (their temporary clear sidecar is
    there, the clear sidecar not); drop the temporary objects of rekeys that
    did not reach their swap or completed it. Returns the finished archives."""
    listed = {info.key async for info in storage.list()}
    finished = []
    for name in sorted(k for k in listed if k.endswith(REKEY_SUFFIX)):
        original = name.removesuffix(REKEY_SUFFIX)
        if original.endswith(MANIFEST_SUFFIX) and original not in listed:
            archive = original.removesuffix(MANIFEST_SUFFIX)
            log.warning("finishing the interrupted rekey of %s", archive)
            await shielded(_swap(storage, archive))
            finished.append(archive)
    for name in sorted(k for k in listed if k.endswith(REKEY_SUFFIX)):
        archive = Leftover(name, REKEY_COPY, 0, None).archive
        if archive not in finished and manifest_key(archive) in listed:
            await storage.delete(name)
    return finished
