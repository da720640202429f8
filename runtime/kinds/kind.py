"""What one kind of job is, as data: its handler, its work, the metrics it publishes, the table
actions and statements its role needs, and the alarms only it feeds. Pure: no pulumi, no psycopg."""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from expiry.runtime.jobs.config import Job
    from expiry.runtime.kinds.iam import Arns

# The table actions a job's role needs on its table, and any other statements.
Grants = tuple[set[str], list[dict[str, Any]]]


@dataclass(frozen=True)
class JobKind:
    """One kind of job. ``work`` is "module:factory", imported when a job of this kind runs, so the
    registry imports neither boto3's services nor psycopg."""

    name: str
    description: str
    handler: str
    work: str
    metrics: tuple[str, ...]
    grants: Callable[["Job", "Arns"], Grants]
    sections: frozenset[str] = frozenset()  # the job settings' sections this kind takes, beyond the common ones
    alarms: tuple[str, ...] = ()  # alarms only this kind feeds (those of shared metrics follow the metrics)
    scheduled: bool = True  # ScheduledSweeper runs it (a stream cascade is TtlStreamCascade's)
    sweeping: bool = False  # one DynamoDB call per deletion: more memory and workers, a budget ledger
    postgres: bool = False  # talks to PostgreSQL: needs psycopg and a database secret
    deletes: bool = False  # deletes items or rows: has a mass-deletion breaker
    deletes_objects: Callable[["Job"], bool] = lambda job: False  # S3, by the ownership rule

    def work_factory(self) -> Callable[..., Any]:
        """The factory of this kind's work, given the job's clients (runner.Work)."""
        module, _, name = self.work.partition(":")
        factory: Callable[..., Any] = getattr(importlib.import_module(module), name)
        return factory
