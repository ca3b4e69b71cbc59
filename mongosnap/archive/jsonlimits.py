"""Bounds checked on JSON text before it is parsed: value count and nesting depth.

Python's JSON decoder builds one object per value and recurses once per nested
array or object, so hostile text can exhaust the memory or the stack before
it fails. ``json_problem`` bounds both without parsing and without building
more than one small object at a time; ``bounded_text`` is the whole check a
reader runs on bytes before it parses them.
"""

from __future__ import annotations

import re

from .._errors import CorruptArchive, MongosnapError

# A JSON string (an unterminated one runs to the end: once started, a match
# cannot fail, so the scan is linear), or a bracket.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)


def value_bound(text: str) -> int:
    """An upper bound on the values (and keys) the parser would build: containers
    plus separators plus one. Separators inside strings are counted too, which
    only errs on the safe side and needs no scan beyond ``str.count``."""
    return sum(text.count(c) for c in "[{,:") + 1


def too_deep(text: str, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than ``limit``."""
    if text.count("[") + text.count("{") <= limit:  # brackets inside strings only add
        return False
    depth = 0
    for found in _TOKEN.finditer(text):
        char = text[found.start()]
        if char == '"':
            continue
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def json_problem(text: str, *, max_depth: int, max_values: int) -> str | None:
    """Why ``text`` must not be parsed (too many values, too deep), or None."""
    if value_bound(text) > max_values:
        return f"holds more than {max_values} values"
    if too_deep(text, max_depth):
        return f"nests deeper than {max_depth} levels"
    return None


def bounded_text(
    data: bytes,
    what: str,
    *,
    max_bytes: int,
    max_depth: int,
    max_values: int,
    refuse: type[MongosnapError],
) -> str:
    """``data`` decoded, once it is known safe to parse.

    ``refuse`` (the caller's error for input over a limit) when it is larger
    than ``max_bytes`` or its JSON would hold too many values or nest too deep;
    CorruptArchive when it is not UTF-8. ``what`` starts every message.
    """
    if len(data) > max_bytes:
        raise refuse(f"{what} is larger than {max_bytes} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptArchive(f"{what} is not valid UTF-8: {exc}") from exc
    problem = json_problem(text, max_depth=max_depth, max_values=max_values)
    if problem:
        raise refuse(f"{what} {problem}")
    return text
