"""The work of each kind of job, given its clients: what handlers and the operator CLI call."""

import os
from collections.abc import Callable
from typing import Any

from expiry.runtime import kinds
from expiry.runtime.aws_clients import ClientFactory, client
from expiry.runtime.dynamodb.orphaned_references import IndexSweeper
from expiry.runtime.dynamodb.stream_cascade import StreamCascade
from expiry.runtime.dynamodb.sweep import Sweeper, load_hook
from expiry.runtime.dynamodb.ttl_monitor import inspect_table
from expiry.runtime.jobs import metrics as m
from expiry.runtime.jobs.config import (
    KIND_STREAM_CASCADE,
    Job,
    JobConfigError,
    job_from_environment,
)
from expiry.runtime.jobs.cpu import pin_to_one_cpu
from expiry.runtime.jobs.run_control import Deadline, Tally
from expiry.runtime.jobs.runner import Work, run_job


def default_clients(job: Job) -> ClientFactory:
    """Clients whose calls end within the job's safety margin: the deadline keeps that much of
    Lambda's time free, so a call started before it cannot outlast the function."""
    return lambda service: client(service, job.workers, float(job.safety_margin_seconds))


def monitor_work(clients: ClientFactory) -> Work:
    def work(job: Job, now: float, should_stop: Callable[[], bool], tally: Tally) -> dict[str, Any]:
        report = inspect_table(clients("dynamodb"), job, now, tally, should_stop)
        return {
            **report,
            m.TTL_ENABLED: int(report["ttl_enabled"]),
            m.EXPIRED_BACKLOG: report["expired_backlog"],
            m.OLDEST_EXPIRED_AGE_SECONDS: report["oldest_expired_age_seconds"],
            m.TABLE_ITEM_COUNT: report["item_count"],
            m.TABLE_SIZE_BYTES: report["table_size_bytes"],
            m.UNINDEXED_EXPIRED: report["unindexed_expired"],
        }

    return work


def sweep_work(clients: ClientFactory) -> Work:
    def work(job: Job, now: float, should_stop: Callable[[], bool], tally: Tally) -> dict[str, Any]:
        s3 = clients("s3") if job.s3 else None
        planning_over = should_stop.planning_over if isinstance(should_stop, Deadline) else should_stop
        sweeper = Sweeper(job, clients("dynamodb"), s3, now, should_stop, tally, load_hook(job), planning_over)
        report = sweeper.run()
        budget = {"budget": report["budget"]} if report["budget"] else {}  # the breaker's window, with a ledger
        return {"plan": report["plan"], m.UNINDEXED_EXPIRED: report["unindexed_expired"], **budget}

    return work


def references_work(clients: ClientFactory) -> Work:
    def work(job: Job, now: float, should_stop: Callable[[], bool], tally: Tally) -> dict[str, Any]:
        return IndexSweeper(job, clients("dynamodb"), now, should_stop, tally).run()

    return work


def stream_work(clients: ClientFactory, records: list[dict[str, Any]]) -> Work:
    def work(job: Job, now: float, should_stop: Callable[[], bool], tally: Tally) -> dict[str, Any]:
        return StreamCascade(job, clients("dynamodb"), clients("s3"), tally, should_stop).run(records)

    return work


def stream_entry_point() -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The Lambda handler of a stream-cascade job: a batch of stream records in, the partial batch
    response out (Lambda retries from the earliest failed record)."""
    job = job_of_kind(KIND_STREAM_CASCADE)
    clients = default_clients(job)
    pin_to_one_cpu()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        records = event.get("Records", []) if isinstance(event, dict) else []
        summary = run_job(job, stream_work(clients, records), context, event=event)
        return {"batchItemFailures": summary["batch_item_failures"]}

    return handler


def check_kind(job: Job, expected_kind: str) -> Job:
    """``job``, refused when it is of another kind than the handler serves."""
    if job.kind != expected_kind:
        raise JobConfigError(f"EXPIRY_JOB: kind: this handler runs {expected_kind} jobs, got {job.kind!r}")
    return job


def job_of_kind(kind: str) -> Job:
    """The job in EXPIRY_JOB, read and checked at cold start."""
    return check_kind(job_from_environment(os.environ), kind)


def work_for(job: Job, expected_kind: str, clients: ClientFactory | None = None) -> Work:
    """The work of ``job``, refusing a job of another kind than the handler serves."""
    # Imported now: only PostgreSQL kinds' work imports psycopg, which only their functions ship with.
    return kinds.kind(check_kind(job, expected_kind).kind).work_factory()(clients or default_clients(job))


def entry_point(kind: str) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """A Lambda handler for jobs of ``kind``: EXPIRY_JOB is read and checked now, at cold start, and
    the process is kept on one CPU when the function has at most one vCPU's time."""
    job = job_from_environment(os.environ)
    work = work_for(job, kind)
    pin_to_one_cpu()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return run_job(job, work, context, event=event)

    return handler
