"""Pausing a provisioned cleanup from the CLI (`expiry pause --postgres DSN --job-name NAME`): its pg_cron jobs,
the purge and its history job, made inactive (pg_cron does not run them) or active again in place with
cron.alter_job, in one transaction, and only when every job of that name carries the job's marker."""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from expiry.runtime.postgres.catalog import pg_cron_database
from expiry.runtime.postgres.provision import set_active
from expiry.runtime.postgres.spec import CleanupError, cron_command, owned_marker

HISTORY_SUFFIX = "-history"  # PurgeSpec.history_job


@dataclass(frozen=True)
class CronJob:
    """A pg_cron job of the cleanup's name (or its history job's), and whether Expiry's marker leads its command."""

    job_id: int
    name: str
    role: str
    active: bool
    ours: bool

    def shown(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "active": self.active}


@contextlib.contextmanager
def cron_connection(conninfo: str) -> Iterator[psycopg.Connection]:
    """A connection to pg_cron's database, from a connection string to the table's (or pg_cron's) database."""
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=15) as conn:
        database = pg_cron_database(conn)
        if database == conn.info.dbname:
            yield conn
            return
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=15, dbname=database) as cron:
        yield cron


def cron_jobs(cron: psycopg.Connection, job_name: str) -> list[CronJob]:
    """The pg_cron jobs named ``job_name`` or its history job's (of any role the connected one may see)."""
    rows = cron.execute(
        "SELECT jobid, jobname, username, active, starts_with(command, %s) FROM cron.job "
        "WHERE jobname = ANY(%s) ORDER BY jobname, username",
        (cron_command(job_name, ""), [job_name, job_name + HISTORY_SUFFIX]),
    ).fetchall()
    return [CronJob(*row) for row in rows]


def _owned_jobs(cron: psycopg.Connection, job_name: str) -> list[CronJob]:
    """The cleanup's jobs; a CleanupError naming the field when there is none, or when one of them lacks the marker."""
    jobs = cron_jobs(cron, job_name)
    if not any(job.name == job_name for job in jobs):
        raise CleanupError(
            f"job_name: no pg_cron job {job_name!r} in pg_cron's database {cron.info.dbname!r} "
            "(that the connected role may see); nothing was changed"
        )
    foreign = [job for job in jobs if not job.ours]
    if foreign:
        named = ", ".join(f"pg_cron job {job.name!r} of role {job.role!r}" for job in foreign)
        raise CleanupError(
            f"job_name: {named} was not created by Expiry (its command does not start with the marker "
            f"/* {owned_marker(job_name)} */); Expiry pauses and resumes only its own jobs; nothing was changed"
        )
    return jobs


def set_paused(cron: psycopg.Connection, job_name: str, paused: bool) -> dict[str, Any]:
    """Pause (or resume) the cleanup ``job_name``'s pg_cron jobs in one transaction; what changed and what
    already was so. Refused whole (CleanupError) unless every job of the name carries the job's marker."""
    with cron.transaction():
        jobs = _owned_jobs(cron, job_name)
        changed = set(set_active(cron, [job.job_id for job in jobs], not paused))
    return {
        "job_name": job_name,
        "paused": "yes" if paused else "no",
        "pg_cron_jobs_changed": [
            job.shown() | {"active": f"{job.active} -> {not paused}"} for job in jobs if job.job_id in changed
        ],
        "pg_cron_jobs_unchanged": [job.shown() for job in jobs if job.job_id not in changed],
    }


def pause_status(cron: psycopg.Connection, job_name: str) -> dict[str, Any]:
    """`paused`: yes, no or partly from whether the cleanup's jobs are active; unknown (with why) when there is
    no job of the name with Expiry's marker."""
    jobs = [job for job in cron_jobs(cron, job_name) if job.ours]
    if not any(job.name == job_name for job in jobs):
        return {"paused": "unknown", "paused_note": f"no pg_cron job {job_name!r} created by Expiry"}
    inactive = {not job.active for job in jobs}
    return {
        "paused": "partly" if len(inactive) > 1 else "yes" if inactive == {True} else "no",
        "pg_cron_jobs": [job.shown() for job in jobs],
    }
