"""Reading mongodump's file names back: ``--gzip`` files and shortened names."""

from __future__ import annotations

import pytest

from mongosnap.archive.names import (
    DumpFile,
    collection_name,
    escape_collection_name,
    is_shortened,
    parse_member_name,
    shortened_name,
)

LONG = {
    "x" * 239: "x" * 208,
    "a/b " * 40: "a/b " * 34 + "a/",
    "\u00e9" * 100: "\u00e9" * 34 + "%C3%",  # the cut falls inside an escape
    "\U0001f600" * 70: "\U0001f600" * 17 + "%F0%",  # inside a 4-byte character
    "x" * 207 + "\u00e9" * 6: "x" * 207 + "%",
}


def test_gzip_files_parse_as_their_plain_counterparts() -> None:
    assert parse_member_name("dump/app/u.bson.gz") == DumpFile("app", "u", "bson", True)
    assert parse_member_name("dump/app/a%2Fb.metadata.json.gz") == DumpFile(
        "app", "a%2Fb", "metadata", True
    )
    assert parse_member_name("dump/app/u.bson") == DumpFile("app", "u", "bson", False)
    assert parse_member_name("dump/app/x.gz.bson") == DumpFile("app", "x.gz", "bson")
    for other in ("dump/app/.bson.gz", "dump/app/u.gz", "dump/app/prelude.json.gz"):
        assert parse_member_name(other) is None


@pytest.mark.parametrize("name", LONG)
def test_a_shortened_stem_stands_for_the_name_its_metadata_gives(name: str) -> None:
    stem = escape_collection_name(name)
    assert is_shortened(stem)
    assert collection_name(stem, name) == name


@pytest.mark.parametrize(("name", "kept"), LONG.items())
def test_without_metadata_a_shortened_stem_keeps_its_hash_escaped(name: str, kept: str) -> None:
    stem = escape_collection_name(name)
    expected = kept + "%24" + stem.rsplit("%24", 1)[1]
    assert shortened_name(stem) == expected
    assert collection_name(stem) == expected
    assert collection_name(stem, "another name") == expected  # not the one the stem hashes
    assert "$" not in expected


def test_other_stems_are_unescaped_whatever_the_metadata_says() -> None:
    assert not is_shortened("x" * 238)
    assert not is_shortened("x" * 237 + "%24")
    assert collection_name("a%2Fb+c", "other") == "a/b c"
    assert collection_name("x" * 238, "y") == "x" * 238
    assert collection_name("100%", "") == "100%"  # not an escape: the stem as it is
