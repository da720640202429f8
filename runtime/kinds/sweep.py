"""sweep: deletes expired items, then what they name in S3, by the ownership rule; optionally
stuck uploads and orphaned objects."""

from typing import TYPE_CHECKING

from expiry.runtime.jobs import metrics as m
from expiry.runtime.kinds.iam import Arns, expired_item_reads, inventory_reads, owner_reads
from expiry.runtime.kinds.kind import Grants, JobKind

if TYPE_CHECKING:
    from expiry.runtime.jobs.config import Job


def deletes_objects(job: "Job") -> bool:
    return job.s3 is not None and (job.delete_expired or job.orphaned_objects is not None)


def grants(job: "Job", arns: Arns) -> Grants:
    actions, statements = expired_item_reads(job, arns)
    # DescribeTable: the breaker weighs a plan against the table's item count.
    actions |= {"dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:DescribeTable"}
    if job.stuck_uploads:
        actions.add("dynamodb:UpdateItem")
    if job.stuck_uploads and job.stuck_uploads.since_attribute != job.ttl_attribute:
        actions.add("dynamodb:Scan")
    if job.orphaned_objects:
        actions.add("dynamodb:BatchGetItem")
    if arns.table and deletes_objects(job):
        owner_actions, owner_statements = owner_reads(job, arns.table)
        actions |= owner_actions
        statements += owner_statements
    inventory = job.orphaned_objects.inventory if job.orphaned_objects else None
    if inventory and arns.table and arns.bucket:
        statements += inventory_reads(inventory, arns.bucket, arns.table)
    return actions, statements


KIND = JobKind(
    name="sweep",
    description="Delete expired items and, by the ownership rule, the S3 objects and uploads they name.",
    handler="expiry.runtime.handlers.sweep.handler",
    work="expiry.runtime.handlers.work:sweep_work",
    metrics=(
        m.ITEMS_DELETED,
        m.ITEMS_SKIPPED,
        m.ITEMS_MARKED,
        m.OBJECTS_DELETED,
        m.UPLOADS_ABORTED,
        m.ORPHANS_DELETED,
        m.OBJECTS_MARKED_KEPT,
        m.MASS_DELETION_REFUSED,
        m.BREAKER_DISABLED,
        m.UNINDEXED_EXPIRED,
        m.CLEANUP_ERRORS,
    ),
    grants=grants,
    sections=frozenset({"s3", "stuck_uploads", "orphaned_objects", "delete_expired"}),
    sweeping=True,
    deletes=True,
    deletes_objects=deletes_objects,
)
