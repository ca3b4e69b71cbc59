"""Tripwire rules: the spec grammar (hostile specs included) and the sliding
window over entry timestamps (no server: entries are built here)."""

from __future__ import annotations

import bson
import pytest
from bson.timestamp import Timestamp

from mongosnap._errors import UsageError
from mongosnap.oplog.position import Ts
from mongosnap.oplog.tripwire import Baseline, Rule, Tripwires, parse


def entry(op: str, ns: str, t: int, i: int = 1) -> tuple[bytes, Ts]:
    doc = {"ts": Timestamp(t, i), "op": op, "ns": ns, "o": {"_id": i}}
    return bson.encode(doc), Ts(t, i)


def feed(wires: Tripwires, op: str, ns: str, t: int, n: int) -> None:
    for i in range(1, n + 1):
        wires.observe(*entry(op, ns, t, i))


def test_parse_the_three_kinds() -> None:
    assert parse("app.users:deletes>1000/60s") == Rule(
        "app", "users", "deletes", 1000, 60, "deletes>1000/60s"
    )
    assert parse("app.users:updates>5000/5m").window == 300
    rule = parse("app.*:shrink>20%")
    assert (rule.collection, rule.kind, rule.limit, rule.window) == (None, "shrink", 20.0, 60)
    assert parse("app.logs:shrink>12.5%/2h").window == 7200


def test_parse_names_with_dots_and_colons() -> None:
    rule = parse("app.fs.files:deletes>1/1s")
    assert (rule.database, rule.collection) == ("app", "fs.files")
    assert parse("app.a:b:deletes>1/1s").collection == "a:b"


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "app.users",
        "app.users:",
        "users:deletes>1/60s",
        ".users:deletes>1/60s",
        "app.:deletes>1/60s",
        "a/b.users:deletes>1/60s",
        "app.$cmd:deletes>1/60s",
        "app.us*rs:deletes>1/60s",
        "app.users:deletes>1",
        "app.users:deletes>-1/60s",
        "app.users:deletes>1/0s",
        "app.users:deletes>1/25h",
        "app.users:deletes>1/60",
        "app.users:deletes>1/60d",
        "app.users:deletes<1/60s",
        "app.users:deletes>1/60s ",
        "app.users:inserts>1/60s",
        "app.users:deletes>99999999999/60s",
        "app.users:shrink>0%",
        "app.users:shrink>101%",
        "app.users:shrink>20",
        "app.users:shrink>20%/",
        "app.users:shrink>1e3%",
        "app.users:deletes>1/60s;rm -rf /",
        "app.users\n:deletes>1/60s",
        "app.users:deletes>\uff11/60s",  # a full-width digit
        "a" * 600 + ".x:deletes>1/60s",
        "app\0.users:deletes>1/60s",
    ],
)
def test_hostile_specs_are_usage_errors(spec: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse(spec)
    assert raised.value.exit_code == 2
    assert "tripwire" in str(raised.value)


def test_deletes_trip_only_above_the_limit_within_the_window() -> None:
    trips = []
    wires = Tripwires([parse("app.users:deletes>3/10s")], trips.append)
    feed(wires, "d", "app.users", 100, 3)
    assert trips == []
    feed(wires, "i", "app.users", 101, 5)  # inserts are not deletes
    feed(wires, "d", "app.other", 101, 5)  # another collection
    assert trips == []
    wires.observe(*entry("d", "app.users", 105, 9))
    assert len(trips) == 1
    trip = trips[0]
    assert (trip.namespace, trip.count, trip.start, trip.end) == ("app.users", 4, 95, 105)


def test_the_window_slides_over_entry_time_not_wall_clock() -> None:
    trips = []
    wires = Tripwires([parse("app.users:deletes>3/10s")], trips.append)
    feed(wires, "d", "app.users", 100, 3)
    feed(wires, "d", "app.users", 110, 3)  # 100 left the window (110 - 10)
    assert trips == []
    wires.observe(*entry("d", "app.users", 111, 9))
    assert [t.count for t in trips] == [4]


def test_one_trip_per_window_then_rearmed() -> None:
    trips = []
    wires = Tripwires([parse("app.users:updates>2/10s")], trips.append)
    feed(wires, "u", "app.users", 100, 50)
    assert len(trips) == 1
    feed(wires, "u", "app.users", 109, 50)
    assert len(trips) == 1
    feed(wires, "u", "app.users", 110, 3)
    assert len(trips) == 2


def test_wildcard_trips_per_collection() -> None:
    trips = []
    wires = Tripwires([parse("app.*:deletes>1/60s")], trips.append)
    feed(wires, "d", "app.a", 100, 2)
    feed(wires, "d", "app.b", 100, 2)
    feed(wires, "d", "other.a", 100, 2)
    assert sorted(t.namespace for t in trips) == ["app.a", "app.b"]


def test_shrink_relative_to_the_count_at_the_window_start() -> None:
    trips = []
    baseline = Baseline({"app.users": (100, Ts(50, 0))})
    wires = Tripwires([parse("app.users:shrink>20%/10s")], trips.append, baseline)
    feed(wires, "d", "app.users", 40, 90)  # before the archive's point: in its count already
    feed(wires, "i", "app.users", 60, 100)  # 200 documents from t=60 on
    feed(wires, "d", "app.users", 80, 40)  # 40 of 200: 20 %, not above
    assert trips == []
    wires.observe(*entry("d", "app.users", 81, 999))  # 41 of 200
    assert len(trips) == 1
    assert (trips[0].count, trips[0].base) == (41, 200)


def test_shrink_ignores_a_collection_the_archive_does_not_list() -> None:
    trips = []
    wires = Tripwires([parse("app.*:shrink>1%")], trips.append, Baseline({}))
    feed(wires, "d", "app.users", 80, 40)
    assert trips == []
    assert wires.rings == {}


def test_late_entries_land_in_their_second() -> None:
    trips = []
    wires = Tripwires([parse("app.users:deletes>2/5s")], trips.append)
    wires.observe(*entry("d", "app.users", 100, 1))
    wires.observe(*entry("d", "app.users", 98, 1))  # visible late, still in the window
    wires.observe(*entry("d", "app.users", 90, 1))  # older than the window: trimmed
    assert trips == []
    wires.observe(*entry("d", "app.users", 99, 2))
    assert [t.count for t in trips] == [3]
    ring = next(iter(wires.rings.values()))
    assert [b[0] for b in ring.buckets] == [98, 99, 100]


def test_memory_is_bounded_by_the_window() -> None:
    wires = Tripwires([parse("app.users:deletes>1000000/10s")])
    for second in range(1000, 3000):
        wires.observe(*entry("d", "app.users", second))
    ring = next(iter(wires.rings.values()))
    assert len(ring.buckets) == 10
    assert ring.hits == 10
