"""Pending writes to one collection: the state each document is left in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import bson

from .entry import PLAIN, OplogEntry


def id_key(doc_id: Any) -> bytes:
    """A hashable key for an _id of any BSON type (documents included)."""
    return bson.encode({"_id": doc_id}, codec_options=PLAIN)


@dataclass
class Change:
    """The state one batch leaves a document in (None: deleted), and the entry that set it."""

    doc_id: Any
    image: bytes | None
    entry: OplogEntry


class Batch:
    """Pending changes to one collection, the last one per _id.

    Only the state each document is left in matters, so a batch is sent as one
    delete of every _id it touched and one insert of the documents that remain:
    two commands, whatever the mix of entries.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.namespace: tuple[str, str] | None = None
        self.images: dict[bytes, Change] = {}

    @property
    def full(self) -> bool:
        return len(self.images) >= self.size

    def put(
        self, namespace: tuple[str, str], entry: OplogEntry, doc_id: Any, image: bytes | None
    ) -> None:
        key = id_key(doc_id)
        self.namespace = namespace
        self.images.pop(key, None)  # the latest change goes last
        self.images[key] = Change(doc_id, image, entry)

    def image(self, key: bytes) -> bytes | None:
        return self.images[key].image

    def take(self) -> list[tuple[bytes, Change]]:
        """The changes by key, in order, leaving the batch empty."""
        taken = list(self.images.items())
        self.namespace, self.images = None, {}
        return taken
