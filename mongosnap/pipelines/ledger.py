"""What a restore run created in the database, and whether any of it is left.

Every staging collection (and, in the copy fallback, a real name being
filled) is recorded here before the command that creates it is sent, and
forgotten only once it is published. At the end of a run, however it ends,
``finish()`` looks each one up on the server again and drops what is there: a
late insert can re-create a collection that was already dropped. Then
``statement()`` says truthfully what is left, for the CLI's last line.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from .._errors import MongosnapError
from ..source import Source

log = logging.getLogger("mongosnap.restore")

DROP_SECONDS = 15.0
"""How long one cleanup drop (or check) may take before it is reported as not done."""


@dataclass
class StagingLedger:
    """The collections a run created and has not yet published or removed.

    ``sweep()`` checks the server at the end (a late insert can re-create a
    dropped collection), and ``statement()`` says truthfully what is left.
    """

    live: set[tuple[str, str]] = field(default_factory=set)
    leftovers: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    """Collections made visible under their real name, in order."""
    swept: bool = False
    refills: dict[str, Refill] = field(default_factory=dict)
    """Live collections missing documents were put back into (heal
    --restore-missing): inserted for good, so an interruption must say so."""

    def track(self, database: str, name: str) -> None:
        self.live.add((database, name))

    def refill(self, database: str, name: str, archived: int, live: int) -> Refill:
        """The record of putting missing documents back into ``database.name``."""
        return self.refills.setdefault(f"{database}.{name}", Refill(archived, live))

    def forget(self, database: str, name: str) -> None:
        """``name`` was renamed away or published: no longer ours to remove."""
        self.live.discard((database, name))

    @property
    def clean(self) -> bool:
        """True when nothing this run created is left or unchecked."""
        return not self.live and not self.leftovers and not self.unchecked

    async def finish(self, target: Source) -> None:
        """The end of every run, however it ends: sweep, in bounded time."""
        try:
            async with asyncio.timeout(4 * DROP_SECONDS):
                await self.sweep(target)
        except TimeoutError:
            log.warning("could not finish checking for staging collections")

    async def remove(self, target: Source, database: str, name: str) -> bool:
        """Drop ``name`` within DROP_SECONDS; False (and kept for the sweep) if not done."""
        try:
            async with asyncio.timeout(DROP_SECONDS):
                await target.drop(database, name)
        except (MongosnapError, TimeoutError) as exc:
            log.warning("could not drop %s.%s: %s", database, name, exc)
            return False
        return True

    async def sweep(self, target: Source) -> None:
        """Drop again whatever is still there, then record what could not be removed."""
        self.leftovers, self.unchecked = [], []
        by_database: dict[str, set[str]] = {}
        for database, name in self.live:
            by_database.setdefault(database, set()).add(name)
        for database, names in sorted(by_database.items()):
            await self._sweep_one(target, database, names)
        self.swept = True

    async def _sweep_one(self, target: Source, database: str, names: set[str]) -> None:
        for attempt in range(3):
            try:
                async with asyncio.timeout(DROP_SECONDS):
                    present = names & await target.collection_names(database)
            except (MongosnapError, TimeoutError):
                self.unchecked += sorted(f"{database}.{n}" for n in names)
                return
            if not present:
                break
            for name in present:
                await self.remove(target, database, name)
            await asyncio.sleep(0.2 * attempt)
        else:
            self.leftovers += sorted(f"{database}.{n}" for n in present)
            return
        for name in names:
            self.live.discard((database, name))

    def statement(self) -> str:
        """What a person may be told about what this run left in the database."""
        if not self.swept and self.live:
            names = sorted(f"{d}.{n}" for d, n in self.live)
            return f"could not check that {', '.join(names)} were removed"
        parts = []
        if self.leftovers:
            parts.append(
                f"left behind: {', '.join(self.leftovers)} "
                "(the next heal or restore of that collection drops it)"
            )
        if self.unchecked:
            parts.append(f"could not check that {', '.join(self.unchecked)} were removed")
        return "; ".join(parts) or "nothing was left behind"

    def report(self) -> str:
        """What was completed, then what is left: for a run that was cut short."""
        done = ", ".join(self.published) or "nothing"
        refills = "".join(f"; {r.report(n)}" for n, r in sorted(self.refills.items()))
        return f"restored before it stopped: {done}{refills}; {self.statement()}"


@dataclass
class Refill:
    """Documents put back into a live collection: they stay there, whatever ends the run."""

    archived: int
    live: int
    """The archive's count and the live one when the repair began."""
    inserted: int = 0
    complete: bool = False

    def report(self, name: str) -> str:
        if self.complete:
            return f"{self.inserted:,} missing documents put back into {name}"
        # Partly refilled, the collection may no longer pass for damaged: say what a rerun needs.
        return (
            f"the repair of {name} was interrupted after putting back {self.inserted:,} "
            f"missing documents (a batch in flight may have landed too); it holds about "
            f"{self.live + self.inserted:,} documents, the archive {self.archived:,}: heal "
            "--restore-missing again, with a --shrink-threshold under the share still "
            "missing, puts back the rest"
        )
