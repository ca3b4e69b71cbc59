"""A small evaluator of the PromQL the documented alerts use, over scraped samples.

Exactly this subset: numbers, ``time()``, instant selectors with ``=`` matchers
(``name{label="value"}``), ``increase(selector[1h])``, ``+ - * /`` and the
comparisons ``> < >= <= == !=`` (filtering, without ``bool``), with PromQL's
precedence. Anything else is an error, so an alert the docs grow beyond this
subset fails its test instead of being skipped.

Semantics follow Prometheus where they matter to an alert: an instant selector
takes a series' newest sample within the 5-minute lookback; ``increase()``
needs two samples in its window and counts a drop as a counter reset. It sums
the rises instead of extrapolating to the window's edges, which changes the
size of the result but never whether it is above 0.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]
Vector = dict[Labels, float]
Value = float | Vector
Series = dict[tuple[str, Labels], list[tuple[float, float]]]

LOOKBACK = 300.0
_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?)|(?P<duration>\[\d+[smhd]\])|(?P<string>\"[^\"]*\")"
    r"|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)|(?P<op>==|!=|>=|<=|[-+*/<>(){},=]))"
)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_COMPARE = {
    ">": float.__gt__,
    "<": float.__lt__,
    ">=": float.__ge__,
    "<=": float.__le__,
    "==": float.__eq__,
    "!=": float.__ne__,
}
_ARITHMETIC = {
    "+": float.__add__,
    "-": float.__sub__,
    "*": float.__mul__,
    "/": float.__truediv__,
}


def scrape(files: Iterable[tuple[float, str]], until: float, every: float = 60.0) -> Series:
    """What Prometheus stores scraping node_exporter every ``every`` seconds: each
    textfile (written at its time) is read until the next one replaces it, the
    last one until ``until``."""
    ordered = sorted(files)
    series: Series = {}
    for index, (start, text) in enumerate(ordered):
        end = ordered[index + 1][0] if index + 1 < len(ordered) else until + every / 2
        found = [
            s
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if not s.name.endswith("_created")  # not a series an alert reads
        ]
        at = start
        while at < end:
            for sample in found:
                key = (sample.name, frozenset(sample.labels.items()))
                series.setdefault(key, []).append((at, float(sample.value)))
            at += every
    return series


def evaluate(expr: str, series: Series, now: float) -> Value:
    return _Parser(_tokens(expr), series, now).whole()


def fires(expr: str, series: Series, now: float) -> bool:
    """An alert fires when its expression yields at least one element."""
    result = evaluate(expr, series, now)
    if not isinstance(result, dict):
        raise ValueError(f"an alert expression must give a vector: {expr}")
    return bool(result)


@dataclass
class _Token:
    kind: str
    text: str


def _tokens(expr: str) -> list[_Token]:
    found, at = [], 0
    while at < len(expr.rstrip()):
        match = _TOKEN.match(expr, at)
        if not match or match.end() == at:
            raise ValueError(f"outside the PromQL subset at {expr[at:]!r}")
        kind = match.lastgroup or ""
        found.append(_Token(kind, match.group(kind)))
        at = match.end()
    return found


class _Parser:
    def __init__(self, tokens: list[_Token], series: Series, now: float) -> None:
        self.tokens, self.at, self.series, self.now = tokens, 0, series, now

    def whole(self) -> Value:
        value = self.comparison()
        if self.at != len(self.tokens):
            raise ValueError(f"unexpected {self.tokens[self.at].text!r}")
        return value

    def peek(self) -> str | None:
        return self.tokens[self.at].text if self.at < len(self.tokens) else None

    def take(self, expected: str | None = None) -> _Token:
        if self.at >= len(self.tokens):
            raise ValueError("unexpected end of expression")
        token = self.tokens[self.at]
        if expected is not None and token.text != expected:
            raise ValueError(f"expected {expected!r}, found {token.text!r}")
        self.at += 1
        return token

    def comparison(self) -> Value:
        left = self.sum()
        while self.peek() in _COMPARE:
            op = self.take().text
            left = _compare(op, left, self.sum())
        return left

    def sum(self) -> Value:
        left = self.product()
        while self.peek() in ("+", "-"):
            op = self.take().text
            left = _arithmetic(op, left, self.product())
        return left

    def product(self) -> Value:
        left = self.atom()
        while self.peek() in ("*", "/"):
            op = self.take().text
            left = _arithmetic(op, left, self.atom())
        return left

    def atom(self) -> Value:
        token = self.take()
        if token.kind == "number":
            return float(token.text)
        if token.text == "(":
            value = self.comparison()
            self.take(")")
            return value
        if token.kind != "name":
            raise ValueError(f"unexpected {token.text!r}")
        if token.text == "time":
            self.take("(")
            self.take(")")
            return self.now
        if token.text == "increase":
            self.take("(")
            name, matchers = self.selector(self.take().text)
            window = self.take()
            if window.kind != "duration":
                raise ValueError("increase() needs a range such as [1h]")
            self.take(")")
            return self.increase(name, matchers, _seconds(window.text))
        if self.peek() == "(":
            raise ValueError(f"function {token.text}() is outside the PromQL subset")
        return self.instant(*self.selector(token.text))

    def selector(self, name: str) -> tuple[str, dict[str, str]]:
        matchers: dict[str, str] = {}
        if self.peek() == "{":
            self.take("{")
            while self.peek() != "}":
                label = self.take().text
                self.take("=")
                matchers[label] = self.take().text.strip('"')
                if self.peek() == ",":
                    self.take(",")
            self.take("}")
        return name, matchers

    def matching(self, name: str, matchers: dict[str, str]) -> Series:
        return {
            key: samples
            for key, samples in self.series.items()
            if key[0] == name and all((k, v) in key[1] for k, v in matchers.items())
        }

    def instant(self, name: str, matchers: dict[str, str]) -> Vector:
        result: Vector = {}
        for (_, labels), samples in self.matching(name, matchers).items():
            recent = [v for t, v in samples if self.now - LOOKBACK < t <= self.now]
            if recent:
                result[labels] = recent[-1]
        return result

    def increase(self, name: str, matchers: dict[str, str], window: float) -> Vector:
        result: Vector = {}
        for (_, labels), samples in self.matching(name, matchers).items():
            values = [v for t, v in samples if self.now - window < t <= self.now]
            if len(values) < 2:
                continue
            rises = (b - a if b >= a else b for a, b in itertools.pairwise(values))
            result[labels] = sum(rises)
        return result


def _seconds(duration: str) -> float:
    return float(duration[1:-2]) * _UNIT[duration[-2]]


def _arithmetic(op: str, left: Value, right: Value) -> Value:
    apply = _ARITHMETIC[op]
    if isinstance(left, dict) and isinstance(right, dict):
        return {k: apply(v, right[k]) for k, v in left.items() if k in right}
    if isinstance(left, dict):
        return {k: apply(v, float(right)) for k, v in left.items()}  # type: ignore[arg-type]
    if isinstance(right, dict):
        return {k: apply(left, v) for k, v in right.items()}
    return apply(left, right)


def _compare(op: str, left: Value, right: Value) -> Value:
    """A filter: the left side's elements for which the comparison holds."""
    test = _COMPARE[op]
    if isinstance(left, dict) and isinstance(right, dict):
        return {k: v for k, v in left.items() if k in right and test(v, right[k])}
    if isinstance(left, dict):
        return {k: v for k, v in left.items() if test(v, float(right))}  # type: ignore[arg-type]
    if isinstance(right, dict):
        return {k: v for k, v in right.items() if test(left, v)}
    raise ValueError("comparing two scalars needs bool, which is outside the subset")
