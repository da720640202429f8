"""ttl-monitor: reads a table's TTL setting and expired backlog, deletes nothing."""

from typing import TYPE_CHECKING

from expiry.runtime.jobs import metrics as m
from expiry.runtime.kinds.iam import Arns, expired_item_reads
from expiry.runtime.kinds.kind import Grants, JobKind

if TYPE_CHECKING:
    from expiry.runtime.jobs.config import Job


def grants(job: "Job", arns: Arns) -> Grants:
    actions, statements = expired_item_reads(job, arns)
    return actions | {"dynamodb:DescribeTable", "dynamodb:DescribeTimeToLive"}, statements


KIND = JobKind(
    name="ttl-monitor",
    description="Report whether TTL is on and keeping up: its attribute, the expired backlog, the oldest expiry.",
    handler="expiry.runtime.handlers.ttl_monitor.handler",
    work="expiry.runtime.handlers.work:monitor_work",
    metrics=(
        m.TTL_ENABLED,
        m.EXPIRED_BACKLOG,
        m.OLDEST_EXPIRED_AGE_SECONDS,
        m.TABLE_ITEM_COUNT,
        m.TABLE_SIZE_BYTES,
        m.UNINDEXED_EXPIRED,
    ),
    grants=grants,
    alarms=("ttl-disabled", "oldest-expired", "backlog", "item-count", "ttl-stalled"),
)
