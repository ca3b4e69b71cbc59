"""Object keys: the one syntax every backend accepts."""

from __future__ import annotations

from .._errors import UsageError

CHUNK_SIZE = 1024 * 1024
"""Upper bound on the size of each chunk ``Storage.read`` yields."""


def check_key(key: str) -> str:
    """Return key if it is a well-formed relative key, else raise UsageError.

    A key is one or more ``/``-separated segments; no segment is empty, ``.``
    or ``..``, and no key holds a NUL. Every backend maps such keys to the
    same objects, and none of them can escape the storage root.
    """
    if not isinstance(key, str) or not key:
        raise UsageError(f"invalid object key {key!r}: a key is a non-empty string")
    if "\0" in key:
        raise UsageError(f"invalid object key {key!r}: NUL is not allowed")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise UsageError(
                f"invalid object key {key!r}: segments may not be empty, '.' or '..'"
                " (and a key may not start or end with '/')"
            )
    return key


def check_range(start: int, end: int | None) -> None:
    """Raise UsageError unless 0 <= start and (end is None or start <= end)."""
    if start < 0 or (end is not None and end < start):
        raise UsageError(f"invalid byte range [{start}, {end})")
