"""``backup --also``: the same archive at further destinations, from one dump.

Each extra destination (a *mirror*) follows the format's writing order on
its own (docs/format.md, section 2): claim the name, stream the archive
(through a TeeWriter fed by the one archive writer), commit, store the
sidecar, release the claim. A mirror that fails at any step is dropped: its
upload is aborted, an archive it committed without sidecar is deleted, its
claim released, and the backup goes on with the others. The primary
destination's failure fails the backup as before. The report says which
mirrors hold a complete copy; the CLI turns a failed one into exit 42.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .._errors import MongosnapError, ObjectExists, ObjectNotFound, UsageError
from ..archive.index import index_key
from ..archive.manifest import manifest_key, sealed_key
from ..storage import ObjectWriter, Retention, S3Config, Storage, open_storage
from ..storage.tee import TeeWriter
from .locking import lock_policy, locked

log = logging.getLogger("mongosnap.backup")


@dataclass(eq=False)
class Mirror:
    """One extra destination of a backup and how far it got."""

    storage: Storage
    error: str | None = None
    claim: str | None = None
    complete: bool = False
    retention: Retention | None = None

    @property
    def live(self) -> bool:
        return self.error is None

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("the copy at %s failed, the backup goes on: %s", self.storage.url, exc)

    def to_dict(self) -> dict[str, Any]:
        return {"destination": self.storage.url, "complete": self.complete, "error": self.error}


async def open_mirrors(
    stack: contextlib.AsyncExitStack,
    primary: Storage,
    destinations: Sequence[str | Storage],
    s3: S3Config | None,
    lock_for: timedelta | None,
    lock_mode: str,
) -> list[Mirror]:
    """Open and check every extra destination; one that cannot be used now is
    a failed mirror, a mistake in how it is named or locked a UsageError."""
    mirrors: list[Mirror] = []
    for destination in destinations:
        storage = open_storage(destination, s3=s3)
        if storage is not destination:
            stack.push_async_callback(storage.aclose)
        if storage.url in [primary.url, *(m.storage.url for m in mirrors)]:
            raise UsageError(f"{storage.url} is given twice (DEST and --also)")
        mirror = Mirror(storage)
        mirrors.append(mirror)
        try:
            await storage.check()
            policy = await lock_policy(storage, lock_for, lock_mode)
            mirror.retention = None if policy is None else policy.retention()
        except UsageError:
            raise
        except MongosnapError as exc:
            mirror.fail(exc)
    return mirrors


async def claim(mirrors: list[Mirror], key: str, claim_key: str, body: bytes) -> None:
    """Take the archive's name at each mirror, as at the primary (format.md, section 1)."""
    for mirror in (m for m in mirrors if m.live):
        try:
            await mirror.storage.put(claim_key, body)
            mirror.claim = claim_key
            with contextlib.suppress(ObjectNotFound):
                await mirror.storage.stat(key)
                raise ObjectExists(f"{mirror.storage.url}/{key} already exists")
        except MongosnapError as exc:
            mirror.fail(exc)


def tee(primary: ObjectWriter, mirrors: list[Mirror], key: str) -> ObjectWriter:
    """The primary writer alone, or a TeeWriter to it and each live mirror."""
    live = [m for m in mirrors if m.live]
    if not live:
        return primary
    return TeeWriter(primary, [m.storage.open_writer(key, **locked(m.retention)) for m in live])


async def publish(
    sink: ObjectWriter,
    mirrors: list[Mirror],
    key: str,
    document: bytes,
    sealed_document: bytes | None = None,
    index_document: bytes | None = None,
) -> None:
    """After the primary's sidecar: each mirror's sidecar(s), for the mirrors
    whose archive was committed; a mirror left without one loses its archive
    (and its manifest index). An encrypted archive's sealed sidecar goes
    first, its clear one last, as at the primary (docs/encryption.md); a
    manifest index goes before the sidecar (docs/format.md, section 18)."""
    if not isinstance(sink, TeeWriter):
        return
    live = [m for m in mirrors if m.live]
    for index, exc in sink.failed.items():
        live[index].fail(exc)
    for index in sink.committed:
        mirror = live[index]
        try:
            if index_document is not None:
                await mirror.storage.put(index_key(key), index_document, **locked(mirror.retention))
            if sealed_document is not None:
                await mirror.storage.put(
                    sealed_key(key), sealed_document, **locked(mirror.retention)
                )
            await mirror.storage.put(manifest_key(key), document, **locked(mirror.retention))
            mirror.complete = True
        except MongosnapError as exc:
            mirror.fail(exc)
            with contextlib.suppress(MongosnapError):
                if sealed_document is not None:
                    await mirror.storage.delete(sealed_key(key))
            with contextlib.suppress(MongosnapError):
                if index_document is not None:
                    await mirror.storage.delete(index_key(key))
            with contextlib.suppress(MongosnapError):
                await mirror.storage.delete(key)  # an archive without sidecar: withdraw it


async def withdraw(sink: ObjectWriter, mirrors: list[Mirror], key: str, cause: str) -> None:
    """The primary's sidecar failed: the mirrors' committed archives go too
    (a backup that failed leaves no archive anywhere)."""
    if not isinstance(sink, TeeWriter):
        return
    live = [m for m in mirrors if m.live]
    for index in sink.committed:
        mirror = live[index]
        mirror.error = cause
        try:
            await mirror.storage.delete(key)
        except MongosnapError as exc:
            log.error(
                "the archive %s/%s has no sidecar and could not be deleted: %s",
                mirror.storage.url,
                key,
                exc,
            )


def abandon(sink: ObjectWriter, mirrors: list[Mirror]) -> None:
    """Record why each mirror's write failed (the primary's failure ends the backup)."""
    if isinstance(sink, TeeWriter):
        live = [m for m in mirrors if m.live]
        for index, exc in sink.failed.items():
            live[index].fail(exc)


async def release(mirrors: list[Mirror]) -> None:
    """Delete every claim taken at a mirror; one left behind only costs its name."""
    for mirror in mirrors:
        if mirror.claim is None:
            continue
        try:
            await mirror.storage.delete(mirror.claim)
            mirror.claim = None
        except MongosnapError as exc:
            log.warning(
                "could not remove the name claim %s/%s: %s", mirror.storage.url, mirror.claim, exc
            )
