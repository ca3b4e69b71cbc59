"""Tar bytes the writer emits: GNU-format headers, padding, end-of-archive.

GNU format keeps a header's length a function of the member name alone: sizes
of 8 GiB and more go in base-256 in the same 12-byte field, and names longer
than 100 bytes get a ``././@LongLink`` pseudo-member in front. The writer
relies on that to reserve a header before it knows the size.
"""

from __future__ import annotations

import tarfile

BLOCK = 512
END_OF_ARCHIVE = bytes(2 * BLOCK)
MAX_SIZE = (1 << 63) - 1
"""Largest size a GNU base-256 size field holds here (the format allows more)."""


def header(name: str, size: int, mtime: int, mode: int = 0o644) -> bytes:
    """The header block(s) of a regular file member called ``name``.

    ``len(header(name, s, t))`` is the same for every ``s`` and ``t``.
    """
    if not 0 <= size <= MAX_SIZE:
        raise ValueError(f"member size out of range: {size}")
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = mode
    info.type = tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "strict")


def header_length(name: str) -> int:
    """Length of every header for a member called ``name``."""
    return len(header(name, 0, 0))


def padding(size: int) -> bytes:
    """The zero bytes that follow a body of ``size`` bytes up to a block boundary."""
    return bytes(-size % BLOCK)


def member_length(name: str, size: int) -> int:
    """Tar bytes of a whole member: header, body and padding."""
    return header_length(name) + size + (-size % BLOCK)
