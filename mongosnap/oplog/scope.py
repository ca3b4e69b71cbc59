"""Which namespaces a replay touches, and under which database name they land."""

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
    """A namespace selection (on the original names) and a database renaming.

    ``names`` is the finite selection when one was given as a set of
    ``db.collection`` names, so a replay can tell when all of it is lost.
    """

    selected: Callable[[str], bool] = user_namespace
    databases: Mapping[str, str] = field(default_factory=dict)
    names: frozenset[str] | None = None

    @classmethod
    def build(
        cls, namespaces: Selector = None, databases: Mapping[str, str] | None = None
    ) -> Scope:
        renames = dict(databases or {})
        if namespaces is None:
            return cls(databases=renames)
        if callable(namespaces):
            return cls(namespaces, renames)
        names = frozenset([namespaces] if isinstance(namespaces, str) else namespaces)
        return cls(names.__contains__, renames, names)

    def database(self, name: str) -> str:
        """Where a database's entries land."""
        return self.databases.get(name, name)

    def target(self, ns: str) -> tuple[str, str]:
        """(database, collection) a namespace's entries land in."""
        database, _, collection = ns.partition(".")
        return self.database(database), collection

    def in_database(self, database: str, collection: str) -> bool:
        return self.selected(f"{database}.{collection}")
