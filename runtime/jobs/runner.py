"""Runs one job the way every handler does: a clock, a deadline, metrics in EMF, one summary line,
and on failure a failure metric followed by the exception (so Lambda's Errors metric counts it)."""

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from expiry.runtime.jobs import metrics as m
from expiry.runtime.jobs.config import (
    KIND_ORPHANED_REFERENCES,
    KIND_PG_MONITOR,
    KIND_PG_PURGE,
    KIND_STREAM_CASCADE,
    KIND_SWEEP,
    KIND_TTL_MONITOR,
    Job,
    JobConfigError,
    shard_subset,
)
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
JOB_METRICS = {
    KIND_TTL_MONITOR: (
        m.TTL_ENABLED,
        m.EXPIRED_BACKLOG,
        m.OLDEST_EXPIRED_AGE_SECONDS,
        m.TABLE_ITEM_COUNT,
        m.TABLE_SIZE_BYTES,
        m.UNINDEXED_EXPIRED,
    ),
    KIND_SWEEP: (
        m.ITEMS_DELETED,
        m.ITEMS_SKIPPED,
        m.ITEMS_MARKED,
        m.OBJECTS_DELETED,
        m.UPLOADS_ABORTED,
        m.ORPHANS_DELETED,
        m.OBJECTS_MARKED_KEPT,
        m.MASS_DELETION_REFUSED,
        m.UNINDEXED_EXPIRED,
        m.CLEANUP_ERRORS,
    ),
    KIND_ORPHANED_REFERENCES: (m.ITEMS_SKIPPED, m.ORPHANS_DELETED, m.MASS_DELETION_REFUSED, m.CLEANUP_ERRORS),
    KIND_PG_PURGE: (m.ROWS_PURGED, m.MASS_DELETION_REFUSED),
    KIND_STREAM_CASCADE: (
        m.OBJECTS_DELETED,
        m.UPLOADS_ABORTED,
        m.OBJECTS_MARKED_KEPT,
        m.ITEMS_ARCHIVED,
        m.ITEMS_SKIPPED,
        m.CLEANUP_ERRORS,
    ),
    KIND_PG_MONITOR: (
        m.EXPIRED_BACKLOG,
        m.OLDEST_EXPIRED_AGE_SECONDS,
        m.ROWS_PURGED,
        m.PG_CRON_FAILED_RUNS,
        m.PG_CRON_LAST_SUCCESS_AGE_SECONDS,
        m.MASS_DELETION_REFUSED,
    ),
}
RUN_METRICS = (m.SWEEP_SUCCEEDED, m.SWEEP_FAILED, m.SWEEP_DURATION_MS, m.STOPPED_EARLY)


def published_metrics(kind: str) -> tuple[str, ...]:
    """Every metric a job of ``kind`` publishes (what alarms may watch)."""
    return RUN_METRICS + JOB_METRICS[kind]


Work = Callable[[Job, float, Callable[[], bool], Tally], dict[str, Any]]


def as_invoked(job: Job, event: Any) -> Job:
    """The job as an invocation payload asks for it, which can only make it safer or smaller:
    ``{"dryRun": true}`` forces a dry run, and nothing in a payload turns a configured dry run off;
    ``{"shards": [n, ...]}`` narrows an expiry-index job to some of its shards (one invocation per
    shard or group of shards, fanned out by Step Functions or concurrent invocations)."""
    if not isinstance(event, Mapping):
        return job
    if "dryRun" in event:
        value = event["dryRun"]
        if not isinstance(value, bool):
            raise JobConfigError(f"invocation payload: dryRun: must be true or false, got {value!r}")
        job = dataclasses.replace(job, dry_run=True) if value else job
    if "shards" in event:
        index = job.expiry_index
        allowed = index.shard_numbers() if index else ()
        subset = shard_subset(event["shards"], allowed)
        if index is None or subset is None:
            raise JobConfigError(
                f"invocation payload: shards: must be a non-empty list of this job's expiry-index shards "
                f"{list(allowed)}, got {event['shards']!r}"
            )
        job = dataclasses.replace(job, expiry_index=dataclasses.replace(index, only_shards=subset))
    return job


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
    tally = Tally(stream)
    base = {"job": job.name, "kind": job.kind, "table": job.table, "dry_run": job.dry_run}
    try:
        job = as_invoked(job, event)
        base["dry_run"] = job.dry_run
        details = work(job, clock(), deadline, tally)
    except Exception as error:
        m.emit(
            job.namespace, job.name, job.table, {m.SWEEP_FAILED: 1, m.SWEEP_DURATION_MS: elapsed_ms(started)}, stream
        )
        log_line({"level": "ERROR", "event": "cleanup_failed", **base, "error": repr(error)}, stream)
        raise
    stopped_early = bool(tally.counts["stopped_early"] or tally.counts["stopped_early_reads"])
    values: dict[str, float] = {
        m.SWEEP_SUCCEEDED: 1,
        m.SWEEP_FAILED: 0,
        m.SWEEP_DURATION_MS: elapsed_ms(started),
        m.STOPPED_EARLY: int(stopped_early),
    }
    values.update(
        {
            metric: tally.counts[counter]
            for counter, metric in COUNTER_METRICS.items()
            if metric in JOB_METRICS[job.kind]
        }
    )
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
