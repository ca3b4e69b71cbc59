"""``--on-trip COMMAND``: run a program when a tripwire trips, in the background.

The command line is split once (shlex) when the archiver starts; the trip's
details reach the program only through environment variables, never through
a shell string, so a namespace holding shell syntax is only ever data. One
run at a time per rule: a trip while the rule's previous run is going is
logged and skipped. A run that fails is logged; archiving goes on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping

from .._errors import UsageError
from .tripwire import Rule, Trip, iso

log = logging.getLogger("mongosnap.oplog")

ENV_PREFIX = "MONGOSNAP_TRIP_"
CLOSE_GRACE = 10.0


def trip_environment(trip: Trip) -> dict[str, str]:
    """The variables a run gets on top of the archiver's environment."""
    return {
        f"{ENV_PREFIX}NAMESPACE": trip.namespace,
        f"{ENV_PREFIX}RULE": trip.rule.text,
        f"{ENV_PREFIX}COUNT": str(trip.count),
        f"{ENV_PREFIX}WINDOW_START": iso(trip.start),
        f"{ENV_PREFIX}WINDOW_END": iso(trip.end),
    }


class TripCommand:
    """Starts ``argv`` per trip without waiting for it (``close`` ends what still runs)."""

    def __init__(self, command: str) -> None:
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise UsageError(f"--on-trip {command!r}: {exc}") from None
        if not argv:
            raise UsageError("--on-trip: the command is empty")
        if shutil.which(argv[0]) is None:
            raise UsageError(f"--on-trip: {argv[0]!r} is not an executable program")
        self.argv = argv
        self.running: dict[Rule, asyncio.Task[None]] = {}
        self.runs = 0
        self.failures = 0

    def __call__(self, trip: Trip, extra: Mapping[str, str] | None = None) -> None:
        """Called from inside the archiver's event loop; ``extra``: more variables
        (``--stage``'s outcome)."""
        previous = self.running.get(trip.rule)
        if previous is not None and not previous.done():
            log.warning(
                "--on-trip for %s on %s not started: its previous run is still going",
                trip.rule.text,
                trip.namespace,
            )
            return
        task = asyncio.get_running_loop().create_task(self._run(trip, extra or {}))
        self.running[trip.rule] = task

    async def _run(self, trip: Trip, extra: Mapping[str, str]) -> None:
        self.runs += 1
        env = {**os.environ, **trip_environment(trip), **extra}
        try:
            process = await asyncio.create_subprocess_exec(
                *self.argv, env=env, stdin=subprocess.DEVNULL, stdout=2, stderr=2
            )
        except OSError as exc:
            self.failures += 1
            log.error("--on-trip %s could not start: %s", self.argv[0], exc)
            return
        try:
            code = await process.wait()
        except asyncio.CancelledError:
            if process.returncode is None:
                process.kill()
                await asyncio.shield(process.wait())
            raise
        if code != 0:
            self.failures += 1
            log.warning("--on-trip %s for %s exited with %d", self.argv[0], trip.namespace, code)

    async def close(self, grace: float = CLOSE_GRACE) -> None:
        """Give the runs still going ``grace`` seconds, then end them (the archiver stops)."""
        going = [task for task in self.running.values() if not task.done()]
        if going:
            _, late = await asyncio.wait(going, timeout=grace)
            for task in late:
                log.warning("--on-trip %s still running after %.0f s: killed", self.argv[0], grace)
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
