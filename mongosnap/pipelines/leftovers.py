"""What interrupted backups can leave beside the archives: orphan sidecars
and name claims. ``list --leftovers`` shows them; ``prune`` removes stale ones.

- An orphan sidecar is a ``<archive>.manifest.json`` (or an encrypted
  archive's sealed ``<archive>.manifest.json.age``, or a manifest index
  ``<archive>.manifest.index.json``) whose archive is not
  there (a backup killed while withdrawing an archive whose sidecar was in
  flight). It describes nothing; restore, heal and list ignore it.
- A rekey copy is ``<archive or sidecar>.rekey`` (pipelines/rekey.py): the
  new version of an object that a rekey had not swapped in when it stopped.
  With the archive's clear sidecar there, it is clutter (the old archive is
  intact); without it, the swap was cut short and the next ``rekey`` of the
  destination finishes it, so prune never removes it then.
- A name claim is ``<archive>.claim`` (pipelines/backup.py): a backup holds
  it from before its archive exists until its sidecar is stored. One left
  behind only costs the name of its second, but it is clutter.

A live backup's claim must never go. A claim is stale when its newest sign
of life (its write, the time in its name, and the newest part of an
unfinished upload of its archive) is older than STALE_AFTER, the age at
which uploads.py also takes a backup for dead: a live backup sends a part
every few seconds to minutes. An orphan sidecar is removed at the same age,
and only if its archive is still absent when checked again just before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import units
from .._errors import ObjectNotFound, StorageError
from ..archive.index import INDEX_SUFFIX
from ..archive.manifest import (
    ENCRYPTED_SUFFIX,
    MANIFEST_SUFFIX,
    SEALED_SUFFIX,
    parse_archive_name,
)
from ..catalog import archive_codec
from ..storage import Storage
from .uploads import STALE_AFTER, pending_uploads

log = logging.getLogger("mongosnap.prune")

CLAIM_SUFFIX = ".claim"  # as pipelines/backup.py writes them
ORPHAN_SIDECAR = "orphan sidecar"
CLAIM = "name claim"
REKEY_SUFFIX = ".rekey"  # as pipelines/rekey.py writes them
REKEY_COPY = "rekey copy"


@dataclass(frozen=True)
class Leftover:
    key: str
    kind: str
    """ORPHAN_SIDECAR, CLAIM or REKEY_COPY."""
    size: int
    last_active: datetime | None
    """Its newest sign of life (see the module docstring); None: unknown."""

    @property
    def archive(self) -> str:
        """The key of the archive it belongs (or belonged) to."""
        if self.kind == CLAIM:
            return self.key.removesuffix(CLAIM_SUFFIX)
        if self.kind == REKEY_COPY:  # of the archive itself, or of one of its sidecars
            original = self.key.removesuffix(REKEY_SUFFIX)
            for suffix in (SEALED_SUFFIX, MANIFEST_SUFFIX):
                if original.endswith(suffix):
                    return original.removesuffix(suffix)
            return original
        if self.key.endswith(INDEX_SUFFIX):
            return self.key.removesuffix(INDEX_SUFFIX)
        return self.key.removesuffix(ENCRYPTED_SUFFIX).removesuffix(MANIFEST_SUFFIX)

    def stale(self, now: datetime, after: timedelta = STALE_AFTER) -> bool:
        return self.last_active is not None and now - self.last_active >= after

    def to_dict(self, now: datetime) -> dict[str, Any]:
        idle = None if self.last_active is None else now - self.last_active
        return {
            "key": self.key,
            "kind": self.kind,
            "archive": self.archive,
            "size": self.size,
            "last_active": units.iso_utc(self.last_active),
            "idle_seconds": None if idle is None else round(idle.total_seconds()),
            "stale": self.stale(now),
        }


async def find_leftovers(storage: Storage, prefix: str = "") -> list[Leftover]:
    """Orphan sidecars and name claims at the storage's level, by key."""
    archives: set[str] = set()
    sidecars: dict[str, Any] = {}
    claims: dict[str, Any] = {}
    copies: list[Leftover] = []
    async for obj in storage.list(prefix):
        if obj.key.endswith(REKEY_SUFFIX):
            copies.append(Leftover(obj.key, REKEY_COPY, obj.size, obj.modified))
        elif obj.key.endswith((MANIFEST_SUFFIX, SEALED_SUFFIX, INDEX_SUFFIX)):
            sidecars[obj.key] = obj
        elif obj.key.endswith(CLAIM_SUFFIX) and _archive_named(obj.key, CLAIM_SUFFIX):
            claims[obj.key] = obj
        elif archive_codec(obj.key) is not None:
            archives.add(obj.key)
    found = [
        Leftover(key, ORPHAN_SIDECAR, obj.size, obj.modified)
        for key, obj in sidecars.items()
        if Leftover(key, ORPHAN_SIDECAR, 0, None).archive not in archives
    ]
    found += [c for c in copies if _archive_named(c.archive, "")]
    if claims:
        uploads = {u.key: u.last_active for u in await pending_uploads(storage)}
        for key, obj in claims.items():
            archive = key.removesuffix(CLAIM_SUFFIX)
            signs = [obj.modified, parse_archive_name(archive.rsplit("/", 1)[-1])]
            signs.append(uploads.get(archive))
            known = [s for s in signs if s is not None]
            found.append(Leftover(key, CLAIM, obj.size, max(known) if known else None))
    return sorted(found, key=lambda leftover: leftover.key)


async def remove_stale_leftovers(
    storage: Storage, *, dry_run: bool = False, now: datetime | None = None
) -> list[Leftover]:
    """Remove (with ``dry_run``: only find) the stale leftovers; return them.

    Never raises a StorageError: what cannot be removed is logged and kept."""
    moment = now or datetime.now(UTC)
    try:
        stale = [x for x in await find_leftovers(storage) if x.stale(moment)]
    except StorageError as exc:
        log.warning("cannot look for leftovers in %s: %s", storage.url, exc)
        return []
    removed: list[Leftover] = []
    for leftover in stale:
        if dry_run:
            removed.append(leftover)
            continue
        try:
            if leftover.kind == ORPHAN_SIDECAR and await _exists(storage, leftover.archive):
                continue  # its archive came back (or the listing missed it): not an orphan
            if leftover.kind == REKEY_COPY and not await _exists(
                storage, leftover.archive + MANIFEST_SUFFIX
            ):
                log.warning(
                    "%s belongs to an interrupted rekey: run mongosnap rekey on %s to finish it",
                    leftover.key,
                    storage.url,
                )
                continue
            await storage.delete(leftover.key)
        except StorageError as exc:
            log.warning("cannot remove the %s %s: %s", leftover.kind, leftover.key, exc)
            continue
        removed.append(leftover)
    if removed and not dry_run:
        log.warning("removed %d stale leftover(s) of interrupted backups", len(removed))
    return removed


async def _exists(storage: Storage, key: str) -> bool:
    try:
        await storage.stat(key)
    except ObjectNotFound:
        return False
    return True


def _archive_named(key: str, suffix: str) -> bool:
    return parse_archive_name(key.removesuffix(suffix).rsplit("/", 1)[-1]) is not None


__all__ = [
    "CLAIM",
    "ORPHAN_SIDECAR",
    "REKEY_COPY",
    "Leftover",
    "find_leftovers",
    "remove_stale_leftovers",
]
