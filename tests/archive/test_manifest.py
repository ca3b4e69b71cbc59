"""The manifest: round trip, self-describing seal, strict rejection; archive naming."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from archive_support import MemorySink

from mongosnap import CorruptArchive
from mongosnap.archive import (
    ArchiveWriter,
    CollectionEntry,
    Manifest,
    MemberRange,
    SourceInfo,
    Totals,
    archive_name,
    manifest_key,
    parse_archive_name,
)
from mongosnap.archive.manifest import AuthMember
from mongosnap.codecs import get_codec

EMPTY_SHA = hashlib.sha256(b"").hexdigest()
WHEN = datetime(2026, 3, 1, 2, 3, 4, tzinfo=UTC)


def sample() -> Manifest:
    users = CollectionEntry(
        "app",
        "users",
        "collection",
        10,
        700,
        hashlib.sha256(b"x").hexdigest(),
        MemberRange("dump/app/users.metadata.json", 0, 100, 60),
        MemberRange("dump/app/users.bson", 100, 400, 700),
    )
    view = CollectionEntry(
        "app",
        "adults",
        "view",
        0,
        0,
        EMPTY_SHA,
        MemberRange("dump/app/adults.metadata.json", 400, 480, 90),
        None,
    )
    series = CollectionEntry(
        "metrics",
        "temps",
        "timeseries",
        3,
        50,
        EMPTY_SHA,
        MemberRange("dump/metrics/temps.metadata.json", 480, 500, 10),
        MemberRange("dump/metrics/system.buckets.temps.bson", 500, 600, 50),
    )
    return Manifest(
        archive="2026-03-01-02-03-04-mongodb-dump.tar.gz",
        codec="gzip",
        tool_version="0.1.0",
        created=WHEN,
        started=WHEN + timedelta(microseconds=5),
        finished=WHEN + timedelta(seconds=3),
        source=SourceInfo(["db1:27017", "db2:27017"], "7.0.2"),
        databases=["app", "metrics"],
        collections=[users, view, series],
        manifest=MemberRange("mongosnap/manifest.json", 600, 1200, 500),
        totals=Totals(10_240, 2_300),
    )


def test_round_trip() -> None:
    manifest = sample()
    data = manifest.to_json()
    assert Manifest.from_json(data) == manifest
    assert Manifest.from_json(data).to_json() == data
    doc = json.loads(data)
    assert list(doc) == [
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
    ]
    assert doc["format"] == "mongosnap-archive" and doc["format_version"] == 1
    assert doc["created"] == "2026-03-01T02:03:04Z"
    assert doc["started"] == "2026-03-01T02:03:04.000005Z"


async def test_sealed_manifest_describes_its_own_member_and_the_whole_archive() -> None:
    for codec_name in ("gzip", "zstd", "none"):
        codec = get_codec(codec_name)
        sink = MemorySink()
        writer = ArchiveWriter(sink, codec)
        meta = await writer.add_file("dump/app/users.metadata.json", b"{}")
        data = await writer.add_file("dump/app/users.bson", b"\x05\x00\x00\x00\x00")
        entry = CollectionEntry(
            "app",
            "users",
            "collection",
            1,
            5,
            hashlib.sha256(b"\x05\0\0\0\0").hexdigest(),
            meta,
            data,
        )
        base = Manifest(
            archive="a.tar",
            codec=codec_name,
            tool_version="0.1.0",
            created=WHEN,
            started=WHEN,
            finished=WHEN,
            databases=["app"],
            collections=[entry],
        )
        sealed, document = base.sealed(writer.plan_finish)
        member = await writer.finish(document)
        assert sealed.manifest == member and member.size == len(document)
        assert sealed.totals == Totals(writer.tar_bytes, len(sink.data))
        assert Manifest.from_json(document) == sealed


def test_seal_reaches_a_fixed_point_across_digit_boundaries() -> None:
    def plan(n: int) -> tuple[MemberRange, Totals]:
        # sizes that cross a power of ten as the manifest grows
        return MemberRange("mongosnap/manifest.json", 9_990, 9_990 + n, n), Totals(
            99_000 + n, 9_990 + n
        )

    sealed, data = sample().sealed(plan)
    assert sealed.manifest.size == len(data)
    assert sealed.totals.tar_bytes == 99_000 + len(data)


Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is _DELETE:
            del target[last]
        else:
            target[int(last) if last.isdigit() else last] = value

    return mutate


_DELETE = object()

MUTATIONS: dict[str, Mutation] = {
    "other format": _set("format", "tar"),
    "newer version": _set("format_version", 2),
    "version as bool": _set("format_version", True),
    "missing key": _set("codec", _DELETE),
    "extra key": _set("extra", 1),
    "unknown codec": _set("codec", "lz4"),
    "time without Z": _set("created", "2026-03-01T02:03:04"),
    "time with offset and Z": _set("created", "2026-03-01T02:03:04+01:00Z"),
    "bad time": _set("created", "yesterday Z"),
    "negative offset": _set("collections.0.bson.offset", -1),
    "float size": _set("collections.0.bson.size", 1.5),
    "huge size": _set("collections.0.bson_bytes", 2**60),
    "end before offset": _set("collections.0.bson.end", 50),
    "overlapping ranges": _set("collections.1.metadata.offset", 300),
    "wrong member name": _set("collections.0.bson.name", "dump/app/other.bson"),
    "hostile member name": _set("collections.0.metadata.name", "../../etc/passwd"),
    "size differs": _set("collections.0.bson_bytes", 701),
    "view with data": _set("collections.1.documents", 3),
    "collection without data": _set("collections.0.bson", None),
    "bad type": _set("collections.0.type", "table"),
    "bad sha": _set("collections.0.sha256", "ABC"),
    "database not listed": _set("databases", ["app"]),
    "database twice": _set("databases", ["app", "metrics", "app"]),
    "collection twice": lambda doc: doc["collections"].append(doc["collections"][0]),
    "credentials in hosts": _set("source.hosts", ["user:secret@db1"]),
    "ranges past the end": _set("totals.compressed_bytes", 1000),
    "manifest member name": _set("manifest.name", "dump/manifest.json"),
    "string count": _set("collections.0.documents", "10"),
    "not an object": _set("source", []),
}


@pytest.mark.parametrize("mutation", MUTATIONS.values(), ids=list(MUTATIONS))
def test_malformed_manifests_are_rejected(mutation: Mutation) -> None:
    doc = json.loads(sample().to_json())
    mutation(doc)
    with pytest.raises(CorruptArchive):
        Manifest.from_json(json.dumps(doc).encode())


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff",
        b"[]",
        b'{"format": NaN}',
        b'{"format": "a", "format": "b"}',
        b"{" + b" " * (64 << 20) + b"}",
    ],
)
def test_unparseable_manifests_are_rejected(raw: bytes) -> None:
    with pytest.raises(CorruptArchive):
        Manifest.from_json(raw)


def test_to_json_refuses_inconsistent_or_naive_manifests() -> None:
    with pytest.raises(CorruptArchive):
        Manifest(
            archive="a",
            codec="gzip",
            tool_version="1",
            created=WHEN,
            started=WHEN,
            finished=WHEN,
            source=SourceInfo(["u:p@h"]),
        ).to_json()
    with pytest.raises(ValueError):
        Manifest(
            archive="a",
            codec="gzip",
            tool_version="1",
            created=datetime(2026, 1, 1),
            started=WHEN,
            finished=WHEN,
        ).to_json()


def test_archive_names() -> None:
    assert archive_name(WHEN, get_codec("gzip")) == "2026-03-01-02-03-04-mongodb-dump.tar.gz"
    assert (
        archive_name(WHEN, "zstd", "nightly/app-")
        == "nightly/app-2026-03-01-02-03-04-mongodb-dump.tar.zst"
    )
    paris = WHEN.astimezone(timezone(timedelta(hours=1)))
    assert archive_name(paris, "gzip") == archive_name(WHEN, "gzip")  # always UTC
    with pytest.raises(ValueError):
        archive_name(datetime(2026, 1, 1), "gzip")
    assert parse_archive_name("nightly/app-2026-03-01-02-03-04-mongodb-dump.tar.zst") == WHEN
    assert parse_archive_name("2014-12-31-23-59-59-mongodb-dump.tar.gz") == datetime(
        2014, 12, 31, 23, 59, 59, tzinfo=UTC
    )
    for other in (
        "2026-03-01-02-03-04-mongodb-dump.tar.gz.manifest.json",
        "2026-13-01-02-03-04-mongodb-dump.tar.gz",
        "2026-03-01-mongodb-dump.tar.gz",
        "notes.txt",
    ):
        assert parse_archive_name(other) is None
    assert manifest_key("p/x.tar.gz") == "p/x.tar.gz.manifest.json"


def test_server_time_is_optional_and_round_trips() -> None:
    """Written only when the writer's and the server's clocks disagree; a manifest
    without it (every older archive) parses as before."""
    plain = sample()
    assert b"server_time" not in plain.to_json()
    assert Manifest.from_json(plain.to_json()).server_time is None
    skewed = replace(plain, server_time=WHEN - timedelta(days=365))
    data = skewed.to_json()
    assert b'"server_time": "2025-03-01T02:03:04Z"' in data
    assert Manifest.from_json(data) == skewed
    raw = json.loads(data)
    raw["server_time"] = "2025-03-01T02:03:04+00:00"
    with pytest.raises(CorruptArchive, match="server_time is not a UTC time"):
        Manifest.from_json(json.dumps(raw).encode())


def _with_users() -> Manifest:
    """sample() plus backup --users-and-roles members between data and manifest."""
    base = sample()
    users = [
        AuthMember(
            db, coll, n, EMPTY_SHA, MemberRange(f"dump/{db}/$admin.{coll}.bson", at, at + 20, 0)
        )
        for (db, coll, n), at in zip(
            [("app", "system.users", 0), ("app", "system.roles", 0), ("app", "system.version", 0)],
            (600, 620, 640),
            strict=True,
        )
    ]
    return replace(
        base, users=users, manifest=MemberRange("mongosnap/manifest.json", 660, 1200, 500)
    )


def test_users_are_optional_and_round_trip() -> None:
    assert "users" not in json.loads(sample().to_json())  # older manifests lack the key
    manifest = _with_users()
    data = manifest.to_json()
    assert Manifest.from_json(data) == manifest
    assert json.loads(data)["users"][0]["member"]["name"] == "dump/app/$admin.system.users.bson"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda u: replace(u, collection="system.js"), "not an auth collection"),
        (lambda u: replace(u, member=replace(u.member, name="dump/app/x.bson")), "member name"),
        (
            lambda u: replace(
                u,
                database="other",
                member=replace(u.member, name="dump/other/$admin.system.users.bson"),
            ),
            "database not listed",
        ),
        (lambda u: replace(u, member=replace(u.member, offset=10, end=30)), "out of order"),
        (lambda u: replace(u, sha256="XYZ"), "sha256"),
    ],
)
def test_malformed_users_entries_are_rejected(change: Callable[[Any], Any], message: str) -> None:
    manifest = _with_users()
    broken = replace(manifest, users=[change(manifest.users[0]), *manifest.users[1:]])
    with pytest.raises(CorruptArchive, match=message):
        broken.check()
    raw = json.loads(manifest.to_json())
    raw["users"][0] = change(manifest.users[0]).to_dict()
    with pytest.raises(CorruptArchive, match=message):
        Manifest.from_json(json.dumps(raw).encode())
