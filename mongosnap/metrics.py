"""Prometheus metrics for one command: a textfile for node_exporter, or /metrics.

Every ``Metrics`` owns a private ``CollectorRegistry``, so nothing is global:
two runs in one process (a service, a test) never share counters. Names:

    mongosnap_last_run_timestamp_seconds{command}        gauge, end of the last run
    mongosnap_last_success_timestamp_seconds{command}    gauge, end of the last success
    mongosnap_last_duration_seconds{command}             gauge
    mongosnap_last_run_success{command}                  gauge, 1 after a success, 0 after a failure
    mongosnap_runs_total{command,outcome}                counter, outcome success|failure
    mongosnap_failures_total{command,kind}               counter, kind = error class
    mongosnap_bytes_in_total{command}                    counter, bytes read
    mongosnap_bytes_out_total{command}                   counter, bytes written
    mongosnap_documents_total{command}                   counter, documents moved
    mongosnap_collections_restored_total{command}        counter (heal, restore)
    mongosnap_archives_deleted_total{command}            counter (prune)
    mongosnap_undo_documents_total{command,outcome}      counter (undo: restored, removed,
                                                          kept_inserted, already, conflict)
    mongosnap_undo_touched_documents{command}            gauge, documents the last window touched
    mongosnap_undo_conflicts{command}                    gauge, conflicts the last undo left
    mongosnap_tripwire_trips_total{command,namespace,rule}  counter (oplog --tripwire)
    mongosnap_tripwire_last_trip_timestamp_seconds{command} gauge, wall clock of the last trip
    mongosnap_tripwire_stages_total{command,namespace,rule,outcome}  counter (oplog --stage:
                                                          staged, empty, timeout, failed, skipped)
    mongosnap_drill_last_success_timestamp_seconds{command}  gauge, end of the last passed drill
    mongosnap_drill_duration_seconds{command}            gauge, the last drill's length
    mongosnap_drill_rto_seconds{command}                 gauge, its restore and replay time
    mongosnap_drill_rpo_seconds{command}                 gauge, its archive's age
    mongosnap_drill_failed_checks{command}               gauge, its failures (0 when it passed)

The drill gauges exist only in a ``drill`` run's registry; a drill that
fails counts in ``mongosnap_failures_total{kind="DrillFailed"}``.

A textfile outlives the process that writes it, so a run continues from the
previous file (``carry_over``): counters keep growing across cron runs, and a
failed run keeps the last success. Without a previous file (a first run, or
``/metrics`` of a watch) counters start at 0, as Prometheus expects of a new process.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client import write_to_textfile as _write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from .oplog.tripwire import Trip
    from .pipelines.backup import BackupReport
    from .pipelines.drill import DrillReport
    from .pipelines.heal import HealReport
    from .pipelines.prune import PruneReport
    from .pipelines.restore import RestoreReport
    from .pipelines.undo import UndoReport

DEFAULT_BIND = "127.0.0.1"
_PREFIX = "mongosnap"


class Metrics:
    """The metrics of one command (``backup``, ``restore``, ``heal``, ``prune``) in a
    private registry."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.registry = CollectorRegistry(auto_describe=True)
        self._gauges: dict[str, Gauge] = {}
        self._counters: dict[str, tuple[Counter, tuple[str, ...]]] = {}
        gauge, counter = self._gauge, self._counter
        self.last_run = gauge("last_run_timestamp_seconds", "End of the last run")
        self.last_success = gauge("last_success_timestamp_seconds", "End of the last success")
        self.duration = gauge("last_duration_seconds", "Length of the last run")
        self.outcome = gauge("last_run_success", "1 if the last run succeeded, 0 if it failed")
        self.runs = counter("runs", "Runs by outcome (success, failure)", "outcome")
        self.failures = counter("failures", "Failed runs by kind (error class)", "kind")
        self.bytes_in = counter("bytes_in", "Bytes read (from MongoDB or the storage)")
        self.bytes_out = counter("bytes_out", "Bytes written (archive bytes for backup)")
        self.documents = counter("documents", "Documents dumped or restored")
        self.restored = counter("collections_restored", "Collections restored")
        self.deleted = counter("archives_deleted", "Archives deleted")
        self.trips = counter(
            "tripwire_trips", "Tripwire trips by namespace and rule", "namespace", "rule"
        )
        self.last_trip = gauge(
            "tripwire_last_trip_timestamp_seconds", "When a tripwire last tripped"
        )
        self.stages = counter(
            "tripwire_stages",
            "Undo collections staged at a trip (--stage), by outcome",
            "namespace",
            "rule",
            "outcome",
        )
        if command == "drill":
            self.drill_success = gauge(
                "drill_last_success_timestamp_seconds", "End of the last drill that passed"
            )
            self.drill_duration = gauge("drill_duration_seconds", "Length of the last drill")
            self.drill_rto = gauge("drill_rto_seconds", "Restore and replay time of the last drill")
            self.drill_rpo = gauge("drill_rpo_seconds", "Age of the last drill's archive")
            self.drill_failed = gauge("drill_failed_checks", "Failures of the last drill")
        self.undone = counter("undo_documents", "Undo: documents by outcome", "outcome")
        self.touched = gauge("undo_touched_documents", "Undo: documents the last window touched")
        self.conflicts = gauge("undo_conflicts", "Undo: conflicts the last undo left untouched")
        # Series exist (at 0) before the first run, so alerts on absence are not needed.
        for total in (self.bytes_in, self.bytes_out, self.documents, self.restored, self.deleted):
            total.labels(command).inc(0)
        for outcome in ("success", "failure"):
            self.runs.labels(command, outcome).inc(0)

    def carry_over(self, previous: str) -> None:
        """Continue from ``previous``, an exposition this command wrote: its counters
        grow from their totals there, its gauges (last success...) hold until set.

        Only this command's series are taken, and only values a counter or gauge
        could hold. Raises ValueError, before changing anything, for text that
        is not the Prometheus text format.
        """
        found = [
            sample
            for family in text_string_to_metric_families(previous)
            for sample in family.samples
            if sample.labels.get("command") == self.command
        ]
        for sample in found:
            value, labels = float(sample.value), set(sample.labels)
            if not math.isfinite(value):
                continue
            if sample.name in self._counters and value >= 0:
                counter, names = self._counters[sample.name]
                if labels == set(names):
                    counter.labels(**sample.labels).inc(value)
            elif sample.name in self._gauges and labels == {"command"}:
                self._gauges[sample.name].labels(self.command).set(value)

    def _gauge(self, name: str, doc: str) -> Gauge:
        gauge = Gauge(f"{_PREFIX}_{name}", doc, ["command"], registry=self.registry)
        self._gauges[f"{_PREFIX}_{name}"] = gauge
        return gauge

    def _counter(self, name: str, doc: str, *labels: str) -> Counter:
        names = ("command", *labels)
        counter = Counter(f"{_PREFIX}_{name}", doc, names, registry=self.registry)
        self._counters[f"{_PREFIX}_{name}_total"] = (counter, names)  # the samples' name
        return counter

    @contextlib.contextmanager
    def run(self) -> Iterator[None]:
        """Time one run; count it as a success, or a failure of the raised kind."""
        started = time.monotonic()
        try:
            yield
        except BaseException as exc:
            self._finish(started, kind=type(exc).__name__)
            raise
        self._finish(started, kind=None)

    def _finish(self, started: float, kind: str | None) -> None:
        now = time.time()
        self.duration.labels(self.command).set(time.monotonic() - started)
        self.last_run.labels(self.command).set(now)
        self.outcome.labels(self.command).set(1 if kind is None else 0)
        if kind is None:
            self.last_success.labels(self.command).set(now)
            self.runs.labels(self.command, "success").inc()
        else:
            self.runs.labels(self.command, "failure").inc()
            self.failures.labels(self.command, kind).inc()

    def add(
        self,
        *,
        bytes_in: int = 0,
        bytes_out: int = 0,
        documents: int = 0,
        restored: int = 0,
        deleted: int = 0,
    ) -> None:
        self.bytes_in.labels(self.command).inc(bytes_in)
        self.bytes_out.labels(self.command).inc(bytes_out)
        self.documents.labels(self.command).inc(documents)
        self.restored.labels(self.command).inc(restored)
        self.deleted.labels(self.command).inc(deleted)

    def record_backup(self, result: BackupReport) -> None:
        self.add(bytes_in=result.bytes_in, bytes_out=result.bytes_out, documents=result.documents)

    def record_heal(self, report: HealReport) -> None:
        restored = [o for o in report.restored if o.status == "restored"]
        self.add(
            bytes_in=report.bytes_fetched,
            documents=sum(o.documents for o in restored) + sum(d.inserted for d in report.damaged),
            restored=len(restored),
        )

    def record_restore(self, report: RestoreReport) -> None:
        restored = [c for c in report.collections if c.status == "restored"]
        self.add(
            bytes_in=report.bytes_fetched,
            documents=sum(c.documents for c in restored),
            restored=len(restored),
        )

    def record_drill(self, report: DrillReport) -> None:
        self.restored.labels(self.command).inc(sum(1 for c in report.collections if c.ok))
        self.documents.labels(self.command).inc(sum(c.documents for c in report.collections))
        self.drill_duration.labels(self.command).set(report.duration)
        self.drill_rto.labels(self.command).set(report.rto_seconds)
        self.drill_rpo.labels(self.command).set(report.rpo_seconds)
        self.drill_failed.labels(self.command).set(len(report.failures))
        if report.ok and report.finished is not None:
            self.drill_success.labels(self.command).set(report.finished.timestamp())

    def record_prune(self, report: PruneReport) -> None:
        if not report.dry_run:
            self.add(deleted=len(report.deleted))

    def record_trip(self, trip: Trip) -> None:
        self.trips.labels(self.command, trip.namespace, trip.rule.text).inc()
        self.last_trip.labels(self.command).set(time.time())

    def record_stage(self, trip: Trip, outcome: str) -> None:
        self.stages.labels(self.command, trip.namespace, trip.rule.text, outcome).inc()

    def record_undo(self, report: UndoReport) -> None:
        self.add(bytes_in=report.bytes_fetched)
        self.touched.labels(self.command).set(report.touched)
        self.conflicts.labels(self.command).set(report.conflicts)
        if report.mode == "dry_run":
            return
        outcomes = {
            "restored": report.restored,
            "removed": report.removed,
            "kept_inserted": report.kept_inserted,
            "already": report.already,
            "conflict": report.conflicts,
        }
        for outcome, value in outcomes.items():
            self.undone.labels(self.command, outcome).inc(value)

    def write_textfile(self, path: str) -> None:
        """Write atomically (a temporary file beside ``path``, then a rename)."""
        _write_to_textfile(path, self.registry)

    @contextlib.contextmanager
    def serve(self, port: int, addr: str = DEFAULT_BIND) -> Iterator[int]:
        """Serve ``/metrics`` over HTTP while inside; yields the bound port (0 picks one)."""
        server, thread = start_http_server(port, addr=addr, registry=self.registry)
        try:
            yield int(server.server_port)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
