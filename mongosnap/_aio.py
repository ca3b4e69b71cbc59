"""Small asyncio helpers the pipelines share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable


async def shielded(cleanup: Awaitable[None]) -> None:
    """Run a cleanup to its end even if the caller is being cancelled.

    The cancellation is re-raised once the cleanup is done; a cleanup that
    fails while we are cancelled is not allowed to hide the cancellation.
    """
    task = asyncio.ensure_future(cleanup)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise
