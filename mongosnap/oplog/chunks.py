"""Oplog chunk objects, their sidecars, gap objects, and what a destination covers.

Layout under a destination (docs/format.md, "Oplog chunks")::

    oplog/<first>_<last>.bson.gz         raw oplog entries, one compressed member
    oplog/<first>_<last>.bson.gz.json    its sidecar, written last
    oplog/<first>_<last>.bson.gz.age     an encrypted chunk: an age file of the above
    oplog/<first>_<last>.bson.gz.age.json  its sidecar, in the clear
    oplog/<after>_<before>.gap.json      a span whose entries may be missing

``<first>`` etc. are ``Ts.key()`` (fixed width), so keys sort by time. A chunk
without a sidecar is incomplete and ignored. Continuity is explicit: a
sidecar's ``prev_ts`` is the ts of the entry just before its first one in the
stream that wrote it (the previous chunk's ``last_ts``), or null when the
chunk starts a new span; coverage is never inferred from timing.

An encrypted chunk's sidecar stays clear (prune and coverage need its time
bounds and sizes without a key) and names no namespace; its ``sha256`` is
the stored ciphertext's, and the payload is authenticated by age.

A sidecar or gap object that cannot be read costs only its own span: the
chunk is left out (its span shows as a gap naming it) and reported as
unusable, one written by a newer format version is skipped with a warning,
and an unreadable gap object still counts as the gap its key names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .._errors import CorruptArchive, NoIdentity
from ..archive.jsonlimits import bounded_text
from ..codecs import CODECS, Codec
from ..storage import Storage
from .position import Ts

if TYPE_CHECKING:
    from ..crypto.keys import Identity, Recipient

PREFIX = "oplog/"
SIDECAR_SUFFIX = ".json"
GAP_SUFFIX = ".gap.json"
CHUNK_FORMAT = "mongosnap-oplog-chunk"
GAP_FORMAT = "mongosnap-oplog-gap"
FORMAT_VERSION = 1
MAX_SIDECAR_BYTES = 1 << 20
# What a sidecar or gap object may make the parser build: the schema nests 2
# levels and holds about 30 values; the bounds leave room, not a recursion.
MAX_SIDECAR_DEPTH = 8
MAX_SIDECAR_VALUES = 10_000
MAX_CHUNK_BYTES = 1 << 30

_TS = r"\d{10}-\d{10}"
ENCRYPTED_SUFFIX = ".age"
_CHUNK_RE = re.compile(rf"^oplog/({_TS})_({_TS})\.bson(\.gz|\.zst)(\.age)?$")
_GAP_RE = re.compile(rf"^oplog/({_TS})_({_TS})\.gap\.json$")
_SUFFIX = {".gz": "gzip", ".zst": "zstd"}

log = logging.getLogger("mongosnap.oplog")


NEWER_FORMAT = "written by a newer format version"
"""The note on a CorruptArchive for a later ``format_version`` than this release
reads (a note, not a subclass: every error class has its own exit code)."""


def newer_format(exc: BaseException) -> bool:
    return NEWER_FORMAT in getattr(exc, "__notes__", ())


def chunk_key(first: Ts, last: Ts, codec: Codec, *, encrypted: bool = False) -> str:
    key = f"{PREFIX}{first.key()}_{last.key()}.bson{codec.suffix.removeprefix('.tar')}"
    return key + ENCRYPTED_SUFFIX if encrypted else key


def sidecar_key(chunk: str) -> str:
    return chunk + SIDECAR_SUFFIX


def gap_key(after: Ts, before: Ts) -> str:
    return f"{PREFIX}{after.key()}_{before.key()}{GAP_SUFFIX}"


def parse_chunk_key(key: str) -> tuple[Ts, Ts, str] | None:
    """(first, last, codec name) of a chunk object key, None for any other key."""
    found = _CHUNK_RE.match(key)
    if found is None:
        return None
    return Ts.from_key(found[1]), Ts.from_key(found[2]), _SUFFIX[found[3]]


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class ChunkInfo:
    """A chunk's sidecar: what the object holds and where it joins the stream."""

    object: str
    codec: str
    first_ts: Ts
    last_ts: Ts
    prev_ts: Ts | None
    count: int
    bson_bytes: int
    sha256: str
    object_bytes: int
    source: str
    created: datetime
    key: str = field(default="", compare=False)
    encrypted: bool = False
    """An age file; ``sha256`` and ``object_bytes`` are then the ciphertext's."""

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "format": CHUNK_FORMAT,
            "format_version": FORMAT_VERSION,
            "object": self.object,
            "codec": self.codec,
            "first_ts": self.first_ts.to_json(),
            "last_ts": self.last_ts.to_json(),
            "prev_ts": None if self.prev_ts is None else self.prev_ts.to_json(),
            "count": self.count,
            "bytes": self.bson_bytes,
            "sha256": self.sha256,
            "object_bytes": self.object_bytes,
            "source": self.source,
            "created": _iso(self.created),
        }
        if self.encrypted:  # absent otherwise: a plain chunk's sidecar is unchanged
            doc["encrypted"] = True
        return (json.dumps(doc, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, key: str) -> ChunkInfo:
        """Parse a sidecar; CorruptArchive naming the key on anything malformed."""
        raw = _versioned(data, f"oplog sidecar {key}", CHUNK_FORMAT, "oplog chunk sidecar")
        try:
            info = cls(
                object=_str(raw["object"]),
                codec=_str(raw["codec"]),
                first_ts=Ts.from_json(raw["first_ts"]),
                last_ts=Ts.from_json(raw["last_ts"]),
                prev_ts=None if raw["prev_ts"] is None else Ts.from_json(raw["prev_ts"]),
                count=_int(raw["count"]),
                bson_bytes=_int(raw["bytes"]),
                sha256=_str(raw["sha256"]),
                object_bytes=_int(raw["object_bytes"]),
                source=_str(raw["source"]),
                created=datetime.fromisoformat(_str(raw["created"]).replace("Z", "+00:00")),
                key=key,
                encrypted=_bool(raw.get("encrypted", False)),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptArchive(f"oplog sidecar {key}: {exc}") from None
        if info.codec not in CODECS or sidecar_key(f"{PREFIX}{info.object}") != key:
            raise CorruptArchive(f"oplog sidecar {key}: names another object or codec")
        if info.encrypted != info.object.endswith(ENCRYPTED_SUFFIX):
            raise CorruptArchive(f"oplog sidecar {key}: encrypted, or not, unlike its object")
        if info.count < 1 or info.first_ts > info.last_ts:
            raise CorruptArchive(f"oplog sidecar {key}: inconsistent count or timestamps")
        return info

    @property
    def object_key(self) -> str:
        return PREFIX + self.object


@dataclass(frozen=True)
class GapInfo:
    """Entries with after < ts < before may be missing from the archive."""

    after: Ts
    before: Ts
    detected: datetime
    reason: str
    key: str = field(default="", compare=False)

    def to_json(self) -> bytes:
        doc = {
            "format": GAP_FORMAT,
            "format_version": FORMAT_VERSION,
            "after": self.after.to_json(),
            "before": self.before.to_json(),
            "detected": _iso(self.detected),
            "reason": self.reason,
        }
        return (json.dumps(doc, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, key: str) -> GapInfo:
        raw = _versioned(data, f"oplog gap object {key}", GAP_FORMAT, "oplog gap object")
        try:
            return cls(
                Ts.from_json(raw["after"]),
                Ts.from_json(raw["before"]),
                datetime.fromisoformat(_str(raw["detected"]).replace("Z", "+00:00")),
                _str(raw["reason"]),
                key,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptArchive(f"oplog gap object {key}: {exc}") from None


def _versioned(data: bytes, where: str, fmt: str, kind: str) -> dict[str, Any]:
    """A sidecar or gap object's JSON object, once its ``format`` and version are
    known; CorruptArchive starting with ``where`` otherwise (or when over a limit)."""
    text = bounded_text(
        data,
        where,
        max_bytes=MAX_SIDECAR_BYTES,
        max_depth=MAX_SIDECAR_DEPTH,
        max_values=MAX_SIDECAR_VALUES,
        refuse=CorruptArchive,
    )
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise CorruptArchive(f"{where}: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != fmt:
        raise CorruptArchive(f"{where}: not a format_version {FORMAT_VERSION} {kind}")
    version = raw.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        newer = CorruptArchive(
            f"{where}: format_version {version}, newer than this release reads "
            f"({FORMAT_VERSION}); upgrade mongosnap to use it"
        )
        newer.add_note(NEWER_FORMAT)
        raise newer
    if version != FORMAT_VERSION:
        raise CorruptArchive(f"{where}: not a format_version {FORMAT_VERSION} {kind}")
    return raw


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("expected a non-negative integer")
    return value


def encode_chunk(
    entries: Sequence[bytes], codec: Codec, recipients: Sequence[Recipient] | None = None
) -> tuple[bytes, bytes, str]:
    """(raw BSON, stored object, SHA-256): the object is compressed, and with
    ``recipients`` an age file, whose SHA-256 is then the one given (a key
    holder learns nothing from a hash of the plaintext; age authenticates it).
    Blocking (scrypt, KMS): call it in a thread."""
    raw = b"".join(entries)
    packed = codec.compress(raw)
    if not recipients:
        return raw, packed, hashlib.sha256(raw).hexdigest()
    from ..crypto.file import encrypt

    sealed = encrypt(packed, recipients)
    return raw, sealed, hashlib.sha256(sealed).hexdigest()


def decode_chunk(
    data: bytes, info: ChunkInfo, identities: Sequence[Identity] | None = None
) -> bytes:
    """The raw BSON of a chunk object, checked against its sidecar.

    An encrypted chunk is checked against its ciphertext's size and SHA-256,
    then opened with ``identities`` (NoIdentity without one that opens it,
    DecryptionFailed if it does not authenticate). Blocking: call it in a thread.
    """
    if info.encrypted:
        if len(data) != info.object_bytes or hashlib.sha256(data).hexdigest() != info.sha256:
            raise CorruptArchive(f"oplog chunk {info.object_key}: bytes or SHA-256 differ")
        if not identities:
            raise NoIdentity(f"oplog chunk {info.object_key} is encrypted and no key was given")
        from ..crypto.file import decrypt

        data = decrypt(data, identities)
    decoder = CODECS[info.codec]().decompressor(max_output=max(info.bson_bytes, 1))
    raw = b"".join(decoder.feed(data))
    decoder.close()
    plain_ok = info.encrypted or hashlib.sha256(raw).hexdigest() == info.sha256
    if len(raw) != info.bson_bytes or not plain_ok:
        raise CorruptArchive(f"oplog chunk {info.object_key}: bytes or SHA-256 differ")
    return raw


def split_entries(raw: bytes) -> list[bytes]:
    """Concatenated BSON documents, cut at their length prefixes."""
    out, offset = [], 0
    while offset < len(raw):
        size = int.from_bytes(raw[offset : offset + 4], "little")
        if size < 5 or offset + size > len(raw):
            raise CorruptArchive(f"oplog chunk: bad document length {size} at {offset}")
        out.append(raw[offset : offset + size])
        offset += size
    return out


@dataclass(frozen=True)
class Span:
    """A run of chunks, each continuing the previous one: [first, last] is covered."""

    first: Ts
    last: Ts
    chunks: int
    entries: int


@dataclass(frozen=True)
class Unusable:
    """A chunk whose sidecar cannot be used; ``first``/``last`` come from its key."""

    key: str
    """The sidecar's key."""
    first: Ts
    last: Ts
    reason: str
    newer: bool = False
    """Written by a later format version (skipped), not corrupt."""


@dataclass(frozen=True)
class Coverage:
    """What a destination's oplog chunks cover, in time order.

    ``gaps`` holds the recorded gap objects plus any break between spans that
    no gap object explains (reason "unrecorded", or the unusable chunk that
    caused it); ``incomplete`` lists chunk objects without a sidecar;
    ``unusable`` the chunks left out because their sidecar cannot be used.
    """

    chunks: list[ChunkInfo]
    spans: list[Span]
    gaps: list[GapInfo]
    incomplete: list[str]
    unusable: list[Unusable] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spans": [
                {
                    "first_ts": str(s.first),
                    "last_ts": str(s.last),
                    "first_time": _iso(datetime.fromtimestamp(s.first.t, UTC)),
                    "last_time": _iso(datetime.fromtimestamp(s.last.t, UTC)),
                    "chunks": s.chunks,
                    "entries": s.entries,
                }
                for s in self.spans
            ],
            "gaps": [
                {"after": str(g.after), "before": str(g.before), "reason": g.reason}
                for g in self.gaps
            ],
            "incomplete": self.incomplete,
            "unusable": [
                {"sidecar": u.key, "first_ts": str(u.first), "last_ts": str(u.last)}
                | {"reason": u.reason, "newer_format": u.newer}
                for u in self.unusable
            ],
        }


async def read_coverage(storage: Storage) -> Coverage:
    """List ``oplog/``: complete chunks (by sidecar), gap objects, incomplete chunks.

    Never fails on one object's content: an unusable sidecar or gap object is
    logged as a warning and reported (module doc)."""
    listed = {info.key: info.size async for info in storage.list(PREFIX)}
    chunks: list[ChunkInfo] = []
    gaps: list[GapInfo] = []
    incomplete: list[str] = []
    unusable: list[Unusable] = []
    for key in listed:
        if (named := _GAP_RE.match(key)) is not None:
            gaps.append(await _read_gap(storage, key, listed[key], named))
        elif (parsed := parse_chunk_key(key)) is not None:
            side = sidecar_key(key)
            if side not in listed:
                incomplete.append(key)
                continue
            try:
                chunks.append(ChunkInfo.from_json(await _small(storage, side, listed[side]), side))
            except CorruptArchive as exc:
                unusable.append(_unusable(side, parsed[0], parsed[1], exc))
    chunks.sort(key=lambda c: (c.first_ts, c.last_ts))
    unusable.sort(key=lambda u: (u.first, u.last))
    spans, breaks = _spans(chunks)
    recorded = {(g.after, g.before) for g in gaps}
    for after, before in breaks:
        explained = any(g.after <= after and before <= g.before for g in gaps)
        if not explained and (after, before) not in recorded:
            gaps.append(GapInfo(after, before, datetime.now(UTC), _why(after, before, unusable)))
    gaps.sort(key=lambda g: (g.after, g.before))
    return Coverage(chunks, spans, gaps, incomplete, unusable)


async def _small(storage: Storage, key: str, size: int) -> bytes:
    """A sidecar or gap object; CorruptArchive, unread, when over the limit."""
    if size > MAX_SIDECAR_BYTES:
        raise CorruptArchive(f"{key}: {size} bytes, over the {MAX_SIDECAR_BYTES} limit")
    return await storage.read_bytes(key, limit=MAX_SIDECAR_BYTES)


async def _read_gap(storage: Storage, key: str, size: int, named: re.Match[str]) -> GapInfo:
    """A gap object; one that cannot be read still records the gap its key names."""
    try:
        return GapInfo.from_json(await _small(storage, key, size), key)
    except CorruptArchive as exc:
        after, before = Ts.from_key(named[1]), Ts.from_key(named[2])
        log.warning("%s; counted as a gap after %s, before %s", exc, after, before)
        return GapInfo(after, before, datetime.now(UTC), f"unreadable gap object: {exc}", key)


def _unusable(side: str, first: Ts, last: Ts, exc: CorruptArchive) -> Unusable:
    newer = newer_format(exc)
    what = "skipped" if newer else "left out"
    log.warning("%s; chunk %s..%s %s (its span shows as a gap)", exc, first, last, what)
    return Unusable(side, first, last, str(exc), newer)


def _why(after: Ts, before: Ts, unusable: list[Unusable]) -> str:
    """A break's reason: the unusable chunk inside it, else "unrecorded"."""
    inside = [u for u in unusable if after <= u.last and u.first <= before]
    if not inside:
        return "unrecorded"
    return f"unusable chunk: {inside[0].reason}"


def _spans(chunks: list[ChunkInfo]) -> tuple[list[Span], list[tuple[Ts, Ts]]]:
    spans: list[Span] = []
    breaks: list[tuple[Ts, Ts]] = []
    for chunk in chunks:
        if spans and chunk.prev_ts == spans[-1].last:
            s = spans[-1]
            spans[-1] = Span(s.first, chunk.last_ts, s.chunks + 1, s.entries + chunk.count)
            continue
        if spans:
            breaks.append((spans[-1].last, chunk.first_ts))
        spans.append(Span(chunk.first_ts, chunk.last_ts, 1, chunk.count))
    return spans, breaks
