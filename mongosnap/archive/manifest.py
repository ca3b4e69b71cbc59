"""The manifest: what an archive holds and where, plus archive naming.

The manifest is the archive's last member (``mongosnap/manifest.json``) and a
sidecar object ``<archive key>.manifest.json`` with the same bytes. See
docs/format.md for the schema and the ordering rules.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from .._errors import CorruptArchive
from ..codecs import CODECS, Codec
from .jsonlimits import bounded_text
from .names import DUMP_ROOT, MANIFEST_MEMBER, member_name, validate_member_name

FORMAT_NAME = "mongosnap-archive"
FORMAT_VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"
ENCRYPTED_SUFFIX = ".age"
"""Added to an encrypted archive's name (and to its sealed sidecar's): an age file."""
SEALED_SUFFIX = MANIFEST_SUFFIX + ENCRYPTED_SUFFIX
MAX_MANIFEST_BYTES = 16 << 20
"""Largest sidecar or embedded manifest read (~30,000 collections of typical names)."""
MAX_COLLECTIONS = 20_000
"""Most collection entries one manifest may list."""
MAX_MANIFEST_DEPTH = 8
"""Deepest JSON nesting accepted (the schema needs 4)."""
MAX_MANIFEST_VALUES = 2_000_000
"""Most JSON values accepted, counted as containers plus separators (about 36 per
collection entry)."""
MAX_OFFSET = 1 << 53
CLOCK_TOLERANCE = timedelta(minutes=15)
"""How far two clocks may disagree before an archive's time is not trusted
(docs/format.md, section 2): NTP keeps clocks within seconds; a backup's
start, its name and its storage's write time may be minutes apart."""
MAX_TEXT = 4096

COMPLETE = "complete"
VANISHED = "vanished"
STATUSES = (COMPLETE, VANISHED)
VANISHED_ROOT = "gone"
"""Where a vanished collection's members go: outside ``dump/`` (so mongorestore
never sees them) and as long as ``dump`` (so a reserved tar header keeps its length)."""

_NAME_RE = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-mongodb-dump\.tar(?:\.gz|\.zst)?(?:\.age)?$"
)


# ------------------------------------------------------------------ naming


def archive_name(
    when: datetime, codec: Codec | str, prefix: str = "", *, encrypted: bool = False
) -> str:
    """``<prefix>YYYY-MM-DD-HH-MM-SS-mongodb-dump.tar.gz`` (``.tar.zst``) in UTC,
    ``.age`` added when ``encrypted``."""
    if when.tzinfo is None:
        raise ValueError("archive_name needs an aware datetime")
    suffix = CODECS[codec].suffix if isinstance(codec, str) else codec.suffix
    sealed = ENCRYPTED_SUFFIX if encrypted else ""
    return f"{prefix}{when.astimezone(UTC):%Y-%m-%d-%H-%M-%S}-mongodb-dump{suffix}{sealed}"


def is_encrypted(key: str) -> bool:
    """Whether an archive key names an encrypted archive (``….tar.gz.age``)."""
    return key.endswith(ENCRYPTED_SUFFIX)


def parse_archive_name(key: str) -> datetime | None:
    """The UTC time an archive key names, or None if it is not an archive name.

    Legacy archives were named from the local clock; their time is read as UTC.
    """
    found = _NAME_RE.search(key)
    if found is None:
        return None
    try:
        year, month, day, hour, minute, second = (int(g) for g in found.groups())
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None


def manifest_key(archive_key: str) -> str:
    """The sidecar manifest's key for an archive key (for an encrypted archive,
    the clear sidecar: docs/encryption.md)."""
    return archive_key + MANIFEST_SUFFIX


def sealed_key(archive_key: str) -> str:
    """An encrypted archive's sealed sidecar: its full manifest, encrypted."""
    return archive_key + SEALED_SUFFIX


# ----------------------------------------------------------------- schema


@dataclass(frozen=True)
class MemberRange:
    """Where one tar member lives in the compressed archive.

    ``offset`` is the first byte of its header's compressed member, ``end`` the
    first byte after its last body member; ``size`` is the member's file size.
    """

    name: str
    offset: int
    end: int
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "offset": self.offset, "end": self.end, "size": self.size}

    @classmethod
    def from_dict(cls, raw: object, where: str) -> MemberRange:
        d = _fields(raw, where, ("name", "offset", "end", "size"))
        rng = cls(
            _text(d["name"], f"{where}.name"),
            _count(d["offset"], f"{where}.offset"),
            _count(d["end"], f"{where}.end"),
            _count(d["size"], f"{where}.size"),
        )
        if rng.end < rng.offset:
            raise CorruptArchive(f"manifest {where}: end before offset")
        return rng


@dataclass(frozen=True)
class SourceInfo:
    """Where the data came from: hosts (never credentials) and server version."""

    hosts: Sequence[str] = ()
    server_version: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "hosts", tuple(self.hosts))

    def to_dict(self) -> dict[str, Any]:
        return {"hosts": list(self.hosts), "server_version": self.server_version}

    @classmethod
    def from_dict(cls, raw: object) -> SourceInfo:
        d = _fields(raw, "source", ("hosts", "server_version"))
        hosts = tuple(_text(h, "source.hosts[]") for h in _list(d["hosts"], "source.hosts"))
        if any("@" in h for h in hosts):
            raise CorruptArchive("manifest source.hosts carries credentials")
        version = d["server_version"]
        return cls(hosts, None if version is None else _text(version, "source.server_version"))


def vanished_member_name(name: str) -> str:
    """A ``dump/…`` member name moved under ``gone/``; same length, same tar header length."""
    if not name.startswith(DUMP_ROOT + "/"):
        raise ValueError(f"not a dump member: {name!r}")
    return VANISHED_ROOT + name[len(DUMP_ROOT) :]


@dataclass(frozen=True)
class CollectionEntry:
    """One collection: its counts, checksum and the ranges of its two members.

    ``status`` is ``complete`` (a real snapshot) or ``vanished`` (dropped or
    replaced while the backup ran: members, if any, live under ``gone/`` and
    must never be restored). Only a non-complete status is written to JSON,
    so a manifest without the key means complete (docs/format.md, section 7).
    """

    database: str
    name: str
    type: str
    documents: int
    bson_bytes: int
    sha256: str
    metadata: MemberRange
    bson: MemberRange | None
    status: str = COMPLETE

    def to_dict(self) -> dict[str, Any]:
        out = {
            "database": self.database,
            "name": self.name,
            "type": self.type,
            "documents": self.documents,
            "bson_bytes": self.bson_bytes,
            "sha256": self.sha256,
            "metadata": self.metadata.to_dict(),
            "bson": None if self.bson is None else self.bson.to_dict(),
        }
        if self.status != COMPLETE:
            out["status"] = self.status
        return out

    @classmethod
    def from_dict(cls, raw: object, where: str) -> CollectionEntry:
        keys = ("database", "name", "type", "documents", "bson_bytes", "sha256", "metadata", "bson")
        with_status = isinstance(raw, dict) and "status" in raw
        d = _fields(raw, where, (*keys, "status") if with_status else keys)
        entry = cls(
            _text(d["database"], f"{where}.database"),
            _text(d["name"], f"{where}.name"),
            _text(d["type"], f"{where}.type"),
            _count(d["documents"], f"{where}.documents"),
            _count(d["bson_bytes"], f"{where}.bson_bytes"),
            _text(d["sha256"], f"{where}.sha256"),
            MemberRange.from_dict(d["metadata"], f"{where}.metadata"),
            None if d["bson"] is None else MemberRange.from_dict(d["bson"], f"{where}.bson"),
            _text(d["status"], f"{where}.status") if with_status else COMPLETE,
        )
        entry.check(where)
        return entry

    def check(self, where: str) -> None:
        """Raise CorruptArchive unless the entry is consistent with itself."""
        if self.type not in ("collection", "view", "timeseries"):
            raise CorruptArchive(f"manifest {where}: unknown type {self.type!r}")
        if self.status not in STATUSES:
            raise CorruptArchive(f"manifest {where}: unknown status {self.status!r}")
        if len(self.sha256) != 64 or self.sha256.strip("0123456789abcdef"):
            raise CorruptArchive(f"manifest {where}: sha256 is not 64 lower-case hex digits")
        try:
            expected = self._member("metadata")
        except ValueError as exc:
            raise CorruptArchive(f"manifest {where}: {exc}") from exc
        if self.metadata.name != expected:
            raise CorruptArchive(f"manifest {where}: metadata member should be {expected!r}")
        if self.type == "view" or (self.status == VANISHED and self.bson is None):
            # a view has no data; a collection that vanished before its turn neither
            if self.bson is not None or self.documents or self.bson_bytes:
                what = "a view" if self.type == "view" else "a collection vanished before its dump"
                raise CorruptArchive(f"manifest {where}: {what} has no data")
            return
        expected = self._member("bson")
        if self.bson is None or self.bson.name != expected:
            raise CorruptArchive(f"manifest {where}: data member should be {expected!r}")
        if self.bson.size != self.bson_bytes:
            raise CorruptArchive(f"manifest {where}: bson_bytes differs from the member size")

    def _member(self, kind: Literal["metadata", "bson"]) -> str:
        name = member_name(self.database, self.name, kind, collection_type=self.type)
        return vanished_member_name(name) if self.status == VANISHED else name


@dataclass(frozen=True)
class Totals:
    """Whole-archive sizes: tar bytes before compression, object bytes after."""

    tar_bytes: int = 0
    compressed_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"tar_bytes": self.tar_bytes, "compressed_bytes": self.compressed_bytes}

    @classmethod
    def from_dict(cls, raw: object) -> Totals:
        d = _fields(raw, "totals", ("tar_bytes", "compressed_bytes"))
        return cls(
            _count(d["tar_bytes"], "totals.tar_bytes"),
            _count(d["compressed_bytes"], "totals.compressed_bytes"),
        )


OPLOG_MEMBER = "dump/oplog.bson"


@dataclass(frozen=True)
class OplogWindow:
    """``backup --oplog``: the oplog entries captured while the dump ran.

    ``first_ts`` was the newest oplog entry before the dump, ``last_ts`` the
    newest after it: replaying ``member`` brings the data to ``last_ts``, the
    archive's consistent point. Timestamps are (seconds, increment).
    """

    first_ts: tuple[int, int]
    last_ts: tuple[int, int]
    entries: int
    sha256: str
    member: MemberRange

    def to_dict(self) -> dict[str, Any]:
        return {
            "first_ts": {"t": self.first_ts[0], "i": self.first_ts[1]},
            "last_ts": {"t": self.last_ts[0], "i": self.last_ts[1]},
            "entries": self.entries,
            "sha256": self.sha256,
            "member": self.member.to_dict(),
        }

    @classmethod
    def from_dict(cls, raw: object) -> OplogWindow:
        d = _fields(raw, "oplog", ("first_ts", "last_ts", "entries", "sha256", "member"))
        window = cls(
            _ts(d["first_ts"], "oplog.first_ts"),
            _ts(d["last_ts"], "oplog.last_ts"),
            _count(d["entries"], "oplog.entries"),
            _text(d["sha256"], "oplog.sha256"),
            MemberRange.from_dict(d["member"], "oplog.member"),
        )
        if window.member.name != OPLOG_MEMBER or window.first_ts > window.last_ts:
            raise CorruptArchive(f"manifest oplog: member must be {OPLOG_MEMBER!r}, ts ordered")
        if len(window.sha256) != 64 or window.sha256.strip("0123456789abcdef"):
            raise CorruptArchive("manifest oplog.sha256 is not 64 lower-case hex digits")
        return window


AUTH_COLLECTIONS = ("system.users", "system.roles", "system.version")
"""The admin collections ``backup --users-and-roles`` stores, in this order."""


def auth_member_name(database: str, collection: str) -> str:
    """``dump/<db>/$admin.system.users.bson``: mongodump --dumpDbUsersAndRoles's names."""
    return f"{DUMP_ROOT}/{database}/$admin.{collection}.bson"


@dataclass(frozen=True)
class AuthMember:
    """``backup --users-and-roles``: one database's documents of an admin collection.

    ``system.users`` and ``system.roles`` hold the database's users and roles
    (credentials as the server stores them: salted SCRAM keys, never a
    password); ``system.version`` the server's auth schema document, which
    mongorestore --restoreDbUsersAndRoles reads. Stored raw, as read.
    """

    database: str
    collection: str
    documents: int
    sha256: str
    member: MemberRange

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "collection": self.collection,
            "documents": self.documents,
            "sha256": self.sha256,
            "member": self.member.to_dict(),
        }

    @classmethod
    def from_dict(cls, raw: object, where: str) -> AuthMember:
        d = _fields(raw, where, ("database", "collection", "documents", "sha256", "member"))
        entry = cls(
            _text(d["database"], f"{where}.database"),
            _text(d["collection"], f"{where}.collection"),
            _count(d["documents"], f"{where}.documents"),
            _text(d["sha256"], f"{where}.sha256"),
            MemberRange.from_dict(d["member"], f"{where}.member"),
        )
        entry.check(where)
        return entry

    def check(self, where: str) -> None:
        if self.collection not in AUTH_COLLECTIONS:
            raise CorruptArchive(f"manifest {where}: not an auth collection {self.collection!r}")
        if self.member.name != auth_member_name(self.database, self.collection):
            raise CorruptArchive(f"manifest {where}: member name does not match its collection")
        if len(self.sha256) != 64 or self.sha256.strip("0123456789abcdef"):
            raise CorruptArchive(f"manifest {where}: sha256 is not 64 lower-case hex digits")


def _ts(raw: object, where: str) -> tuple[int, int]:
    d = _fields(raw, where, ("t", "i"))
    return _count(d["t"], f"{where}.t"), _count(d["i"], f"{where}.i")


_NO_MEMBER = MemberRange(MANIFEST_MEMBER, 0, 0, 0)
_TOP_KEYS = (
    "format",
    "format_version",
    "tool_version",
    "archive",
    "codec",
    "created",
    "started",
    "finished",
    "source",
    "databases",
    "collections",
    "manifest",
    "totals",
)


@dataclass(frozen=True)
class Manifest:
    """Everything an archive holds. ``manifest`` and ``totals`` are set by sealed()."""

    archive: str
    codec: str
    tool_version: str
    created: datetime
    started: datetime
    finished: datetime
    source: SourceInfo = field(default_factory=SourceInfo)
    databases: Sequence[str] = ()
    collections: Sequence[CollectionEntry] = ()
    manifest: MemberRange = _NO_MEMBER
    totals: Totals = field(default_factory=Totals)
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    oplog: OplogWindow | None = None  # optional: written only by backup --oplog
    users: Sequence[AuthMember] = ()  # optional: written only by backup --users-and-roles
    server_time: datetime | None = None
    """Optional: the server's clock when the dump started, written only when it
    and the writer's clock (``started``) disagree by more than CLOCK_TOLERANCE."""

    def __post_init__(self) -> None:  # lists in, tuples kept: the manifest stays immutable
        object.__setattr__(self, "databases", tuple(self.databases))
        object.__setattr__(self, "collections", tuple(self.collections))
        object.__setattr__(self, "users", tuple(self.users))

    def to_json(self) -> bytes:
        """UTF-8 JSON, two-space indented, keys in schema order, newline-terminated."""
        self.check()
        return self._template().fill(self.manifest, self.totals)

    def _template(self) -> _SealTemplate:
        """The JSON with ``manifest`` and ``totals`` left to fill: encoded once."""
        doc = {
            "format": self.format,
            "format_version": self.format_version,
            "tool_version": self.tool_version,
            "archive": self.archive,
            "codec": self.codec,
            "created": _iso(self.created),
            "started": _iso(self.started),
            "finished": _iso(self.finished),
        }
        if self.server_time is not None:
            doc["server_time"] = _iso(self.server_time)
        doc |= {
            "source": self.source.to_dict(),
            "databases": list(self.databases),
            "collections": [c.to_dict() for c in self.collections],
            "manifest": _SEAL_MARK,
        }
        if self.users:
            doc["users"] = [u.to_dict() for u in self.users]
        if self.oplog is not None:
            doc["oplog"] = self.oplog.to_dict()
        text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
        head, mark, tail = text.partition(json.dumps(_SEAL_MARK))
        if not mark or _SEAL_MARK_JSON in tail:
            raise RuntimeError("the manifest template mark is not unique")
        return _SealTemplate(head, tail)

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse and validate; CorruptArchive with the reason on anything malformed."""
        text = bounded_text(
            data,
            "manifest",
            max_bytes=MAX_MANIFEST_BYTES,
            max_depth=MAX_MANIFEST_DEPTH,
            max_values=MAX_MANIFEST_VALUES,
            refuse=CorruptArchive,
        )
        try:
            raw = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        except ValueError as exc:
            raise CorruptArchive(f"manifest is not valid JSON: {exc}") from exc
        d = _fields(raw, "manifest", _TOP_KEYS, optional=("oplog", "server_time", "users"))
        if d["format"] != FORMAT_NAME:
            raise CorruptArchive(f"not a {FORMAT_NAME} manifest: format {d['format']!r}")
        if d["format_version"] != FORMAT_VERSION or isinstance(d["format_version"], bool):
            raise CorruptArchive(f"unsupported format_version {d['format_version']!r}")
        collections = _list(d["collections"], "collections")
        if len(collections) > MAX_COLLECTIONS:
            raise CorruptArchive(f"manifest lists more than {MAX_COLLECTIONS} collections")
        manifest = cls(
            archive=_text(d["archive"], "archive"),
            codec=_text(d["codec"], "codec"),
            tool_version=_text(d["tool_version"], "tool_version"),
            created=_parse_time(d["created"], "created"),
            started=_parse_time(d["started"], "started"),
            finished=_parse_time(d["finished"], "finished"),
            source=SourceInfo.from_dict(d["source"]),
            databases=tuple(_text(x, "databases[]") for x in _list(d["databases"], "databases")),
            collections=tuple(
                CollectionEntry.from_dict(c, f"collections[{i}]") for i, c in enumerate(collections)
            ),
            manifest=MemberRange.from_dict(d["manifest"], "manifest"),
            totals=Totals.from_dict(d["totals"]),
            oplog=OplogWindow.from_dict(d["oplog"]) if "oplog" in d else None,
            users=tuple(
                AuthMember.from_dict(u, f"users[{i}]")
                for i, u in enumerate(_list(d.get("users", []), "users"))
            ),
            server_time=(
                _parse_time(d["server_time"], "server_time") if "server_time" in d else None
            ),
        )
        manifest.check()
        return manifest

    def check(self) -> None:
        """Raise CorruptArchive unless the manifest is consistent with itself."""
        if len(self.collections) > MAX_COLLECTIONS:
            raise CorruptArchive(f"manifest lists more than {MAX_COLLECTIONS} collections")
        if self.codec not in CODECS:
            raise CorruptArchive(f"manifest names an unknown codec {self.codec!r}")
        if len(set(self.databases)) != len(self.databases):
            raise CorruptArchive("manifest lists a database twice")
        if any("@" in h for h in self.source.hosts):
            raise CorruptArchive("manifest source.hosts carries credentials")
        seen: set[tuple[str, str]] = set()
        ranges: list[MemberRange] = []
        for i, entry in enumerate(self.collections):
            entry.check(f"collections[{i}]")
            if entry.database not in self.databases:
                raise CorruptArchive(f"manifest collections[{i}]: database not listed")
            if (entry.database, entry.name) in seen:
                raise CorruptArchive(f"manifest lists {entry.database}.{entry.name} twice")
            seen.add((entry.database, entry.name))
            ranges += [entry.metadata] if entry.bson is None else [entry.metadata, entry.bson]
        if self.manifest.name != MANIFEST_MEMBER:
            raise CorruptArchive(f"manifest member should be {MANIFEST_MEMBER!r}")
        for i, auth in enumerate(self.users):  # after every collection
            auth.check(f"users[{i}]")
            if auth.database not in self.databases:
                raise CorruptArchive(f"manifest users[{i}]: database not listed")
            ranges.append(auth.member)
        if self.oplog is not None:
            ranges.append(self.oplog.member)  # after every collection and user
        position = 0
        for rng in [*ranges, self.manifest]:
            validate_member_name(rng.name)
            if rng.offset < position or rng.end < rng.offset:
                raise CorruptArchive(f"manifest member ranges out of order at {rng.name!r}")
            position = rng.end
        if position > self.totals.compressed_bytes:
            raise CorruptArchive("manifest member ranges run past the archive's end")

    def sealed(self, plan: Callable[[int], tuple[MemberRange, Totals]]) -> tuple[Manifest, bytes]:
        """Fill in ``manifest`` and ``totals``; return the result and its JSON.

        ``plan(n)`` (ArchiveWriter.plan_finish) gives the manifest member's range
        and the archive totals for a manifest of ``n`` bytes. Both grow with
        ``n``, so iterating from ``n = 0`` climbs to the fixed point where the
        JSON describes itself.
        """
        template = self._template()
        length = 0
        for _ in range(16):
            member, totals = plan(length)
            data = template.fill(member, totals)
            if len(data) == length:
                sealed = replace(self, manifest=member, totals=totals)
                sealed.check()
                return sealed, data
            length = len(data)
        raise RuntimeError("manifest length did not settle")


_SEAL_MARK = "\u0000mongosnap: manifest and totals\u0000"  # no name can hold a NUL
_SEAL_MARK_JSON = json.dumps(_SEAL_MARK)


@dataclass(frozen=True)
class _SealTemplate:
    """A manifest's JSON around its ``manifest`` and ``totals`` values.

    sealed() tries several manifest lengths; re-encoding thousands of
    collections (json's indented encoder is pure Python) for each try cost
    more than the whole dump of a small collection. The two values are
    encoded here as json.dumps would nest them, so the bytes are the same.
    """

    head: str
    tail: str

    def fill(self, member: MemberRange, totals: Totals) -> bytes:
        inner = _nested(member.to_dict()) + ',\n  "totals": ' + _nested(totals.to_dict())
        data = (self.head + inner + self.tail).encode("utf-8")
        if len(data) > MAX_MANIFEST_BYTES:  # a reader would refuse it
            raise CorruptArchive(f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
        return data


def _nested(value: dict[str, Any]) -> str:
    """``value`` as json.dumps(indent=2) writes it one level deep."""
    return json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")


# ------------------------------------------------------------- validation


def _fields(
    raw: object, where: str, keys: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise CorruptArchive(f"manifest {where} is not an object")
    if set(raw) - set(optional) != set(keys):
        missing = sorted(set(keys) - set(raw))
        extra = sorted(set(raw) - set(keys) - set(optional))
        raise CorruptArchive(f"manifest {where}: missing {missing}, unexpected {extra}")
    return raw


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise CorruptArchive(f"manifest {where} is not a string of at most {MAX_TEXT} characters")
    return value


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_OFFSET:
        raise CorruptArchive(f"manifest {where} is not an integer in [0, 2**53]")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise CorruptArchive(f"manifest {where} is not an array")
    return value


def _iso(when: datetime) -> str:
    if when.tzinfo is None:
        raise ValueError("manifest times must be aware datetimes")
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_time(value: object, where: str) -> datetime:
    text = _text(value, where)
    if not text.endswith("Z"):
        raise CorruptArchive(f"manifest {where} is not a UTC time ending in Z")
    try:
        when = datetime.fromisoformat(text[:-1])
    except ValueError as exc:
        raise CorruptArchive(f"manifest {where} is not an ISO-8601 time") from exc
    if when.tzinfo is not None:
        raise CorruptArchive(f"manifest {where} has both an offset and Z")
    return when.replace(tzinfo=UTC)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise CorruptArchive("manifest repeats a key")
    return result


def _no_constant(name: str) -> Any:
    raise CorruptArchive(f"manifest contains {name}")
