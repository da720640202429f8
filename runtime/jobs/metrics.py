"""The metric contract: one namespace, one dimension set, every metric name, and the Embedded
Metric Format (EMF) log line that publishes them. Alarms import these names; nothing else types them."""

import json
import sys
import time
from collections.abc import Mapping
from typing import TextIO

DEFAULT_NAMESPACE = "Expiry"
DIMENSIONS = ("Job", "Table")

SWEEP_SUCCEEDED = "SweepSucceeded"
SWEEP_FAILED = "SweepFailed"
SWEEP_DURATION_MS = "SweepDurationMs"
STOPPED_EARLY = "StoppedEarly"
EXPIRED_BACKLOG = "ExpiredBacklog"
OLDEST_EXPIRED_AGE_SECONDS = "OldestExpiredAgeSeconds"
ITEMS_DELETED = "ItemsDeleted"
ITEMS_SKIPPED = "ItemsSkipped"
ITEMS_MARKED = "ItemsMarkedForReview"
OBJECTS_DELETED = "ObjectsDeleted"
UPLOADS_ABORTED = "UploadsAborted"
ORPHANS_DELETED = "OrphansDeleted"
CLEANUP_ERRORS = "CleanupErrors"
TTL_ENABLED = "TtlEnabled"
TABLE_ITEM_COUNT = "TableItemCount"
TABLE_SIZE_BYTES = "TableSizeBytes"
ROWS_PURGED = "RowsPurged"
PG_CRON_FAILED_RUNS = "PgCronFailedRuns"
PG_CRON_LAST_SUCCESS_AGE_SECONDS = "PgCronLastSuccessAgeSeconds"
# A run that would delete more than its breaker allows deletes nothing and reports 1 here.
MASS_DELETION_REFUSED = "MassDeletionRefused"
# 1 for each run of a job whose breaker is off (breaker.allow_mass_deletion): nothing limits its deletions.
BREAKER_DISABLED = "BreakerDisabled"
# Expired items an expiry index cannot see (no shard attribute): the sweep never finds them.
UNINDEXED_EXPIRED = "UnindexedExpired"
# Objects of kept items marked so that no later pass takes them for orphans.
OBJECTS_MARKED_KEPT = "ObjectsMarkedKept"
# Expired items' last images written to the archive (stream cascade).
ITEMS_ARCHIVED = "ItemsArchived"

UNITS: dict[str, str] = {
    SWEEP_SUCCEEDED: "Count",
    SWEEP_FAILED: "Count",
    SWEEP_DURATION_MS: "Milliseconds",
    STOPPED_EARLY: "Count",
    EXPIRED_BACKLOG: "Count",
    OLDEST_EXPIRED_AGE_SECONDS: "Seconds",
    ITEMS_DELETED: "Count",
    ITEMS_SKIPPED: "Count",
    ITEMS_MARKED: "Count",
    OBJECTS_DELETED: "Count",
    UPLOADS_ABORTED: "Count",
    ORPHANS_DELETED: "Count",
    CLEANUP_ERRORS: "Count",
    TTL_ENABLED: "None",
    TABLE_ITEM_COUNT: "Count",
    TABLE_SIZE_BYTES: "Bytes",
    ROWS_PURGED: "Count",
    PG_CRON_FAILED_RUNS: "Count",
    PG_CRON_LAST_SUCCESS_AGE_SECONDS: "Seconds",
    MASS_DELETION_REFUSED: "Count",
    BREAKER_DISABLED: "Count",
    UNINDEXED_EXPIRED: "Count",
    OBJECTS_MARKED_KEPT: "Count",
    ITEMS_ARCHIVED: "Count",
}
ALL_METRICS = tuple(UNITS)


def emf_document(
    namespace: str, job: str, table: str, values: Mapping[str, float], now: float | None = None
) -> dict[str, object]:
    """An EMF document: CloudWatch extracts each value as a metric with the Job and Table dimensions."""
    unknown = sorted(set(values) - set(UNITS))
    if unknown:
        raise ValueError(f"not in the metric contract: {unknown}")
    timestamp = int((time.time() if now is None else now) * 1000)
    return {
        "_aws": {
            "Timestamp": timestamp,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [list(DIMENSIONS)],
                    "Metrics": [{"Name": name, "Unit": UNITS[name]} for name in values],
                }
            ],
        },
        "Job": job,
        "Table": table,
        **values,
    }


def emit(namespace: str, job: str, table: str, values: Mapping[str, float], stream: TextIO | None = None) -> None:
    """Print one EMF line (Lambda sends stdout to CloudWatch Logs, which extracts the metrics)."""
    print(json.dumps(emf_document(namespace, job, table, values)), file=stream or sys.stdout, flush=True)
