"""``oplog --tripwire``: the rules, ``--stage``, the ``--on-trip`` command and the metrics.

With ``--stage`` the command runs once the staging has ended, so that it gets
the staged collection's name (MONGOSNAP_TRIP_STAGED); the log line and the
trip metrics come at the trip itself."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from .._aio import shielded
from .._errors import UsageError
from ._common import prepared_metrics, write_metrics

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..oplog.trip_command import TripCommand
    from ..oplog.tripwire import Trip, Tripwires
    from ..pipelines.trip_stage import Staged, TripStager

log = logging.getLogger("mongosnap.oplog")


class TripwireSetup:
    """Everything checked at start (exit 2 before any work): specs, command, metrics file."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.tripwires: Tripwires | None = None
        self.command: TripCommand | None = None
        self.stager: TripStager | None = None
        self.metrics: Metrics | None = None
        self.args = args
        if not args.tripwire:
            return
        from ..oplog.trip_command import TripCommand
        from ..oplog.tripwire import Tripwires, parse

        rules = list(dict.fromkeys(parse(spec) for spec in args.tripwire))
        self.tripwires = Tripwires(rules, self._tripped)
        self.command = TripCommand(args.on_trip) if args.on_trip else None
        if args.stage:
            from ..pipelines.trip_stage import TripStager

            self.stager = TripStager(self.tripwires.last_counted, self._staged)
        if args.metrics_file or args.metrics_port is not None:
            self.metrics = prepared_metrics("oplog", args.metrics_file)

    def _tripped(self, trip: Trip) -> None:
        if self.metrics is not None:
            self.metrics.record_trip(trip)
            write_metrics(self.metrics, self.args.metrics_file, raising=False)
        if self.stager is not None:
            self.stager(trip)  # the command follows the staging (_staged)
        elif self.command is not None:
            self.command(trip)

    def _staged(self, trip: Trip, staged: Staged) -> None:
        from ..oplog.trip_command import ENV_PREFIX

        if self.metrics is not None:
            self.metrics.record_stage(trip, staged.outcome)
            write_metrics(self.metrics, self.args.metrics_file, raising=False)
        if self.command is not None:
            self.command(
                trip,
                {
                    f"{ENV_PREFIX}STAGED": staged.collection or "",
                    f"{ENV_PREFIX}STAGE_OUTCOME": staged.outcome,
                },
            )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Tripwires | None]:
        """The tripwires while archiving; afterwards the runs of --on-trip end and
        the metrics file is written a last time."""
        with contextlib.ExitStack() as stack:
            port = self.args.metrics_port
            if self.metrics is not None and port is not None:
                try:
                    bound = stack.enter_context(self.metrics.serve(port, self.args.metrics_bind))
                except OSError as exc:
                    raise UsageError(f"cannot serve metrics on port {port}: {exc}") from None
                log.info("serving metrics on http://%s:%d/metrics", self.args.metrics_bind, bound)
            try:
                yield self.tripwires
            finally:
                if self.command is not None:
                    await shielded(self.command.close())
                if self.metrics is not None:
                    write_metrics(self.metrics, self.args.metrics_file, raising=False)
