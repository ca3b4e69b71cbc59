"""The documents a window of oplog entries touched, and their state before and after it.

Pure functions over raw oplog entries and raw documents: no server, no storage.
``Timeline`` keeps, for one collection, every entry of each ``_id`` in oplog
order; ``images()`` replays one document's own entries over its archived
state to get its pre-image (the state just before the window) and its
post-image (the state at the window's end). A document's state only depends
on its own entries (inserts, updates by ``_id``, deletes by ``_id``), so one
document is replayed without the rest of the collection.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument

from .._errors import PointInTimeUnavailable, ReplayError
from ..oplog.diff import apply_update, is_full_image
from ..oplog.entry import PLAIN, RAW, OplogEntry, encode, parse_entry, plain
from ..oplog.position import Ts

IdKey = bytes
"""An ``_id`` as the BSON of ``{"_id": value}``: hashable, exact on type."""

_LOSSES = ("drop", "renameCollection", "dropDatabase")
"""Commands after which the collection's documents belong to another incarnation
(a ``create`` needs one of them first, or the collection was not archived yet)."""


def id_key(value: Any) -> IdKey:
    return bson.encode({"_id": value}, codec_options=PLAIN)


def id_value(key: IdKey) -> Any:
    return bson.decode(key, PLAIN)["_id"]


_ID_FIRST = b"_id\x00"
_FIXED = {0x07: 12, 0x10: 4, 0x12: 8}
"""Value sizes of the ``_id`` types whose bytes are their key as they are
(ObjectId, int32, int64: decoding and encoding them again changes nothing)."""


def document_key(document: bytes) -> IdKey | None:
    """The key of a raw document's ``_id`` (None without one).

    Undo calls this for every document of a collection's data member: an
    ``_id`` stored first (as servers store it) of a common type is sliced out
    of the raw bytes instead of decoding the whole document.
    """
    if document[5:9] == _ID_FIRST:
        end = _id_end(document)
        if end is not None:
            element = document[4:end]
            return (len(element) + 5).to_bytes(4, "little") + element + b"\x00"
    decoded = RawBSONDocument(document, RAW)
    return id_key(decoded["_id"]) if "_id" in decoded else None  # an _id of null is a key


def _id_end(document: bytes) -> int | None:
    """Where a leading ``_id`` element ends, for the types sliced as they are."""
    kind = document[4]
    if kind in _FIXED:
        end = 9 + _FIXED[kind]
        return end if end < len(document) else None
    if kind != 0x02:  # anything else is decoded: its key is its canonical encoding
        return None
    length = int.from_bytes(document[9:13], "little", signed=True)
    end = 13 + length
    if length < 1 or end >= len(document) or document[end - 1] != 0:
        return None
    try:  # a string that does not decode is left to the decoder to refuse
        document[13 : end - 1].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return end


@dataclass(frozen=True)
class Step:
    """One entry of one document: its ts, op (i, u, d) and the entry's ``o``."""

    ts: Ts
    op: str
    o: Mapping[str, Any]


@dataclass(frozen=True)
class Images:
    """One touched document: before and at the end of the window (None: absent)."""

    key: IdKey
    pre: bytes | None
    post: bytes | None
    later: bool
    """Written again after the window (an archived entry after ``to``)."""

    @property
    def kind(self) -> str:
        """``deleted``, ``updated``, ``inserted`` or ``unchanged`` over the window."""
        if self.pre == self.post:
            return "unchanged"
        if self.post is None:
            return "deleted"
        return "inserted" if self.pre is None else "updated"


@dataclass
class Timeline:
    """The entries of one collection, per ``_id``, with the window's bounds.

    ``start`` is the archive's consistent point: entries after it are exact
    history, so an insert of an ``_id`` that exists then, or a command that
    drops or renames the collection, means the window's documents belong to
    another incarnation of the collection than the archive's.
    """

    database: str
    collection: str
    start: Ts
    first: Ts
    last: Ts
    steps: dict[IdKey, list[Step]] = field(default_factory=dict)
    uuids: set[bytes] = field(default_factory=set)
    entries: int = 0

    @property
    def ns(self) -> str:
        return f"{self.database}.{self.collection}"

    def add(self, raw: bytes) -> None:
        """Take one raw oplog entry (any namespace: others are ignored)."""
        entry = parse_entry(raw)
        self._take(entry, Ts.from_bson(entry.ts))

    def _take(self, entry: OplogEntry, ts: Ts) -> None:
        if entry.op == "c":
            self._command(entry, ts)
            return
        if entry.ns != self.ns or entry.op not in ("i", "u", "d"):
            return
        self.entries += 1
        if self.start < ts <= self.last and "ui" in entry.fields:
            self.uuids.add(bytes(bson.encode({"u": entry.fields["ui"]})))
            if len(self.uuids) > 1:
                raise self._replaced(entry, "its entries name two collection UUIDs")
        target = entry.o2 if entry.op == "u" else entry.o
        if target is None or "_id" not in target:
            raise ReplayError(f"{entry.describe()}: no _id")
        self.steps.setdefault(id_key(plain(target)["_id"]), []).append(Step(ts, entry.op, entry.o))

    def _command(self, entry: OplogEntry, ts: Ts) -> None:
        if "applyOps" in entry.o:
            for nested in entry.o["applyOps"]:
                self._take(parse_entry(nested, ts=entry.ts), ts)
            return
        if entry.database != self.database or not (self.start < ts <= self.last):
            return
        for name in _LOSSES:
            if name not in entry.o:
                continue
            value, to = entry.o[name], entry.o.get("to")
            named = {v for v in (value, to) if isinstance(v, str)}
            named |= {f"{self.database}.{v}" for v in named}
            if name == "dropDatabase" or self.collection in named or self.ns in named:
                raise self._replaced(entry, f"a {name} command")

    def _replaced(self, entry: OplogEntry, why: str) -> PointInTimeUnavailable:
        return PointInTimeUnavailable(
            f"{self.ns} was dropped, renamed or recreated between the archive's consistent "
            f"point {self.start} and the window's end ({why}: {entry.describe()}); the "
            "archived documents belong to another incarnation of the collection: nothing "
            "was changed"
        )

    def touched(self) -> list[IdKey]:
        """The ``_id``s written to in [first, last], in order of their first write there."""
        found = {}
        for key, steps in self.steps.items():
            inside = [s.ts for s in steps if self.first <= s.ts <= self.last]
            if inside:
                found[key] = min(inside)
        return sorted(found, key=lambda k: found[k])

    def deleted(self) -> list[IdKey]:
        """The ``_id``s with a delete entry after the archive's consistent point, up
        to ``last``, in order of their first such delete."""
        found = {}
        for key, steps in self.steps.items():
            deletes = [s.ts for s in steps if s.op == "d" and self.start < s.ts <= self.last]
            if deletes:
                found[key] = min(deletes)
        return sorted(found, key=lambda k: found[k])

    def images(self, key: IdKey, archived: bytes | None) -> Images:
        """Replay the document's own entries over ``archived``, its state in the
        archive's collection member (None: not there)."""
        pre = state = archived
        later = False
        for step, _, state in self._replay(key, archived):
            if step.ts > self.last:
                later = True  # its state is left as it was at ``last``
            elif step.ts < self.first:
                pre = state
        return Images(key, pre, state, later)

    def before_delete(self, key: IdKey, archived: bytes | None) -> bytes | None:
        """The document just before the delete that removed it, when it is deleted
        at ``last`` by a delete after the archive's consistent point; else None
        (it is there at ``last``, or was already gone before that delete)."""
        removed: bytes | None = None
        final = archived
        for step, before, after in self._replay(key, archived):
            final = after
            if step.op == "d" and self.start < step.ts <= self.last:
                removed = before
        return removed if final is None else None

    def _replay(
        self, key: IdKey, archived: bytes | None
    ) -> Iterator[tuple[Step, bytes | None, bytes | None]]:
        """Each of the document's entries in ts order, with its state before and
        after; the first entry after ``last`` ends it, its state unchanged."""
        state = archived
        for step in sorted(self.steps.get(key, []), key=lambda s: s.ts):
            if step.ts > self.last:
                yield step, state, state
                return
            if step.op == "i" and step.ts > self.start and state is not None:
                raise PointInTimeUnavailable(
                    f"{self.ns}: an insert at ts {step.ts} of a document that existed then: "
                    "the collection was dropped and recreated (FerretDB logs no drop); the "
                    "archived documents belong to another incarnation: nothing was changed"
                )
            before, state = state, _apply(state, step)
            yield step, before, state


def _apply(state: bytes | None, step: Step) -> bytes | None:
    if step.op == "i":
        return encode(step.o)
    if step.op == "d":
        return None
    if is_full_image(step.o):  # FerretDB: the whole new document, fields it removed gone
        return encode(step.o["$set"])
    if state is None:
        return None  # an update of a missing document: the server skips it too
    return encode(apply_update(bson.decode(state, PLAIN), step.o))
