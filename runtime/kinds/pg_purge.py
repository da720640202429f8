"""pg-purge: deletes expired rows in PostgreSQL in batches, where pg_cron is not available."""

from typing import TYPE_CHECKING

from expiry.runtime.jobs import metrics as m
from expiry.runtime.kinds.iam import Arns
from expiry.runtime.kinds.kind import Grants, JobKind

if TYPE_CHECKING:
    from expiry.runtime.jobs.config import Job


def grants(job: "Job", arns: Arns) -> Grants:
    return set(), []  # the database secret is every PostgreSQL job's


KIND = JobKind(
    name="pg-purge",
    description="Delete expired PostgreSQL rows in batches (where pg_cron is not available).",
    handler="expiry.runtime.handlers.pg_purge.handler",
    work="expiry.runtime.handlers.postgres_work:purge_work",
    metrics=(m.ROWS_PURGED, m.MASS_DELETION_REFUSED, m.BREAKER_DISABLED),
    grants=grants,
    sections=frozenset({"postgres", "purge"}),
    postgres=True,
    deletes=True,
)
