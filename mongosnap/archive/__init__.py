"""The archive format: a compressed tar in mongodump's layout, with a manifest.

The layer knows nothing of S3 or of MongoDB connections: it writes into an
ObjectWriter and reads from an async iterator of bytes. docs/format.md is the
specification.
"""

from __future__ import annotations

from . import metadata, names
from .bsonstream import BsonSplitter, split_documents
from .manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    CollectionEntry,
    Manifest,
    MemberRange,
    SourceInfo,
    Totals,
    archive_name,
    manifest_key,
    parse_archive_name,
)
from .metadata import CollectionMetadata, build_metadata, convert_legacy_index, parse_metadata
from .names import MANIFEST_MEMBER, member_name, validate_member_name
from .reader import TarMember, read_archive
from .writer import ArchiveWriter

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_MEMBER",
    "ArchiveWriter",
    "BsonSplitter",
    "CollectionEntry",
    "CollectionMetadata",
    "Manifest",
    "MemberRange",
    "SourceInfo",
    "TarMember",
    "Totals",
    "archive_name",
    "build_metadata",
    "convert_legacy_index",
    "manifest_key",
    "member_name",
    "metadata",
    "names",
    "parse_archive_name",
    "parse_metadata",
    "read_archive",
    "split_documents",
    "validate_member_name",
]
