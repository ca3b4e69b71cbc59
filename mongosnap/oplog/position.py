"""An oplog position: a BSON timestamp (seconds, increment), ordered, printable.

Kept apart from bson.Timestamp so that storage-side code (chunk names,
sidecars) can use it without knowing BSON; ``from_bson``/``to_bson`` convert.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

from bson import Timestamp

from .._errors import UsageError

_MAX = 0xFFFFFFFF


@dataclass(frozen=True, order=True)
class Ts:
    """An oplog timestamp; compares like MongoDB does (seconds, then increment)."""

    t: int
    i: int

    def __post_init__(self) -> None:
        if not (0 <= self.t <= _MAX and 0 <= self.i <= _MAX):
            raise ValueError(f"timestamp out of range: {self.t}:{self.i}")

    def __str__(self) -> str:
        return f"{self.t}:{self.i}"

    @classmethod
    def parse(cls, text: str) -> Ts:
        """``SECONDS:INC`` (as ``--to-ts`` takes it); UsageError otherwise."""
        try:
            seconds, inc = text.split(":")
            return cls(int(seconds), int(inc))
        except ValueError:
            raise UsageError(f"not an oplog timestamp SECONDS:INC: {text!r}") from None

    @classmethod
    def from_bson(cls, value: Any) -> Ts:
        if not isinstance(value, Timestamp):
            raise ValueError(f"not a BSON timestamp: {type(value).__name__}")
        return cls(value.time, value.inc)

    def to_bson(self) -> Timestamp:
        return Timestamp(self.t, self.i)

    def to_json(self) -> dict[str, int]:
        return {"t": self.t, "i": self.i}

    @classmethod
    def from_json(cls, raw: object) -> Ts:
        """``{"t": seconds, "i": increment}``; ValueError on anything else."""
        if not isinstance(raw, dict) or set(raw) != {"t", "i"}:
            raise ValueError("a timestamp is {'t': seconds, 'i': increment}")
        t, i = raw["t"], raw["i"]
        if isinstance(t, bool) or isinstance(i, bool) or not isinstance(t, int):
            raise ValueError("timestamp fields are integers")
        if not isinstance(i, int):
            raise ValueError("timestamp fields are integers")
        return cls(t, i)

    def key(self) -> str:
        """Fixed width, so keys sort like timestamps: ``TTTTTTTTTT-IIIIIIIIII``."""
        return f"{self.t:010d}-{self.i:010d}"

    @classmethod
    def from_key(cls, text: str) -> Ts:
        seconds, inc = text.split("-")
        if len(seconds) != 10 or len(inc) != 10 or not (seconds + inc).isdigit():
            raise ValueError(f"not a timestamp key: {text!r}")
        return cls(int(seconds), int(inc))


TsLike: TypeAlias = Ts | Timestamp | datetime
"""What the API takes as an oplog instant: a Ts, a bson Timestamp, or an aware datetime."""


def as_ts(value: TsLike) -> Ts:
    """A Ts for any accepted form; a datetime stands for the end of its second
    (every entry logged within it), as ``--to-time`` does."""
    if isinstance(value, Ts):
        return value
    if isinstance(value, Timestamp):
        return Ts.from_bson(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise UsageError(f"the time {value.isoformat()} needs a time zone (tzinfo)")
        return Ts(int(value.astimezone(UTC).timestamp()), _MAX)
    raise TypeError(
        f"an oplog instant is a mongosnap.Ts, bson.Timestamp or aware datetime,"
        f" not {type(value).__name__}"
    )
