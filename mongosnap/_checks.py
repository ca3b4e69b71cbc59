"""Checks of API arguments that Python's types do not catch."""

from __future__ import annotations

from collections.abc import Iterable

from ._errors import UsageError


def name_list(value: object, what: str) -> list[str]:
    """``value`` as a list of names; UsageError for a plain string (it would be
    taken for its characters), a non-iterable, or an empty or non-string name."""
    if isinstance(value, str | bytes):
        raise UsageError(f"{what} is a list of names, not the string {value!r}: write [{value!r}]")
    if not isinstance(value, Iterable):
        raise UsageError(f"{what} is a list of names, not {type(value).__name__}")
    names: list[str] = []
    for name in value:
        if not isinstance(name, str) or not name:
            raise UsageError(f"{what} holds {name!r}, which is not a name")
        names.append(name)
    return names
