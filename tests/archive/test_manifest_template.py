"""The manifest's JSON is encoded once when sealing: the bytes are still exactly
what json.dumps(indent=2) writes for the whole document."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

from test_manifest import WHEN, sample

from mongosnap.archive import CollectionEntry, Manifest, MemberRange, Totals
from mongosnap.archive.manifest import OplogWindow
from mongosnap.archive.names import MANIFEST_MEMBER, member_name


def reference(manifest: Manifest) -> bytes:
    """The whole document encoded in one go, as to_json did before the template."""
    doc = json.loads(manifest.to_json())
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


def many(count: int) -> Manifest:
    entries = []
    for i in range(count):
        name = f"cöll-{i}"
        entries.append(
            CollectionEntry(
                "app",
                name,
                "collection",
                i,
                i * 10,
                hashlib.sha256(name.encode()).hexdigest(),
                MemberRange(member_name("app", name, "metadata"), 1000 * i, 1000 * i + 500, 60),
                MemberRange(
                    member_name("app", name, "bson"), 1000 * i + 500, 1000 * i + 1000, i * 10
                ),
            )
        )
    return Manifest(
        archive="a.tar.gz",
        codec="gzip",
        tool_version="0.1.0",
        created=WHEN,
        started=WHEN,
        finished=WHEN,
        databases=["app"],
        collections=entries,
    )


def test_to_json_is_the_whole_document_encoded_at_once() -> None:
    oplog = OplogWindow(
        (5, 1), (9, 2), 3, "0" * 64, MemberRange("dump/oplog.bson", 10**6, 10**6 + 90, 12)
    )
    for manifest in (sample(), many(50), replace(many(3), oplog=oplog)):
        sealed = replace(
            manifest,
            manifest=MemberRange(MANIFEST_MEMBER, 10**7, 10**7 + 9, 11),
            totals=Totals(1, 10**8),
        )
        assert sealed.to_json() == reference(sealed)


def test_sealed_json_is_the_sealed_manifest_encoded() -> None:
    def plan(n: int) -> tuple[MemberRange, Totals]:
        return MemberRange(MANIFEST_MEMBER, 10**7, 10**7 + n + 1024, n), Totals(n * 3, 10**8 + n)

    for manifest in (many(0), many(2000)):
        sealed, data = manifest.sealed(plan)
        assert data == sealed.to_json() == reference(sealed)
        assert sealed.manifest.size == len(data)
        assert Manifest.from_json(data) == sealed
