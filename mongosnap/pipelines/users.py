"""Users and roles: stored by ``backup --users-and-roles``, put back by ``restore``.

The layout is ``mongodump --dumpDbUsersAndRoles``'s: per database,
``dump/<db>/$admin.system.users.bson`` and ``$admin.system.roles.bson`` (the
admin documents whose ``db`` is that database) and ``$admin.system.version.bson``
(the server's auth schema document), which ``mongorestore
--restoreDbUsersAndRoles`` reads. A user's document holds its credentials as
the server keeps them (salted SCRAM keys, never a password); only names are
ever logged or reported.

Restoring inserts each user and role the target does not have into
``admin.system.users`` / ``admin.system.roles`` (the server's auth observer
picks them up); one that exists is left alone and reported. ``system.version``
is the server's own and is never written.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from bson.raw_bson import RawBSONDocument

from .._errors import UsageError
from ..archive import ArchiveWriter
from ..archive.manifest import AUTH_COLLECTIONS, AuthMember, auth_member_name
from ..source import Source

log = logging.getLogger("mongosnap.users")

RESTORED_COLLECTIONS = ("system.roles", "system.users")
"""Roles first: a user's roles may name them."""


async def write(writer: ArchiveWriter, src: Source, databases: Sequence[str]) -> list[AuthMember]:
    """Append each database's users, roles and the auth schema document."""
    found = []
    for database in databases:
        for collection in AUTH_COLLECTIONS:
            wanted = {} if collection == "system.version" else {"db": database}
            documents = await src.admin_documents(collection, wanted)
            found.append(await _member(writer, database, collection, documents))
    return found


async def _member(
    writer: ArchiveWriter, database: str, collection: str, documents: list[bytes]
) -> AuthMember:
    digest = hashlib.sha256()
    await writer.begin(auth_member_name(database, collection))
    for document in documents:
        digest.update(document)
        await writer.write(document)
    member = await writer.end()
    return AuthMember(database, collection, len(documents), digest.hexdigest(), member)


@dataclass
class UsersReport:
    """What a restore did with the archive's users and roles: names only."""

    restored: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    """Already on the target: left alone."""

    def to_dict(self) -> dict[str, list[str]]:
        return {"restored": self.restored, "existing": self.existing}


def check_target(database: str, to_database: str | None) -> None:
    """Users belong to their database: restored under another name they would not be."""
    if to_database is not None and to_database != database:
        raise UsageError(
            "--users-and-roles restores users into the database they belong to:"
            " it cannot be combined with --to-database"
        )


async def restore(target: Source, documents: dict[str, list[bytes]]) -> UsersReport:
    """Insert the users and roles the target lacks (``documents`` by collection)."""
    report = UsersReport()
    for collection in RESTORED_COLLECTIONS:
        kind = "user" if collection == "system.users" else "role"
        for document in documents.get(collection, []):
            name = f"{kind} {_name(document)}"
            if await target.admin_has(collection, RawBSONDocument(document)["_id"]):
                inserted = False
            else:
                inserted = await target.admin_insert(collection, document)
            (report.restored if inserted else report.existing).append(name)
            if not inserted:
                log.warning("%s exists on %s: left alone", name, target.hosts)
    return report


def _name(document: bytes) -> str:
    """``db.name`` of a user or role document, never anything else of it."""
    raw = RawBSONDocument(document)
    return str(raw.get("_id", "?"))
