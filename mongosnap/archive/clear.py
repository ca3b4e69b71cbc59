"""What an encrypted archive shows in the clear, and the binding inside its seal.

An encrypted archive (``….tar.gz.age``) has two sidecars (docs/encryption.md):

- the clear sidecar ``<archive>.manifest.json`` (ClearSidecar): enough for
  list, check, prune and ``verify --no-decrypt`` without a key: database
  names, times, sizes, codec, and the SHA-256 and size of the whole ciphertext
  object. No collection name, count or member range: those are secret;
- the sealed sidecar ``<archive>.manifest.json.age``: encrypted to the same
  recipients, its plaintext is one line of binding (SealBinding: the archive's
  name, its databases and the clear sidecar's ciphertext size and SHA-256)
  followed by the full manifest, byte-identical to the manifest member inside
  the archive.

This module only encodes and checks those bytes; it knows nothing of age.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .._errors import CorruptArchive
from .jsonlimits import bounded_text
from .manifest import Manifest

CLEAR_FORMAT = "mongosnap-encrypted-archive"
SEAL_FORMAT = "mongosnap-sealed-manifest"
CLEAR_VERSION = 1
MAX_CLEAR_BYTES = 1 << 20
_MAX_DATABASES = 10_000


@dataclass(frozen=True)
class ClearSidecar:
    """The clear sidecar of an encrypted archive."""

    archive: str
    codec: str
    tool_version: str
    databases: tuple[str, ...]
    created: datetime
    started: datetime
    finished: datetime
    tar_bytes: int
    compressed_bytes: int
    """The plaintext: the compressed tar stream the age file wraps."""
    encrypted_bytes: int
    """The archive object's size."""
    header_bytes: int
    """The age header's length: where the payload starts."""
    sha256: str
    """Of the whole archive object (the ciphertext)."""
    server_time: datetime | None = None

    @classmethod
    def of(cls, manifest: Manifest, *, size: int, header: int, sha256: str) -> ClearSidecar:
        """The clear part of ``manifest`` for the ciphertext that was stored."""
        return cls(
            archive=manifest.archive,
            codec=manifest.codec,
            tool_version=manifest.tool_version,
            databases=tuple(manifest.databases),
            created=manifest.created,
            started=manifest.started,
            finished=manifest.finished,
            tar_bytes=manifest.totals.tar_bytes,
            compressed_bytes=manifest.totals.compressed_bytes,
            encrypted_bytes=size,
            header_bytes=header,
            sha256=sha256,
            server_time=manifest.server_time,
        )

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "format": CLEAR_FORMAT,
            "format_version": CLEAR_VERSION,
            "tool_version": self.tool_version,
            "archive": self.archive,
            "codec": self.codec,
            "encrypted": True,
            "complete": True,
            "databases": list(self.databases),
            "created": _iso(self.created),
            "started": _iso(self.started),
            "finished": _iso(self.finished),
        }
        if self.server_time is not None:
            doc["server_time"] = _iso(self.server_time)
        doc["totals"] = {
            "tar_bytes": self.tar_bytes,
            "compressed_bytes": self.compressed_bytes,
            "encrypted_bytes": self.encrypted_bytes,
        }
        doc["age"] = {"header_bytes": self.header_bytes, "sha256": self.sha256}
        return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> ClearSidecar:
        raw = _load(data, "clear sidecar", MAX_CLEAR_BYTES)
        keys = {
            "format",
            "format_version",
            "tool_version",
            "archive",
            "codec",
            "encrypted",
            "complete",
            "databases",
            "created",
            "started",
            "finished",
            "totals",
            "age",
        }
        if set(raw) - {"server_time"} != keys:
            raise CorruptArchive("clear sidecar: unexpected or missing keys")
        if raw["format"] != CLEAR_FORMAT or raw["format_version"] != CLEAR_VERSION:
            raise CorruptArchive(f"not a {CLEAR_FORMAT} sidecar (version {CLEAR_VERSION})")
        if raw["encrypted"] is not True or raw["complete"] is not True:
            raise CorruptArchive("clear sidecar: not a complete encrypted archive")
        totals, age = _obj(raw["totals"], "totals"), _obj(raw["age"], "age")
        databases = raw["databases"]
        if not isinstance(databases, list) or len(databases) > _MAX_DATABASES:
            raise CorruptArchive("clear sidecar: databases is not a list")
        sha = _text(age.get("sha256"), "age.sha256")
        if len(sha) != 64 or sha.strip("0123456789abcdef"):
            raise CorruptArchive("clear sidecar: age.sha256 is not 64 lower-case hex digits")
        return cls(
            archive=_text(raw["archive"], "archive"),
            codec=_text(raw["codec"], "codec"),
            tool_version=_text(raw["tool_version"], "tool_version"),
            databases=tuple(_text(d, "databases[]") for d in databases),
            created=_time(raw["created"], "created"),
            started=_time(raw["started"], "started"),
            finished=_time(raw["finished"], "finished"),
            tar_bytes=_count(totals.get("tar_bytes"), "totals.tar_bytes"),
            compressed_bytes=_count(totals.get("compressed_bytes"), "totals.compressed_bytes"),
            encrypted_bytes=_count(totals.get("encrypted_bytes"), "totals.encrypted_bytes"),
            header_bytes=_count(age.get("header_bytes"), "age.header_bytes"),
            sha256=sha,
            server_time=_time(raw["server_time"], "server_time") if "server_time" in raw else None,
        )


def is_clear_sidecar(data: bytes) -> bool:
    """Whether sidecar bytes are an encrypted archive's clear sidecar (a cheap
    look at the opening, before either parser runs)."""
    return f'"format": "{CLEAR_FORMAT}"'.encode() in data[:200]


@dataclass(frozen=True)
class SealBinding:
    """The first line of a sealed sidecar: what the seal was made for."""

    archive: str
    databases: tuple[str, ...]
    encrypted_bytes: int
    sha256: str

    def seal(self, manifest: bytes) -> bytes:
        """The sealed sidecar's plaintext: this line, then the manifest as it is."""
        line = {
            "format": SEAL_FORMAT,
            "archive": self.archive,
            "databases": list(self.databases),
            "encrypted_bytes": self.encrypted_bytes,
            "sha256": self.sha256,
        }
        return json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n" + manifest

    @classmethod
    def open(cls, plaintext: bytes) -> tuple[SealBinding, bytes]:
        """Split a sealed sidecar's plaintext into its binding and manifest bytes."""
        line, newline, manifest = plaintext.partition(b"\n")
        if not newline:
            raise CorruptArchive("sealed sidecar: no binding line")
        raw = _load(line, "sealed sidecar", 64 << 10)
        if raw.get("format") != SEAL_FORMAT or set(raw) != {
            "format",
            "archive",
            "databases",
            "encrypted_bytes",
            "sha256",
        }:
            raise CorruptArchive(f"sealed sidecar: not a {SEAL_FORMAT} binding")
        databases = raw["databases"]
        if not isinstance(databases, list):
            raise CorruptArchive("sealed sidecar: databases is not a list")
        binding = cls(
            _text(raw["archive"], "archive"),
            tuple(_text(d, "databases[]") for d in databases),
            _count(raw["encrypted_bytes"], "encrypted_bytes"),
            _text(raw["sha256"], "sha256"),
        )
        return binding, manifest


def _load(data: bytes, what: str, limit: int) -> dict[str, Any]:
    text = bounded_text(
        data, what, max_bytes=limit, max_depth=4, max_values=100_000, refuse=CorruptArchive
    )
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise CorruptArchive(f"{what} is not valid JSON: {exc}") from exc
    return _obj(raw, what)


def _obj(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CorruptArchive(f"clear sidecar: {where} is not an object")
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or len(value) > 4096:
        raise CorruptArchive(f"sidecar {where} is not a short string")
    return value


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1 << 53:
        raise CorruptArchive(f"sidecar {where} is not an integer in [0, 2**53]")
    return value


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _time(value: object, where: str) -> datetime:
    text = _text(value, where)
    try:
        when = datetime.fromisoformat(text.removesuffix("Z"))
    except ValueError as exc:
        raise CorruptArchive(f"sidecar {where} is not an ISO-8601 time") from exc
    if not text.endswith("Z") or when.tzinfo is not None:
        raise CorruptArchive(f"sidecar {where} is not a UTC time ending in Z")
    return when.replace(tzinfo=UTC)
