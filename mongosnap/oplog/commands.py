"""The commands of ``c`` entries (other than applyOps and transactions), applied idempotently.

Each handler returns the name the replay report counts, or a ``Skip`` saying
why nothing was done. A command it does not know, or an option of ``collMod``
it cannot forward, raises ReplayError: nothing is skipped silently.

Every collection a command names is addressed where the scope lands it
(``Scope.landed``): the renamed database, and for a mapped namespace the
collection it is mapped to (heal's staging copy). Selection and losses are
decided on the names the entry records.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import ReplayError, SourceError
from ..archive.metadata import convert_legacy_index
from ..source import NAMESPACE_EXISTS, NAMESPACE_NOT_FOUND, error_code
from .entry import OplogEntry
from .scope import Scope
from .target import ReplayTarget

# collMod options forwarded as they are; anything else stops the replay.
COLLMOD_OPTIONS = frozenset(
    {"index", "validator", "validationLevel", "validationAction", "expireAfterSeconds"}
)
# Markers of two-phase index builds: the commitIndexBuild entry carries the specs.
INDEX_BUILD_MARKERS = frozenset({"startIndexBuild", "abortIndexBuild"})


@dataclass(frozen=True)
class Skip:
    reason: str


Outcome = str | Skip
Handler = Callable[[ReplayTarget, Scope, str, dict[str, Any]], Awaitable[Outcome]]


def command_name(o: Mapping[str, Any]) -> str:
    return next(iter(o), "")


def losses(entry: OplogEntry, o: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """(database, collection) a command takes away; collection None for a whole database."""
    name = command_name(o)
    if name == "drop":
        return [(entry.database, str(o["drop"]))]
    if name == "dropDatabase":
        return [(entry.database, None)]
    if name == "renameCollection":
        source = _split(o["renameCollection"])
        return [source, _split(o["to"])] if o.get("dropTarget") else [source]
    return []


def touched(entry: OplogEntry, o: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(database, collection) a command changes, ``*`` for a whole database."""
    name = command_name(o)
    if name == "renameCollection":
        return [_split(o["renameCollection"]), _split(o["to"])]
    value = o.get(name)
    return [(entry.database, value if isinstance(value, str) else "*")]


async def apply_command(
    target: ReplayTarget, scope: Scope, entry: OplogEntry, o: dict[str, Any]
) -> Outcome:
    """Apply one command entry; server refusals become ReplayError naming it."""
    name = command_name(o)
    if name in INDEX_BUILD_MARKERS:
        return Skip("index build marker")
    handler = _HANDLERS.get(name)
    if handler is None:
        raise ReplayError(f"{entry.describe()}: command {name!r} cannot be replayed")
    try:
        return await handler(target, scope, entry.database, o)
    except ReplayError as exc:
        raise ReplayError(f"{entry.describe()}: {exc}") from exc
    except SourceError as exc:
        if type(exc) is not SourceError:
            raise  # unreachable server, authentication: not the entry's fault
        raise ReplayError(f"{entry.describe()}: the server refused {name}: {exc}") from exc


def _split(ns: Any) -> tuple[str, str]:
    database, _, collection = str(ns).partition(".")
    return database, collection


def _unselected(scope: Scope, database: str, collection: str) -> bool:
    return not scope.in_database(database, collection)


async def _create(target: ReplayTarget, scope: Scope, database: str, o: dict[str, Any]) -> Outcome:
    name = str(o["create"])
    if _unselected(scope, database, name):
        return Skip("unselected")
    options = {k: v for k, v in o.items() if k not in ("create", "idIndex")}
    landed_db, landed = scope.landed(database, name)
    try:
        await target.command(landed_db, {"create": landed, **options})
    except SourceError as exc:
        if error_code(exc) != NAMESPACE_EXISTS:
            raise
    return "create"


async def _drop(target: ReplayTarget, scope: Scope, database: str, o: dict[str, Any]) -> Outcome:
    name = str(o["drop"])
    if _unselected(scope, database, name):
        return Skip("unselected")
    await target.drop(*scope.landed(database, name))
    return "drop"


async def _drop_database(
    target: ReplayTarget, scope: Scope, database: str, o: dict[str, Any]
) -> Outcome:
    """Drop the selected collections of the database, never the others (a mapped
    one where it landed, not a collection that happens to bear its name)."""
    landed = scope.database(database)
    present = await target.collection_names(landed)
    chosen = {
        name
        for name in present
        if not name.startswith("system.")
        and scope.in_database(database, name)
        and f"{database}.{name}" not in scope.collections
    }
    for name in sorted(chosen | (scope.mapped_in(database) & present)):
        await target.drop(landed, name)
    return "dropDatabase"


async def _rename(target: ReplayTarget, scope: Scope, database: str, o: dict[str, Any]) -> Outcome:
    (src_db, src), (dst_db, dst) = _split(o["renameCollection"]), _split(o["to"])
    keep_src, keep_dst = scope.in_database(src_db, src), scope.in_database(dst_db, dst)
    if not keep_src and not keep_dst:
        return Skip("unselected")
    if not keep_src:
        raise ReplayError(
            f"renames unselected {src_db}.{src} onto selected {dst_db}.{dst}: "
            "its documents are not part of the replay"
        )
    landed_src, landed_dst = scope.landed(src_db, src), scope.landed(dst_db, dst)
    if not keep_dst:
        await target.drop(*landed_src)  # it leaves the selection
        return "renameCollection"
    if landed_src[1] not in await target.collection_names(landed_src[0]):
        return Skip("already applied")  # replayed before, or nothing to rename
    # A target that exists although the entry does not replace it comes from a
    # later state (a replay over its own result): in the logged history it did
    # not exist at this instant, so the source replaces it and later entries
    # rebuild whatever came after.
    await _rename_namespace(target, landed_src, landed_dst)
    return "renameCollection"


async def _rename_namespace(
    target: ReplayTarget, src: tuple[str, str], dst: tuple[str, str]
) -> None:
    if src[0] == dst[0]:
        await target.rename(src[0], src[1], dst[1], replace=True)
        return
    await target.drop(*dst)
    command = {"renameCollection": f"{src[0]}.{src[1]}", "to": f"{dst[0]}.{dst[1]}"}
    await target.command("admin", command)


async def _create_indexes(
    target: ReplayTarget, scope: Scope, database: str, o: dict[str, Any]
) -> Outcome:
    name = str(o["createIndexes"])
    spec = {k: v for k, v in o.items() if k != "createIndexes"}
    return await _build_indexes(target, scope, database, name, [spec], "createIndexes")


async def _commit_index_build(
    target: ReplayTarget, scope: Scope, database: str, o: dict[str, Any]
) -> Outcome:
    name = str(o["commitIndexBuild"])
    specs = list(o.get("indexes", []))
    return await _build_indexes(target, scope, database, name, specs, "commitIndexBuild")


async def _build_indexes(
    target: ReplayTarget,
    scope: Scope,
    database: str,
    name: str,
    specs: list[dict[str, Any]],
    counted: str,
) -> Outcome:
    if _unselected(scope, database, name):
        return Skip("unselected")
    # As a restore builds them: without ``v`` and ``ns``, left to the server.
    converted = [convert_legacy_index(spec) for spec in specs]
    await target.create_indexes(*scope.landed(database, name), converted)
    return counted


async def _drop_indexes(
    target: ReplayTarget, scope: Scope, database: str, o: dict[str, Any]
) -> Outcome:
    name = str(o.get("dropIndexes", o.get("deleteIndexes")))
    if _unselected(scope, database, name):
        return Skip("unselected")
    landed_db, landed = scope.landed(database, name)
    wanted = o.get("index")
    names = await _index_names(target, landed_db, landed, wanted)
    await target.drop_indexes(landed_db, landed, names)
    return "dropIndexes"


async def _index_names(target: ReplayTarget, database: str, name: str, wanted: Any) -> list[str]:
    """Names for a dropIndexes ``index`` value: a name, names, ``"*"`` or a key pattern."""
    if isinstance(wanted, str) and wanted != "*":
        return [wanted]
    if isinstance(wanted, list) and all(isinstance(n, str) for n in wanted):
        return list(wanted)
    if wanted != "*" and not isinstance(wanted, dict):
        raise ReplayError(f"dropIndexes with an index value of {wanted!r}")
    try:
        existing = await target.indexes(database, name)
    except SourceError as exc:
        if error_code(exc) == NAMESPACE_NOT_FOUND:
            return []
        raise
    if wanted == "*":
        return [str(ix["name"]) for ix in existing if ix["name"] != "_id_"]
    return [str(ix["name"]) for ix in existing if dict(ix["key"]) == wanted]


async def _coll_mod(
    target: ReplayTarget, scope: Scope, database: str, o: dict[str, Any]
) -> Outcome:
    name = str(o["collMod"])
    if _unselected(scope, database, name):
        return Skip("unselected")
    unknown = sorted(set(o) - COLLMOD_OPTIONS - {"collMod"})
    if unknown:
        raise ReplayError(f"collMod option(s) {unknown} cannot be replayed")
    landed_db, landed = scope.landed(database, name)
    await target.command(landed_db, {**o, "collMod": landed})  # the name stays first
    return "collMod"


_HANDLERS: dict[str, Handler] = {
    "create": _create,
    "drop": _drop,
    "dropDatabase": _drop_database,
    "renameCollection": _rename,
    "createIndexes": _create_indexes,
    "commitIndexBuild": _commit_index_build,
    "dropIndexes": _drop_indexes,
    "deleteIndexes": _drop_indexes,
    "collMod": _coll_mod,
}
