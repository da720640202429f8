"""stream-cascade: after TTL deletes an item, deletes what it named in S3 (by the ownership rule)
and archives it, from the table's stream. TtlStreamCascade deploys it, not ScheduledSweeper."""

from typing import TYPE_CHECKING

from expiry.runtime.jobs import metrics as m
from expiry.runtime.kinds.iam import Arns, owner_reads
from expiry.runtime.kinds.kind import Grants, JobKind

if TYPE_CHECKING:
    from expiry.runtime.jobs.config import Job


def grants(job: "Job", arns: Arns) -> Grants:
    if job.s3 is None or not arns.table:
        return set(), []
    # GetItem: the expired item is gone, not written anew; then the ownership rule's reads.
    actions, statements = owner_reads(job, arns.table)
    return {"dynamodb:GetItem", *actions}, statements


KIND = JobKind(
    name="stream-cascade",
    description="After TTL deletes an item, delete what it named in S3 and archive it, from the stream.",
    handler="expiry.runtime.handlers.stream_cascade.handler",
    work="expiry.runtime.handlers.work:stream_work",
    metrics=(
        m.OBJECTS_DELETED,
        m.UPLOADS_ABORTED,
        m.OBJECTS_MARKED_KEPT,
        m.ITEMS_ARCHIVED,
        m.ITEMS_SKIPPED,
        m.CLEANUP_ERRORS,
    ),
    grants=grants,
    sections=frozenset({"s3", "archive_bucket", "archive_prefix"}),
    # Its alarms (alarm_rules.BATCH_RULES), per batch of records: the stream's lag, Lambda errors, the
    # on-failure queue and CleanupErrors.
    alarms=("iterator-age", "errors", "failed-batches", "cleanup-errors"),
    scheduled=False,
    deletes_objects=lambda job: job.s3 is not None,
)
