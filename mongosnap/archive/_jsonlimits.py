"""Bounds checked on JSON text before it is parsed: nesting depth and value count.

Python's JSON decoder recurses once per nested array or object and builds one
object per value, so hostile text can exhaust the stack or the memory before it
fails. ``json_shape`` measures both without parsing, in linear time: strings are
removed first (a string that never ends swallows the rest, as it would stop the
parser there), then brackets and separators are counted.
"""

from __future__ import annotations

import re
from itertools import accumulate

# A JSON string, or an unterminated one up to the end: once started, a match
# cannot fail, so the scan never backtracks over the text again (linear time).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_shape(text: str) -> tuple[int, int]:
    """``(depth, values)``: the deepest bracket nesting, and an upper bound on the
    number of values the parser would build (separators plus containers plus one)."""
    bare = _STRING.sub("", text)
    opens = bare.count("[") + bare.count("{")
    values = opens + bare.count(",") + bare.count(":") + 1
    if opens <= 1:
        return opens, values
    brackets = _NOT_BRACKET.sub("", bare)
    return max(accumulate(map(_STEP.__getitem__, brackets))), values
