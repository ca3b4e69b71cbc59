"""Small asyncio helpers the pipelines share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TypeVar

_T = TypeVar("_T")

log = logging.getLogger("mongosnap")


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


async def settled(step: Awaitable[_T]) -> _T:
    """Await a step that must not be cut off midway (a request whose outcome
    decides what is left behind). A cancellation waits for the step to end,
    however often it comes, and is re-raised then: whatever the step did or
    failed to do is known before anything else runs.
    """
    task = asyncio.ensure_future(step)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not task.cancelled() and task.exception() is not None:
            log.warning("while stopping: %s", task.exception())
        raise asyncio.CancelledError
    return task.result()
