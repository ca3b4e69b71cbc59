"""The --max-rate token bucket, on a fake clock (no test waits for real time)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from pathlib import Path

import pytest
from helpers import run_cli, seed, server_documents, split_bson, tar_members

from mongosnap import backup
from mongosnap._errors import UsageError
from mongosnap.pipelines.throttle import TokenBucket, throttled

MB = 1_000_000


class FakeClock:
    """A clock that moves only when the code under test sleeps (or the test says)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def bucket(clock: FakeClock, rate: float, burst: float | None = None) -> TokenBucket:
    return TokenBucket(rate, burst=burst, clock=clock, sleep=clock.sleep)


async def test_a_full_bucket_lets_a_burst_through_then_waits_for_the_debt() -> None:
    clock = FakeClock()
    limit = bucket(clock, rate=2 * MB)  # burst: one second's worth
    await limit.take(2 * MB)
    assert clock.slept == []
    await limit.take(MB)  # one MB over: half a second at 2 MB/s
    assert clock.slept == [pytest.approx(0.5)]


async def test_a_long_read_runs_at_the_cap() -> None:
    clock = FakeClock()
    limit = bucket(clock, rate=MB, burst=256_000)
    start = clock.now
    for _ in range(100):
        await limit.take(250_000)  # 25 MB in batches of 250 kB
    elapsed = clock.now - start
    assert elapsed == pytest.approx((25 * MB - 256_000) / MB)
    assert limit.waited == pytest.approx(elapsed)


async def test_idle_time_refills_only_up_to_the_burst() -> None:
    clock = FakeClock()
    limit = bucket(clock, rate=MB, burst=MB)
    await limit.take(MB)
    clock.now += 3600  # an hour without reading saves no more than one burst
    await limit.take(MB)
    assert clock.slept == []
    await limit.take(MB)
    assert clock.slept == [pytest.approx(1.0)]


async def test_a_batch_bigger_than_the_burst_overdraws_then_pays() -> None:
    clock = FakeClock()
    limit = bucket(clock, rate=MB, burst=MB)
    await limit.take(5 * MB)
    assert clock.slept == [pytest.approx(4.0)]
    await limit.take(MB)  # the debt was paid by the wait: this one costs a second more
    assert clock.slept[-1] == pytest.approx(1.0)


async def test_readers_sharing_a_bucket_share_the_cap() -> None:
    """Two readers taking in turn wait in proportion: the sum runs at the cap."""
    clock = FakeClock()
    limit = bucket(clock, rate=MB, burst=0)
    waits = [limit.delay(MB) for _ in range(4)]  # four takes before anyone sleeps
    assert waits == [pytest.approx(w) for w in (1.0, 2.0, 3.0, 4.0)]


async def _batches(sizes: list[int]) -> AsyncGenerator[tuple[bytes, int], None]:
    for size in sizes:
        yield b"x" * size, 1


async def test_throttled_pays_each_batch_and_passes_it_unchanged() -> None:
    clock = FakeClock()
    limit = bucket(clock, rate=1000, burst=1000)
    got = [batch async for batch in throttled(_batches([1000, 500, 1500]), limit)]
    assert [len(b) for b, _ in got] == [1000, 500, 1500]
    assert clock.slept == [pytest.approx(0.5), pytest.approx(1.5)]
    plain = _batches([1])
    assert throttled(plain, None) is plain  # no cap: no layer at all
    await plain.aclose()


def test_a_rate_must_be_positive(tmp_path: Path) -> None:
    for rate in (0, -1.0, float("nan")):
        with pytest.raises(UsageError):
            TokenBucket(rate)
    for text in ("0", "-3", "nan", "inf", "fast"):
        done = run_cli("backup", str(tmp_path), "localhost", "x", "--max-rate", text)
        assert done.returncode == 2, text
        assert "--max-rate" in done.stderr


async def test_a_capped_backup_holds_every_document(
    mongo_uri: str, new_database: str, tmp_path: Path
) -> None:
    """The cap only delays reads: every collection's bytes are the server's."""
    seed(mongo_uri, new_database, {"a": 200, "b": 50})
    report = await backup(mongo_uri, str(tmp_path), database=new_database, max_rate=50 * MB)
    members = tar_members((tmp_path / report.archive_key).read_bytes())
    for name in ("a", "b"):
        data = members[f"dump/{new_database}/{name}.bson"]
        assert split_bson(data) == server_documents(mongo_uri, new_database, name)
