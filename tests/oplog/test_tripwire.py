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


def test_trip_names_the_first_and_last_counted_entries() -> None:
    trips = []
    wires = Tripwires([parse("app.users:deletes>3/10s")], trips.append)
    feed(wires, "i", "app.users", 99, 5)
    feed(wires, "d", "app.users", 100, 2)
    feed(wires, "d", "app.users", 103, 2)
    [trip] = trips
    assert (trip.first, trip.last) == (Ts(100, 0), Ts(103, 2))
    feed(wires, "d", "app.users", 104, 7)  # the burst goes on, quiet: counted, not judged
    assert len(trips) == 1
    assert wires.last_counted("app.users", trip.rule) == Ts(104, 7)


def op(kind: str, ns: str, i: int) -> dict[str, object]:
    return {"op": kind, "ns": ns, "o": {"_id": i}}


def command(t: int, o: dict[str, object], **fields: object) -> tuple[bytes, Ts]:
    doc = {"ts": Timestamp(t, 1), "op": "c", "ns": "admin.$cmd", "o": o, **fields}
    return bson.encode(doc), Ts(t, 1)


TXN = {"lsid": {"id": bson.Binary(b"\x01" * 16, 4)}, "txnNumber": bson.Int64(7)}


def test_operations_inside_applyops_are_counted() -> None:
    trips = []
    wires = Tripwires([parse("app.users:deletes>3/10s")], trips.append)
    deletes = [op("d", "app.users", i) for i in range(3)]
    wires.observe(*command(100, {"applyOps": [*deletes, op("d", "app.other", 9)]}))
    assert trips == []
    nested = {"applyOps": [op("i", "app.users", 5), op("d", "app.users", 4)]}
    wires.observe(*command(101, {"applyOps": [{"op": "c", "ns": "admin.$cmd", "o": nested}]}))
    [trip] = trips
    assert (trip.count, trip.last) == (4, Ts(101, 1))


def test_a_large_transaction_counts_when_it_commits() -> None:
    trips = []
    wires = Tripwires([parse("app.users:deletes>3/10s")], trips.append)
    part = [op("d", "app.users", i) for i in range(3)]
    wires.observe(*command(100, {"applyOps": part, "partialTxn": True}, **TXN))
    wires.observe(*command(100, {"applyOps": part, "partialTxn": True}, **TXN))
    assert trips == [] and wires.rings == {}
    wires.observe(*command(101, {"applyOps": [op("u", "app.users", 1)]}, **TXN))
    [trip] = trips  # on the 4th of the 6 deletes the commit releases
    assert (trip.count, trip.last) == (4, Ts(101, 1))
    assert wires.rings[("app.users", trip.rule)].hits == 6
    assert wires.held == {}


def test_a_prepared_transaction_counts_on_commit_not_on_abort() -> None:
    trips = []
    wires = Tripwires([parse("app.users:deletes>1/10s")], trips.append)
    deletes = [op("d", "app.users", i) for i in range(3)]
    wires.observe(*command(100, {"applyOps": deletes, "prepare": True}, **TXN))
    wires.observe(*command(101, {"abortTransaction": 1}, **TXN))
    assert trips == [] and wires.held == {}
    wires.observe(*command(102, {"applyOps": deletes, "prepare": True}, **TXN))
    assert trips == []
    wires.observe(*command(103, {"commitTransaction": 1}, **TXN))
    assert [(t.count, t.last) for t in trips] == [(2, Ts(103, 1))]  # tripped on the 2nd


def test_a_newer_archive_replaces_the_shrink_count() -> None:
    trips = []
    wires = Tripwires(
        [parse("app.users:shrink>50%/10s")], trips.append, Baseline({"app.users": (10, Ts(50, 0))})
    )
    feed(wires, "i", "app.users", 60, 90)  # 100 documents
    feed(wires, "d", "app.users", 75, 40)  # 40 of 100
    assert trips == []
    # a newer archive counted 1000 at ts 76:0 (writes the archiver never saw)
    assert wires.refresh(Baseline({"app.users": (1000, Ts(76, 0)), "app.new": (5, Ts(76, 0))}))
    assert wires.baseline is not None and wires.baseline.counts["app.users"] == (1000, Ts(76, 0))
    feed(wires, "d", "app.users", 77, 40)  # 80 deletes in the window, of 1000 + 40 at its start
    assert trips == []
    wires.observe(*entry("d", "app.users", 78, 999))
    assert trips == []  # 81 of 1040 is not above 50 %
    feed(wires, "d", "app.users", 79, 440)
    [trip] = trips
    assert trip.base == 1040
    # an older archive changes nothing
    assert wires.refresh(Baseline({"app.users": (3, Ts(60, 0))})) == []
