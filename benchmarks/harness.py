"""Measure one command as its own process: wall seconds, CPU seconds, peak RSS.

A child's ``ru_maxrss`` on Linux starts from the high-water mark of the
process it was spawned from (the forked or vfork-shared memory image counts
until exec), so a benchmark process holding pymongo and a few hundred MB
would lend its own peak to every contender. Each command is therefore started
by a tiny launcher (``python -I -S``, about 10 MiB) that spawns it, waits for
it with ``wait4`` and writes that child's own figures to a file: wall seconds
around spawn and wait, user + system CPU seconds of the child (and of any
children it waited for), and its peak RSS. A peak below the launcher's own
(``launcher_floor_mib``) reads as the launcher's.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LAUNCHER = """
import os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
with open(out, "w") as handle:
    handle.write(f"{wall} {usage.ru_utime + usage.ru_stime} {usage.ru_maxrss} "
                 f"{os.waitstatus_to_exitcode(status)}")
"""


class BenchError(Exception):
    """A contender failed, its result did not verify, or the set-up is unusable."""


@dataclass
class Sample:
    """One process: wall and CPU seconds, peak RSS in MiB, what it printed."""

    wall: float
    cpu: float
    rss_mib: float
    stdout: str = field(default="", repr=False)

    def figures(self) -> dict[str, float]:
        return {"wall": self.wall, "cpu": self.cpu, "rss_mib": self.rss_mib}


def measure(
    argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Sample:
    """Run ``argv`` through the launcher; BenchError with its stderr when it fails."""
    with tempfile.NamedTemporaryFile("r", prefix="bench-usage-") as usage:
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", LAUNCHER, usage.name, *argv],
            capture_output=True,
            env=env,
            cwd=cwd,
            check=False,
        )
        figures = usage.read().split()
    if done.returncode or len(figures) != 4 or figures[3] != "0":
        tail = done.stderr.decode(errors="replace")[-2000:]
        code = figures[3] if len(figures) == 4 else done.returncode
        raise BenchError(f"{Path(argv[0]).name} {' '.join(argv[1:3])} exited {code}: {tail}")
    wall, cpu, rss_kib = float(figures[0]), float(figures[1]), int(figures[2])
    return Sample(wall, cpu, rss_kib / 1024, done.stdout.decode(errors="replace"))


def launcher_floor_mib() -> float:
    """The peak RSS the launcher itself reports for a process that uses next to none."""
    return measure(["true"]).rss_mib


@dataclass
class Run:
    """One contender once: the sum of its stages (peak RSS: the largest), plus extras."""

    stages: dict[str, Sample]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def wall(self) -> float:
        return sum(s.wall for s in self.stages.values())

    @property
    def cpu(self) -> float:
        return sum(s.cpu for s in self.stages.values())

    @property
    def rss_mib(self) -> float:
        return max(s.rss_mib for s in self.stages.values())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"wall": self.wall, "cpu": self.cpu, "rss_mib": self.rss_mib}
        if len(self.stages) > 1:
            out["stages"] = {name: s.figures() for name, s in self.stages.items()}
        return out | self.extra


@dataclass
class Summary:
    """A contender over the rounds: min and median of wall and CPU, max of peak RSS."""

    runs: list[Run]

    def _values(self, what: str) -> list[float]:
        return [float(getattr(r, what)) for r in self.runs]

    def min(self, what: str) -> float:
        return min(self._values(what))

    def median(self, what: str) -> float:
        return statistics.median(self._values(what))

    def stage(self, name: str, what: str) -> list[float]:
        return [getattr(r.stages[name], what) for r in self.runs]

    def to_json(self) -> dict[str, Any]:
        return {
            "wall_min": self.min("wall"),
            "wall_median": self.median("wall"),
            "cpu_min": self.min("cpu"),
            "cpu_median": self.median("cpu"),
            "rss_mib_max": max(self._values("rss_mib")),
            "runs": [r.to_json() for r in self.runs],
        }


def rotated(names: list[str], round_index: int) -> list[str]:
    """The order of round ``round_index``: every contender once, the start moving by one."""
    shift = round_index % len(names)
    return names[shift:] + names[:shift]


def machine() -> dict[str, Any]:
    """What the figures ran on, for the JSON next to them."""
    load = os.getloadavg()
    return {"cores": os.cpu_count(), "python": sys.version.split()[0], "loadavg": load}
