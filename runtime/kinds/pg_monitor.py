"""pg-monitor: reports a PostgreSQL purge's backlog and its pg_cron runs, deletes nothing."""

from typing import TYPE_CHECKING

from expiry.runtime.jobs import metrics as m
from expiry.runtime.kinds.iam import Arns
from expiry.runtime.kinds.kind import Grants, JobKind

if TYPE_CHECKING:
    from expiry.runtime.jobs.config import Job


def grants(job: "Job", arns: Arns) -> Grants:
    return set(), []  # the database secret is every PostgreSQL job's


KIND = JobKind(
    name="pg-monitor",
    description="Report a PostgreSQL purge's expired backlog and its pg_cron runs.",
    handler="expiry.runtime.handlers.pg_monitor.handler",
    work="expiry.runtime.handlers.postgres_work:monitor_work",
    metrics=(
        m.EXPIRED_BACKLOG,
        m.OLDEST_EXPIRED_AGE_SECONDS,
        m.ROWS_PURGED,
        m.PG_CRON_FAILED_RUNS,
        m.PG_CRON_LAST_SUCCESS_AGE_SECONDS,
        m.MASS_DELETION_REFUSED,
    ),
    grants=grants,
    sections=frozenset({"postgres", "purge"}),
    alarms=("pg-failed-runs", "pg-last-success", "pg-backlog"),
    postgres=True,
)
