"""PostgreSQL jobs run from Lambda: the batched purge for databases without pg_cron (the maintenance
guide's "Option 3") and the monitor that catches a pg_cron job that fails or silently stops."""

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from expiry.runtime.aws_clients import ClientFactory
from expiry.runtime.jobs import metrics as m
from expiry.runtime.jobs.breaker import report_refusals
from expiry.runtime.jobs.config import Job, JobConfigError
from expiry.runtime.jobs.run_control import Tally
from expiry.runtime.jobs.runner import Work
from expiry.runtime.postgres.catalog import pg_cron_database
from expiry.runtime.postgres.connection import connector
from expiry.runtime.postgres.purge import plan, purge
from expiry.runtime.postgres.spec import CleanupError, PurgeSpec
from expiry.runtime.postgres.status import cron_health, logged_since, status


def purge_spec(job: Job) -> PurgeSpec:
    """The job's purge, with the job's breaker settings."""
    assert job.purge is not None
    breaker = {
        "breaker_max_share": job.breaker.max_share,
        "breaker_max_count": job.breaker.max_count,
        "breaker_ignore_below": job.breaker.ignore_below,
        "allow_mass_deletion": job.breaker.allow_mass_deletion,
    }
    settings = {"job_name": job.name, **job.purge, **breaker, "table": job.table}
    try:
        return PurgeSpec.from_dict(settings)
    except CleanupError as error:
        raise JobConfigError(f"EXPIRY_JOB: purge.{error}") from error


def purge_work(clients: ClientFactory) -> Work:
    def work(job: Job, now: float, should_stop: Callable[[], bool], tally: Tally) -> dict[str, Any]:
        assert job.postgres is not None
        spec = purge_spec(job)
        with connector(clients("secretsmanager"), job.postgres).connect() as conn:
            if job.dry_run:
                the_plan = plan(conn, spec, job.plan_sample_size)
                result = None
            else:
                result = purge(conn, spec, should_stop)
                the_plan = result.plan
        report_refusals(tally, [the_plan.refused] if the_plan.refused else [])
        details: dict[str, Any] = {
            "plan": asdict(the_plan),
            m.MASS_DELETION_REFUSED: int(the_plan.refused is not None),
            m.ROWS_PURGED: result.rows_deleted if result else 0,
        }
        if result is not None:
            if result.stopped_early:
                tally.add("stopped_early")
            details.update(
                rows_deleted=result.rows_deleted,
                rows_skipped=result.rows_skipped,
                batches=result.batches,
                out_of_time=result.out_of_time,
                partitions_dropped=result.partitions_dropped,
            )
        return details

    return work


def monitor_work(clients: ClientFactory) -> Work:
    def work(job: Job, now: float, should_stop: Callable[[], bool], tally: Tally) -> dict[str, Any]:
        assert job.postgres is not None
        spec = purge_spec(job)
        lookback = job.postgres.lookback_seconds
        database = connector(clients("secretsmanager"), job.postgres)
        with database.connect() as conn:
            row = status(conn, spec)
            logged = logged_since(conn, spec, lookback)
            cron_database = pg_cron_database(conn)
        with database.connect(cron_database) as cron:
            health = cron_health(cron, spec.job_name, lookback)
        details: dict[str, Any] = {
            **{key: row[key] for key in ("permanent_rows", "live_rows", "expired_rows", "table_bytes")},
            "cron_database": cron_database,
            "job_scheduled": health["job_scheduled"],
            m.EXPIRED_BACKLOG: row["expired_rows"],
            m.OLDEST_EXPIRED_AGE_SECONDS: row["oldest_expired_age_seconds"],
            m.ROWS_PURGED: logged["rows_purged"],
            m.MASS_DELETION_REFUSED: logged["refused_runs"],
            m.PG_CRON_FAILED_RUNS: health["failed_runs"],
        }
        if health["last_success_age_seconds"] is not None:  # never succeeded: no figure, the alarm sees missing data
            details[m.PG_CRON_LAST_SUCCESS_AGE_SECONDS] = health["last_success_age_seconds"]
        return details

    return work
