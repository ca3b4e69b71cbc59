"""Which namespaces a replay touches, and where (database, collection) they land."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ..source import SYSTEM_DATABASES

Selector = Callable[[str], bool] | Iterable[str] | None


def user_namespace(ns: str) -> bool:
    """Any namespace outside admin/config/local and the ``system.*`` collections."""
    database, _, collection = ns.partition(".")
    return database not in SYSTEM_DATABASES and not collection.startswith("system.")


@dataclass(frozen=True)
class Scope:
    """A namespace selection (on the original names), a database renaming and a
    namespace map.

    ``names`` is the finite selection when one was given as a set of
    ``db.collection`` names, so a replay can tell when all of it is lost.
    ``collections`` maps a namespace (original names) to the collection its
    entries land in instead, in its (renamed) database: heal replays into the
    staging copy of a collection before it is published under its name.
    """

    selected: Callable[[str], bool] = user_namespace
    databases: Mapping[str, str] = field(default_factory=dict)
    names: frozenset[str] | None = None
    collections: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        namespaces: Selector = None,
        databases: Mapping[str, str] | None = None,
        collections: Mapping[str, str] | None = None,
    ) -> Scope:
        renames, mapped = dict(databases or {}), dict(collections or {})
        if namespaces is None:
            return cls(databases=renames, collections=mapped)
        if callable(namespaces):
            return cls(namespaces, renames, collections=mapped)
        names = frozenset([namespaces] if isinstance(namespaces, str) else namespaces)
        return cls(names.__contains__, renames, names, mapped)

    def database(self, name: str) -> str:
        """Where a database's entries land."""
        return self.databases.get(name, name)

    def target(self, ns: str) -> tuple[str, str]:
        """(database, collection) a namespace's entries land in."""
        database, _, collection = ns.partition(".")
        return self.database(database), self.collections.get(ns, collection)

    def landed(self, database: str, collection: str) -> tuple[str, str]:
        """(database, collection) where ``database.collection``'s entries land."""
        return self.target(f"{database}.{collection}")

    def published(self, database: str, collection: str) -> str:
        """The namespace a collection's writes are reported under: its own name
        in the renamed database (a mapped one lands there when published)."""
        return f"{self.database(database)}.{collection}"

    def mapped_in(self, database: str) -> set[str]:
        """The landing collections of the selected, mapped namespaces of ``database``."""
        return {
            landed
            for ns, landed in self.collections.items()
            if ns.partition(".")[0] == database and self.selected(ns)
        }

    def in_database(self, database: str, collection: str) -> bool:
        return self.selected(f"{database}.{collection}")
