"""Pending writes to one collection: the state each document is left in, and how it got there."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import bson

from .entry import PLAIN, OplogEntry

STEPS_PER_DOCUMENT = 4
"""A batch also ends after ``size * STEPS_PER_DOCUMENT`` changes: the steps it keeps
to undo a refused write are bounded like its documents."""


def id_key(doc_id: Any) -> bytes:
    """A hashable key for an _id of any BSON type (documents included)."""
    return bson.encode({"_id": doc_id}, codec_options=PLAIN)


@dataclass
class Change:
    """The state a change leaves a document in (None: deleted), and the entry that set it.

    ``group`` numbers the top-level entry it comes from: the writes of one
    ``applyOps`` or transaction share it and are undone together.
    """

    doc_id: Any
    image: bytes | None
    entry: OplogEntry
    group: int = 0


class Batch:
    """Pending changes to one collection: every step in order, and the last one per _id.

    Only the state each document is left in matters for the happy path, so a
    batch is sent as one delete of every _id it touched and one insert of the
    documents that remain: two commands, whatever the mix of entries. The
    steps and the state each document had before the batch (``before``) let a
    refused write be undone without taking any other document with it.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.namespace: tuple[str, str] | None = None
        self.images: dict[bytes, Change] = {}
        self.steps: list[Change] = []
        self.before: dict[bytes, bytes | None] = {}
        """The stored state of a touched document before the batch, when known."""

    @property
    def full(self) -> bool:
        return len(self.images) >= self.size or len(self.steps) >= self.size * STEPS_PER_DOCUMENT

    def put(self, namespace: tuple[str, str], change: Change) -> None:
        key = id_key(change.doc_id)
        self.namespace = namespace
        self.images.pop(key, None)  # the latest change goes last
        self.images[key] = change
        self.steps.append(change)

    def image(self, key: bytes) -> bytes | None:
        return self.images[key].image

    def undo(self, group: int) -> None:
        """Forget the trailing steps of one top-level entry (it failed part-way)."""
        while self.steps and self.steps[-1].group == group:
            self.steps.pop()
        self.images = {}
        for change in self.steps:
            key = id_key(change.doc_id)
            self.images.pop(key, None)
            self.images[key] = change
        if not self.steps:
            self.namespace, self.before = None, {}

    def take(self) -> tuple[list[tuple[bytes, Change]], list[Change], dict[bytes, bytes | None]]:
        """The changes by key, the steps and the known prior states, leaving the batch empty."""
        taken = (list(self.images.items()), self.steps, self.before)
        self.namespace, self.images, self.steps, self.before = None, {}, [], {}
        return taken
