"""The manifest index: where each part of a big manifest lies (docs/format.md, section 18).

An archive of many collections has a manifest of megabytes; a heal wants a
few entries of it. The index cuts the manifest's ``collections`` (sorted by
database and name) into pages and records each page's last key, byte range
and SHA-256, plus the text before the first entry (head) and after the last
(tail). Head, some pages and tail joined are a valid manifest listing only
those collections. The bytes are read from the archive's own manifest
member, a stored member whose byte positions follow from the codec alone.

This module builds, parses and checks the index; it never reads storage.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from .._errors import CorruptArchive
from ..codecs import CODECS
from .jsonlimits import bounded_text
from .manifest import MAX_MANIFEST_BYTES, Manifest, MemberRange
from .names import MANIFEST_MEMBER
from .tar import BLOCK

INDEX_SUFFIX = ".manifest.index.json"
INDEX_FORMAT = "mongosnap-manifest-index"
INDEX_VERSION = 1
INDEX_THRESHOLD = 200
"""Fewest collections an archive needs to get an index: a smaller sidecar is read whole."""
PAGE_ENTRIES = 48
"""Most entries per page: ~25 KB of manifest, while the index of 10,000
collections stays near 30 KB (a heal reads one page and the index)."""
PAGE_BYTES = 24 << 10
"""Most bytes per page (long names make long entries), unless one entry is more."""
MAX_INDEX_BYTES = 1 << 20
"""Largest index read; a bigger one is ignored (the full sidecar is read instead)."""
MAX_FRAME_BYTES = 16 << 10
"""Largest head or tail an index is written for (many databases or users: no index)."""
_SEPARATOR = b",\n    "  # between two entries of ``collections`` (json.dumps, indent 2)
_OPENING = b'"collections": [\n    '
_HEADER_BYTES = BLOCK  # the manifest member's name is short: one header block, no LongLink
_END_BYTES = 2 * BLOCK  # the end-of-archive blocks


def index_key(archive_key: str) -> str:
    """The index's key for an archive key."""
    return archive_key + INDEX_SUFFIX


@dataclass(frozen=True)
class Span:
    """Bytes ``[offset, end)`` of the manifest text and their SHA-256."""

    offset: int
    end: int
    sha256: str

    def to_list(self) -> list[Any]:
        return [self.offset, self.end, self.sha256]


@dataclass(frozen=True)
class Page:
    """Consecutive entries: the last one's (database, name) and their text. The
    first key is not stored: pages tile the sorted entries, so a key belongs to
    the first page whose last key is not below it (that saves a third of the index)."""

    last: tuple[str, str]
    span: Span

    def to_list(self) -> list[Any]:
        return [*self.last, *self.span.to_list()]


@dataclass(frozen=True)
class ManifestIndex:
    archive: str
    codec: str
    compressed_bytes: int
    manifest: MemberRange
    head: Span
    tail: Span
    pages: tuple[Page, ...]

    def to_json(self) -> bytes:
        doc = {
            "format": INDEX_FORMAT,
            "format_version": INDEX_VERSION,
            "archive": self.archive,
            "codec": self.codec,
            "compressed_bytes": self.compressed_bytes,
            "manifest": self.manifest.to_dict(),
            "head": self.head.to_list(),
            "tail": self.tail.to_list(),
            "pages": [p.to_list() for p in self.pages],
        }
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> ManifestIndex:
        """Parse and check the index on its own; CorruptArchive on anything wrong."""
        text = bounded_text(
            data,
            "manifest index",
            max_bytes=MAX_INDEX_BYTES,
            max_depth=4,
            max_values=MAX_INDEX_BYTES // 4,
            refuse=CorruptArchive,
        )
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise CorruptArchive(f"manifest index is not valid JSON: {exc}") from exc
        keys = {"format", "format_version", "archive", "codec", "compressed_bytes"}
        keys |= {"manifest", "head", "tail", "pages"}
        if not isinstance(raw, dict) or set(raw) != keys:
            raise CorruptArchive("manifest index: not an object with the index's keys")
        if raw["format"] != INDEX_FORMAT or raw["format_version"] != INDEX_VERSION:
            raise CorruptArchive("manifest index: unknown format or version")
        pages = raw["pages"]
        if not isinstance(pages, list):
            raise CorruptArchive("manifest index: pages is not an array")
        index = cls(
            archive=_text(raw["archive"]),
            codec=_text(raw["codec"]),
            compressed_bytes=_count(raw["compressed_bytes"]),
            manifest=MemberRange.from_dict(raw["manifest"], "index.manifest"),
            head=_span(raw["head"]),
            tail=_span(raw["tail"]),
            pages=tuple(_page(p) for p in pages),
        )
        index.check()
        return index

    def check(self) -> None:
        """The ranges lie in order inside the manifest, the keys increase, and
        the manifest member is where the archive's layout puts it: right
        before the end-of-archive member, so no range reaches other members."""
        codec = CODECS.get(self.codec)
        if codec is None:
            raise CorruptArchive(f"manifest index names an unknown codec {self.codec!r}")
        member = self.manifest
        if member.name != MANIFEST_MEMBER or not 0 < member.size <= MAX_MANIFEST_BYTES:
            raise CorruptArchive("manifest index: not a manifest member")
        padded = -(-member.size // BLOCK) * BLOCK
        expected_end = member.offset + codec.stored_length(_HEADER_BYTES)
        expected_end += codec.stored_length(padded)
        if member.end != expected_end:
            raise CorruptArchive("manifest index: the manifest member's range is not its size")
        if member.end + codec.stored_length(_END_BYTES) != self.compressed_bytes:
            raise CorruptArchive("manifest index: the manifest member is not the archive's last")
        if not self.pages:
            raise CorruptArchive("manifest index: no pages")
        if self.head.offset != 0 or self.tail.end != member.size:
            raise CorruptArchive("manifest index: head and tail do not frame the manifest")
        # head, pages and tail tile the manifest (entries apart by one separator):
        # no entry is left out of every page
        spans = [p.span for p in self.pages]
        if self.head.end != spans[0].offset or spans[-1].end != self.tail.offset:
            raise CorruptArchive("manifest index: ranges do not tile the manifest")
        apart = [b.offset - a.end for a, b in pairwise(spans)]
        if any(s.end <= s.offset for s in spans) or any(g != len(_SEPARATOR) for g in apart):
            raise CorruptArchive("manifest index: ranges do not tile the manifest")
        previous: tuple[str, str] | None = None
        for page in self.pages:
            if previous is not None and page.last <= previous:
                raise CorruptArchive("manifest index: page keys out of order")
            previous = page.last

    def pages_for(self, keys: Iterable[tuple[str, str]]) -> list[Page]:
        """The pages that may hold these (database, name) keys, in order."""
        lasts = [p.last for p in self.pages]
        found: dict[int, Page] = {}
        for key in keys:
            at = bisect_left(lasts, key)
            if at < len(self.pages):
                found[at] = self.pages[at]
        return [found[i] for i in sorted(found)]

    def body_offset(self) -> int:
        """Where the manifest member's stored body member starts in the archive."""
        return self.manifest.offset + CODECS[self.codec].stored_length(_HEADER_BYTES)

    def located(self, span: Span) -> list[tuple[int, int]]:
        """The archive byte ranges holding the span's manifest bytes, in order."""
        base = self.body_offset()
        return [
            (base + a, base + b) for a, b in CODECS[self.codec].stored_spans(span.offset, span.end)
        ]

    def assemble(self, head: bytes, pages: list[tuple[Page, bytes]], tail: bytes) -> Manifest:
        """The manifest listing only the pages' collections, parsed and checked,
        agreeing with the index on its member, size and each page's keys (its
        entries sorted, its last key the index's, its first above the page before)."""
        manifest = Manifest.from_json(head + _SEPARATOR.join(data for _, data in pages) + tail)
        keys = [(c.database, c.name) for c in manifest.collections]
        position = 0
        for page, data in pages:
            count = data.count(b"\n    },\n    {") + 1  # entries, as the writer separates them
            at = self.pages.index(page)
            floor = self.pages[at - 1].last if at else None
            mine = keys[position : position + count]
            if (
                len(mine) != count
                or mine[-1] != page.last
                or (floor is not None and mine[0] <= floor)
                or any(a >= b for a, b in pairwise(mine))
            ):
                raise CorruptArchive("the manifest index's page keys do not match the manifest")
            position += count
        if position != len(keys):
            raise CorruptArchive("the manifest index's pages do not match the manifest")
        if manifest.manifest != self.manifest or manifest.archive != self.archive:
            raise CorruptArchive("the manifest index disagrees with the manifest it indexes")
        if manifest.totals.compressed_bytes != self.compressed_bytes:
            raise CorruptArchive("the manifest index disagrees with the manifest's size")
        return manifest


def checked(span: Span, data: bytes, what: str) -> bytes:
    """The span's bytes, once their length and SHA-256 are the index's."""
    if len(data) != span.end - span.offset or hashlib.sha256(data).hexdigest() != span.sha256:
        raise CorruptArchive(f"the manifest index's {what} does not match the manifest")
    return data


def build_index(manifest: Manifest, document: bytes) -> bytes | None:
    """The index of a sealed manifest and its JSON ``document``; None when it
    needs none (few collections) or cannot have one (entries out of order, a
    head or tail too large, text not laid out as expected)."""
    entries = manifest.collections
    keys = [(c.database, c.name) for c in entries]
    if len(entries) < INDEX_THRESHOLD or any(a >= b for a, b in pairwise(keys)):
        return None
    start = document.find(_OPENING)
    if start < 0:
        return None
    position = start + len(_OPENING)
    offsets: list[tuple[int, int]] = []
    for i, entry in enumerate(entries):
        text = json.dumps(entry.to_dict(), indent=2, ensure_ascii=False)
        encoded = text.replace("\n", "\n    ").encode()
        if i and document[position : position + len(_SEPARATOR)] != _SEPARATOR:
            return None
        position += len(_SEPARATOR) if i else 0
        if document[position : position + len(encoded)] != encoded:
            return None
        offsets.append((position, position + len(encoded)))
        position += len(encoded)
    head = _hashed(document, 0, offsets[0][0])
    tail = _hashed(document, position, len(document))
    if max(head.end - head.offset, tail.end - tail.offset) > MAX_FRAME_BYTES:
        return None
    pages = []
    at = 0
    while at < len(entries):
        last = at
        while (
            last + 1 < len(entries)
            and last + 1 - at < PAGE_ENTRIES
            and offsets[last + 1][1] - offsets[at][0] <= PAGE_BYTES
        ):
            last += 1
        pages.append(Page(keys[last], _hashed(document, offsets[at][0], offsets[last][1])))
        at = last + 1
    index = ManifestIndex(
        archive=manifest.archive,
        codec=manifest.codec,
        compressed_bytes=manifest.totals.compressed_bytes,
        manifest=manifest.manifest,
        head=head,
        tail=tail,
        pages=tuple(pages),
    )
    index.check()
    return index.to_json()


def _hashed(document: bytes, start: int, end: int) -> Span:
    return Span(start, end, hashlib.sha256(document[start:end]).hexdigest())


def _span(raw: object) -> Span:
    if not isinstance(raw, list) or len(raw) != 3:
        raise CorruptArchive("manifest index: a range is not [offset, end, sha256]")
    return Span(_count(raw[0]), _count(raw[1]), _sha(raw[2]))


def _page(raw: object) -> Page:
    if not isinstance(raw, list) or len(raw) != 5:
        raise CorruptArchive("manifest index: a page is not [db, name, offset, end, sha256]")
    last = (_text(raw[0]), _text(raw[1]))
    return Page(last, Span(_count(raw[2]), _count(raw[3]), _sha(raw[4])))


def _text(value: object) -> str:
    if not isinstance(value, str) or len(value) > 4096:
        raise CorruptArchive("manifest index: a name is not a string of at most 4096 characters")
    return value


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1 << 53:
        raise CorruptArchive("manifest index: a number is not an integer in [0, 2**53]")
    return value


def _sha(value: object) -> str:
    if not isinstance(value, str) or len(value) != 64 or value.strip("0123456789abcdef"):
        raise CorruptArchive("manifest index: a sha256 is not 64 lower-case hex digits")
    return value
