"""Runs one job the way every handler does: a clock, a deadline, metrics in EMF, one summary line,
and on failure a failure metric followed by the exception (so Lambda's Errors metric counts it)."""

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TextIO

from expiry.runtime import kinds
from expiry.runtime.jobs import metrics as m
from expiry.runtime.jobs.breaker import scope
from expiry.runtime.jobs.config import Job
from expiry.runtime.jobs.payload import as_invoked
from expiry.runtime.jobs.run_control import Clock, Deadline, LambdaContext, Tally, elapsed_ms, log_line

# Counter of a run -> metric of the contract.
COUNTER_METRICS = {
    "items_deleted": m.ITEMS_DELETED,
    "items_skipped": m.ITEMS_SKIPPED,
    "items_marked": m.ITEMS_MARKED,
    "objects_deleted": m.OBJECTS_DELETED,
    "uploads_aborted": m.UPLOADS_ABORTED,
    "orphans_deleted": m.ORPHANS_DELETED,
    "objects_marked_kept": m.OBJECTS_MARKED_KEPT,
    "items_archived": m.ITEMS_ARCHIVED,
    "mass_deletion_refused": m.MASS_DELETION_REFUSED,
    "errors": m.CLEANUP_ERRORS,
}
RUN_METRICS = (m.SWEEP_SUCCEEDED, m.SWEEP_FAILED, m.SWEEP_DURATION_MS, m.STOPPED_EARLY)


def published_metrics(kind: str) -> tuple[str, ...]:
    """Every metric a job of ``kind`` publishes (what alarms may watch)."""
    return RUN_METRICS + kinds.kind(kind).metrics


Work = Callable[[Job, float, Callable[[], bool], Tally], dict[str, Any]]


class EffectReporter:
    """A run's counter metrics, each published once: an effect's as soon as it is counted (one EMF
    line per committed deletion, abort, mark or archive), and the rest at the run's end or failure.
    Summed, the metrics of a run that died midway and of its rerun equal their effects; a process
    killed outright loses only the effects whose reply it had not yet counted."""

    def __init__(self, job: Job, stream: TextIO | None) -> None:
        self.job, self.stream = job, stream
        self.tally = Tally(stream, self.publish_effects)
        self._reported: Counter[str] = Counter()
        self._lock = threading.Lock()

    def unreported(self) -> dict[str, float]:
        """The job's counter metrics since the last call, now counted as reported."""
        with self._lock:
            counts = self.tally.snapshot()
            values: dict[str, float] = {}
            for counter, metric in COUNTER_METRICS.items():
                if metric in kinds.kind(self.job.kind).metrics:
                    values[metric] = counts[counter] - self._reported[counter]
                    self._reported[counter] = counts[counter]
            return values

    def publish_effects(self) -> None:
        values = {metric: value for metric, value in self.unreported().items() if value}
        if values:
            m.emit(self.job.namespace, self.job.name, self.job.table, values, self.stream)


def run_job(
    job: Job,
    work: Work,
    context: LambdaContext | None,
    clock: Clock = time.time,
    stream: TextIO | None = None,
    event: Any = None,
) -> dict[str, Any]:
    """Run ``work`` as ``event`` asks and report it; re-raise its failure after emitting SweepFailed."""
    started = time.monotonic()
    deadline = Deadline(context, job.safety_margin_seconds)
    reporter = EffectReporter(job, stream)
    tally = reporter.tally
    base: dict[str, Any] = {"job": job.name, "kind": job.kind, "table": job.table, "dry_run": job.dry_run}
    if m.BREAKER_DISABLED in kinds.kind(job.kind).metrics:
        base["breaker"] = scope(job.breaker)  # off, per-table (one budget in a ledger) or per-run
    try:
        job = as_invoked(job, event)
        base["dry_run"] = job.dry_run
        details = work(job, clock(), deadline, tally)
    except Exception as error:
        failed = {m.SWEEP_FAILED: 1, m.SWEEP_DURATION_MS: elapsed_ms(started), **reporter.unreported()}
        m.emit(job.namespace, job.name, job.table, failed, stream)
        log_line({"level": "ERROR", "event": "cleanup_failed", **base, "error": repr(error)}, stream)
        raise
    stopped_early = bool(tally.counts["stopped_early"] or tally.counts["stopped_early_reads"])
    values: dict[str, float] = {
        m.SWEEP_SUCCEEDED: 1,
        m.SWEEP_FAILED: 0,
        m.SWEEP_DURATION_MS: elapsed_ms(started),
        m.STOPPED_EARLY: int(stopped_early),
    }
    values.update(reporter.unreported())
    if m.BREAKER_DISABLED in kinds.kind(job.kind).metrics:
        values[m.BREAKER_DISABLED] = int(job.breaker.allow_mass_deletion)
    values.update({name: details.pop(name) for name in list(details) if name in m.UNITS})
    m.emit(job.namespace, job.name, job.table, values, stream)
    summary = {
        **base,
        "stopped_early": stopped_early,
        "duration_ms": values[m.SWEEP_DURATION_MS],
        "counts": dict(sorted(tally.counts.items())),
        **details,
    }
    log_line({"level": "INFO", "event": "cleanup_summary", **summary}, stream)
    return summary
