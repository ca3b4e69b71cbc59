"""GNU tar headers: their length depends on the name only, never on the size."""

from __future__ import annotations

import io
import tarfile

import pytest

from mongosnap.archive import tar

SIZES = [0, 1, 511, 512, 513, 8 * 1024**3 - 1, 8 * 1024**3, 10 * 1024**4 + 3]


@pytest.mark.parametrize("name", ["dump/a/b.bson", "dump/a/" + "x" * 200 + ".bson", "é" * 60])
def test_header_length_does_not_depend_on_size_or_time(name: str) -> None:
    lengths = {len(tar.header(name, size, mtime)) for size in SIZES for mtime in (0, 2**33)}
    assert lengths == {tar.header_length(name)}
    assert tar.header_length(name) % tar.BLOCK == 0


@pytest.mark.parametrize("size", SIZES)
def test_size_round_trips_through_tarfile(size: int) -> None:
    block = tar.header("dump/a/b.bson", size, 1_700_000_000)
    info = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
    assert (info.name, info.size, info.mtime, info.type) == (
        "dump/a/b.bson",
        size,
        1_700_000_000,
        tarfile.REGTYPE,
    )


def test_sizes_of_8_gib_and_more_use_base_256() -> None:
    small = tar.header("f", 8 * 1024**3 - 1, 0)[124:136]
    assert small == b"77777777777\x00"  # the largest octal size
    big = tar.header("f", 8 * 1024**3, 0)[124:136]
    assert big[0] == 0x80 and int.from_bytes(big[1:], "big") == 8 * 1024**3


def test_long_names_get_a_gnu_longlink_member() -> None:
    name = "dump/db/" + "n" * 150 + ".bson"
    block = tar.header(name, 5, 0)
    assert len(block) == 3 * tar.BLOCK and block[:13] == b"././@LongLink"
    with tarfile.open(
        fileobj=io.BytesIO(block + b"hello" + tar.padding(5) + tar.END_OF_ARCHIVE)
    ) as t:
        (member,) = t.getmembers()
        assert member.name == name and t.extractfile(member).read() == b"hello"  # type: ignore[union-attr]


def test_padding_and_lengths() -> None:
    assert [len(tar.padding(n)) for n in (0, 1, 511, 512, 513)] == [0, 511, 1, 0, 511]
    assert bytes(1024) == tar.END_OF_ARCHIVE
    assert tar.member_length("a", 513) == 512 + 1024
    with pytest.raises(ValueError):
        tar.header("a", -1, 0)


def tarfile_header(name: str, size: int, mtime: int, mode: int) -> bytes:
    """What Python's tarfile builds for the same member, independently of tar.py."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.type = size, mtime, mode, tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "strict")


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "dump/bench/c00001.bson",
        "gone/app/users.metadata.json",
        "x" * 99,
        "x" * 100,  # fills the name field, no NUL
        "x" * 101,  # a LongLink
        "dump/é/ü" * 10,  # 100 bytes of UTF-8
        "€" * 34,  # 102 bytes of UTF-8 in 34 characters
    ],
)
def test_headers_are_the_bytes_tarfile_builds(name: str) -> None:
    """The fast path (name and size patched into a blank block) changes no byte."""
    for size in [*SIZES, 8**11 - 1, 8**11, tar.MAX_SIZE]:
        for mtime in (0, 1_700_000_000, 8**11 - 1, 8**11):
            for mode in (0o644, 0o600):
                assert tar.header(name, size, mtime, mode) == tarfile_header(
                    name, size, mtime, mode
                ), (name, size, mtime, mode)
