"""Member names: mongodump's layout and escaping, and the checks readers apply."""

from __future__ import annotations

import pytest

from mongosnap import UnsafeArchive
from mongosnap.archive.names import (
    DumpFile,
    escape_collection_name,
    member_name,
    parse_member_name,
    unescape_collection_name,
    validate_member_name,
)

# Expected values computed with Go's url.QueryEscape, sha1 and base64.RawURLEncoding,
# the functions mongodump's outputPath uses.
ESCAPES = {
    "users": "users",
    "a/b": "a%2Fb",
    "sp ace": "sp+ace",
    "x+y": "x%2By",
    "\u00e9~._-": "%C3%A9~._-",
    "a$b:c?d=e&f": "a%24b%3Ac%3Fd%3De%26f",
    "%41": "%2541",
    "x" * 238: "x" * 238,
    "x" * 239: "x" * 208 + "%24Nq75d-cu3iRxNs-ce3Tvf9gagoU",
    "\u00e9" * 100: "%C3%A9" * 34 + "%C3%" + "%2402mW-EhxMxXsZ8vh0-6fogZ0Bd4",
}


@pytest.mark.parametrize(("name", "escaped"), ESCAPES.items())
def test_escaping_matches_mongodump(name: str, escaped: str) -> None:
    assert escape_collection_name(name) == escaped
    assert len(escaped) <= 238


@pytest.mark.parametrize("name", ["users", "a/b", "sp ace", "x+y", "\u00e9~", "%41", "a.b.c"])
def test_unescape_inverts_escape(name: str) -> None:
    assert unescape_collection_name(escape_collection_name(name)) == name


def test_unescape_rejects_malformed() -> None:
    for bad in ("%", "%4", "%ZZ", "%C3"):
        with pytest.raises(ValueError):
            unescape_collection_name(bad)


def test_member_names_follow_the_dump_layout() -> None:
    assert member_name("app", "users", "metadata") == "dump/app/users.metadata.json"
    assert member_name("app", "users", "bson") == "dump/app/users.bson"
    assert member_name("app", "a/b c", "bson") == "dump/app/a%2Fb+c.bson"
    assert (
        member_name("app", "w" * 230, "bson", collection_type="timeseries")
        == "dump/app/system.buckets." + "w" * 193 + "%24M7tgfNbk325wK-ZsccWrE-KYXKo.bson"
    )
    assert member_name("app", "temps", "metadata", collection_type="timeseries") == (
        "dump/app/temps.metadata.json"
    )
    with pytest.raises(ValueError, match="view"):
        member_name("app", "v", "bson", collection_type="view")
    for db in ("", ".", "..", "a/b", "a\\b", "a\0"):
        with pytest.raises(ValueError):
            member_name(db, "c", "bson")
    with pytest.raises(ValueError):
        member_name("app", "", "bson")


def test_parse_member_name() -> None:
    assert parse_member_name("dump/app/a%2Fb.bson") == DumpFile("app", "a%2Fb", "bson")
    assert parse_member_name("dump/app/u.metadata.json") == DumpFile("app", "u", "metadata")
    for other in ("dump/app/", "dump/app/.bson", "x/app/u.bson", "dump/u.bson", "dump/a/b/c.bson"):
        assert parse_member_name(other) is None


@pytest.mark.parametrize(
    ("name", "normal"),
    [
        ("dump/app/u.bson", "dump/app/u.bson"),
        ("./dump/app/u.bson", "dump/app/u.bson"),
        ("dump/", "dump"),
        ("dump/app/..bson", "dump/app/..bson"),
        ("mongosnap/manifest.json", "mongosnap/manifest.json"),
    ],
)
def test_valid_names(name: str, normal: str) -> None:
    assert validate_member_name(name) == normal


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/etc/passwd",
        "../x",
        "dump/../../x",
        "dump/..",
        "dump//x",
        "dump/./x",
        "./",
        ".",
        "dump\\x",
        "C:\\x",
        "dump/x\0.bson",
        "a/" * 3000,
    ],
)
def test_hostile_names_are_rejected(name: str) -> None:
    with pytest.raises(UnsafeArchive):
        validate_member_name(name)
