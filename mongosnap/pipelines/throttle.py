"""``backup --max-rate``: a token bucket on the bytes read from the server.

A daytime backup must not starve the application sharing its server: every
batch received costs its length in tokens, refilled at ``rate`` bytes per
second up to ``burst``. A batch may overdraw the bucket (batches are bigger
than a fraction of a second at low caps); the reader then waits until the debt
is paid, so the rate over any longer stretch stays at the cap. All the readers
of a run share one bucket: the cap is the whole backup's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

from .._errors import UsageError

Batch = tuple[bytes, int]


class TokenBucket:
    """Rate limiter over byte counts; ``clock`` and ``sleep`` are injectable (tests)."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if not rate > 0:
            raise UsageError(f"the read rate cap must be more than 0 bytes/s, not {rate}")
        self.rate = float(rate)
        self.burst = self.rate if burst is None else float(burst)  # a second's worth
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._at = clock()
        self.waited = 0.0
        """Seconds spent waiting in total (for logs and benchmarks)."""

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def delay(self, size: int) -> float:
        """Take ``size`` tokens; the seconds to wait before reading on (0: none)."""
        self._refill()
        self._tokens -= size
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def take(self, size: int) -> None:
        """Take ``size`` tokens, waiting until the bucket is out of debt."""
        wait = self.delay(size)
        if wait > 0:
            self.waited += wait
            await self._sleep(wait)


def throttled(
    batches: AsyncGenerator[Batch, None], bucket: TokenBucket | None
) -> AsyncGenerator[Batch, None]:
    """``batches``, each paid for in ``bucket`` once received (as they are without one)."""
    return batches if bucket is None else _paid(batches, bucket)


async def _paid(
    batches: AsyncGenerator[Batch, None], bucket: TokenBucket
) -> AsyncGenerator[Batch, None]:
    async with contextlib.aclosing(batches):
        async for batch in batches:
            await bucket.take(len(batch[0]))
            yield batch
