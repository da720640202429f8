"""orphaned-references: deletes index entries whose target item is gone."""

from typing import TYPE_CHECKING

from expiry.runtime.jobs import metrics as m
from expiry.runtime.kinds.iam import Arns, statement
from expiry.runtime.kinds.kind import Grants, JobKind

if TYPE_CHECKING:
    from expiry.runtime.jobs.config import Job


def grants(job: "Job", arns: Arns) -> Grants:
    target = arns.target_table or arns.table
    return {"dynamodb:Query", "dynamodb:DeleteItem"}, [
        statement("ReferenceTargets", ["dynamodb:GetItem"], [str(target)])
    ]


KIND = JobKind(
    name="orphaned-references",
    description="Delete index entries whose target item no longer exists.",
    handler="expiry.runtime.handlers.orphaned_references.handler",
    work="expiry.runtime.handlers.work:references_work",
    metrics=(m.ITEMS_SKIPPED, m.ORPHANS_DELETED, m.MASS_DELETION_REFUSED, m.BREAKER_DISABLED, m.CLEANUP_ERRORS),
    grants=grants,
    sections=frozenset({"references"}),
    sweeping=True,
    deletes=True,
)
