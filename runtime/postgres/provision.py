"""Provisioning a cleanup, all or nothing and idempotent: its schema, log tables, procedure, views and pg_cron
jobs, each marked as its own; and their removal. Run by the Pulumi dynamic provider from the deploying
machine, and in PgCronCleanup's VPC mode by a Lambda inside the database's VPC, invoked by
aws.lambda_.Invocation with a CRUD lifecycle (handle: the payload carries the cleanup and where the database
is; the password comes from Secrets Manager)."""

import contextlib
from collections.abc import Callable
from typing import Any, TypedDict

import psycopg
from psycopg import sql

from expiry.runtime.jobs.config import JobConfigError, Postgres
from expiry.runtime.postgres.catalog import (
    check_extra_column,
    check_partitioned,
    column_type,
    has_index,
    one_row,
    pg_cron_database,
)
from expiry.runtime.postgres.connection import Connector, connector
from expiry.runtime.postgres.grants import missing_grants
from expiry.runtime.postgres.ownership import (
    Owned,
    claim,
    create_archive,
    drop_if_ours,
    drop_schema_if_ours,
    mark,
    own_schema,
    scheduling_role,
    schema_is_ours,
)
from expiry.runtime.postgres.procedure import procedure
from expiry.runtime.postgres.spec import MODE_DROP_PARTITIONS, CleanupError, PurgeSpec, cron_command
from expiry.runtime.postgres.statements import history_prune, runs_view, status_view


class ProvisionState(TypedDict):
    """What provisioning created and found: the state the dynamic provider and the VPC provisioner keep."""

    cron_database: str
    column_kind: str
    job_id: int
    history_job_id: int
    created_schema: bool
    created_index: bool
    expiry_column_indexed: bool


def _schedule(cron: psycopg.Connection, job: str, schedule: str, command: str, database: str) -> int:
    """Schedule ``job`` as the current user (in place when it exists), to run in ``database``."""
    if database == cron.info.dbname:
        return one_row(cron.execute("SELECT cron.schedule(%s, %s, %s)", (job, schedule, command)))[0]
    existing = cron.execute(
        "SELECT jobid FROM cron.job WHERE jobname = %s AND username = current_user", (job,)
    ).fetchone()
    if existing:
        cron.execute("SELECT cron.alter_job(%s, %s, %s, %s)", (existing[0], schedule, command, database))
        return existing[0]
    return one_row(
        cron.execute("SELECT cron.schedule_in_database(%s, %s, %s, %s)", (job, schedule, command, database))
    )[0]


def set_active(cron: psycopg.Connection, job_ids: list[int], active: bool) -> list[int]:
    """Make the jobs ``job_ids`` active (pg_cron runs them) or not, in place (cron.alter_job), each only if
    it is not so already; the ids it changed."""
    return [
        row[0]
        for row in cron.execute(
            "SELECT jobid, cron.alter_job(jobid, active => %s) FROM cron.job WHERE jobid = ANY(%s) AND active <> %s "
            "ORDER BY jobid",
            (active, job_ids, active),
        ).fetchall()
    ]


LOG_COLUMNS = (
    "finished_at timestamptz",
    "cutoff text",
    "expired_rows bigint",
    "examined_rows bigint",
    "rows_deleted bigint NOT NULL DEFAULT 0",
    "rows_skipped bigint NOT NULL DEFAULT 0",
    "batches integer NOT NULL DEFAULT 0",
    "out_of_time boolean NOT NULL DEFAULT false",
    "refused text",
    "next_block bigint",
)
BATCH_COLUMNS = (
    "batch_rows integer",
    "duration_ms double precision",
    "dropped_partition text",
    "first_block bigint",
    "pages bigint",
)


def _log_tables(conn: psycopg.Connection, spec: PurgeSpec, owned: Owned) -> None:
    """<job>_log (a row per run, written when it starts) and <job>_batches (a row per committed
    batch), created and marked unless this cleanup owns them already; its older log table gains the new columns."""
    log = spec.ident("_log")
    if (spec.schema, f"{spec.job_name}_log") not in owned.relations:
        conn.execute(
            sql.SQL("CREATE TABLE {} (run_id bigserial PRIMARY KEY, started_at timestamptz NOT NULL)").format(log)
        )
        mark(conn, spec, "TABLE", log)
    conn.execute(
        sql.SQL("ALTER TABLE {} {}").format(
            log, sql.SQL(", ").join(sql.SQL("ADD COLUMN IF NOT EXISTS " + column) for column in LOG_COLUMNS)
        )
    )
    conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN finished_at DROP NOT NULL").format(log))
    for column in ("rows_deleted", "batches", "out_of_time"):  # older tables: NOT NULL without a default
        conn.execute(
            sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}").format(
                log, sql.Identifier(column), sql.SQL("false" if column == "out_of_time" else "0")
            )
        )
    if (spec.schema, f"{spec.job_name}_batches") not in owned.relations:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (run_id bigint NOT NULL REFERENCES {} ON DELETE CASCADE, "
                "batch integer NOT NULL, logged_at timestamptz NOT NULL DEFAULT clock_timestamp(), "
                "rows_deleted bigint NOT NULL, rows_skipped bigint NOT NULL, PRIMARY KEY (run_id, batch))"
            ).format(spec.ident("_batches"), log)
        )
        mark(conn, spec, "TABLE", spec.ident("_batches"))
    conn.execute(
        sql.SQL("ALTER TABLE {} {}").format(
            spec.ident("_batches"),
            sql.SQL(", ").join(sql.SQL("ADD COLUMN IF NOT EXISTS " + column) for column in BATCH_COLUMNS),
        )
    )
    if spec.archive:
        create_archive(conn, spec, owned)


def _grant_run_as(conn: psycopg.Connection, spec: PurgeSpec) -> None:
    """What ``run_as`` needs of the cleanup's own objects: to run the procedure, write its log (and the
    archive) and read its status; USAGE on the schema when the cleanup created it."""
    if spec.run_as is None:
        return
    role, log = sql.Identifier(spec.run_as), spec.ident("_log")
    sequence = one_row(conn.execute("SELECT pg_get_serial_sequence(%s, 'run_id')", (log.as_string(conn),)))[0]
    grants = [
        ("EXECUTE ON PROCEDURE", sql.SQL("{}(integer, integer)").format(spec.ident())),
        ("SELECT, INSERT, UPDATE, DELETE ON TABLE", log),
        ("USAGE ON SEQUENCE", sql.SQL(sequence)),  # quoted and qualified by PostgreSQL itself
        ("SELECT, INSERT, DELETE ON TABLE", spec.ident("_batches")),
        ("SELECT ON TABLE", spec.ident("_status")),
    ]
    if spec.archive:
        grants.append(("SELECT, INSERT, DELETE ON TABLE", spec.ident("_archive")))
    if schema_is_ours(conn, spec):
        grants.append(("USAGE ON SCHEMA", sql.Identifier(spec.schema)))
    for privileges, name in grants:
        conn.execute(sql.SQL("GRANT {} {} TO {}").format(sql.SQL(privileges), name, role))


def provision(connector: Connector, spec: PurgeSpec) -> ProvisionState:
    """Create or update everything the cleanup needs, all or nothing; idempotent.

    Everything is checked first (pg_cron loaded, columns, every grant, no name taken by an object this
    job did not mark: see claim), then created and marked in one
    transaction when the table lives in pg_cron's database, else in one transaction per database,
    committed back to back (the table's first): a failure before the commits leaves nothing behind,
    and a create that fails after the first commit is undone. The optional index comes last
    (CREATE INDEX CONCURRENTLY cannot run in a transaction). Returns what it found and made."""
    with contextlib.ExitStack() as stack:
        conn = stack.enter_context(connector.connect())
        cron_database = pg_cron_database(conn)
        kind, expiry_type = column_type(conn, spec)
        check_extra_column(conn, spec)
        if spec.mode == MODE_DROP_PARTITIONS:
            check_partitioned(conn, spec)
        same = cron_database == connector.database
        cron = conn if same else stack.enter_context(connector.connect(cron_database))
        missing = missing_grants(conn, cron, spec)
        if missing:
            raise CleanupError(f"missing grants for role {conn.info.user!r}: " + " ".join(missing))
        owned = claim(conn, cron, spec)
        existed = spec.job_name in owned.jobs
        command = cron_command(spec.job_name, spec.command.as_string(conn))
        history = cron_command(spec.job_name, history_prune(spec.history_days).as_string(cron))
        committed = False
        try:
            with contextlib.nullcontext() if same else cron.transaction():
                with conn.transaction():
                    cron.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
                    created_schema = own_schema(conn, spec)
                    _log_tables(conn, spec, owned)
                    conn.execute(procedure(spec, kind, expiry_type, owned.procedure))
                    if not owned.procedure:
                        mark(conn, spec, "PROCEDURE", sql.SQL("{}(integer, integer)").format(spec.ident()))
                    status_owned = (spec.schema, f"{spec.job_name}_status") in owned.relations
                    conn.execute(status_view(spec, kind, status_owned))
                    if not status_owned:
                        mark(conn, spec, "VIEW", spec.ident("_status"))
                    _grant_run_as(conn, spec)
                    with scheduling_role(cron, spec):
                        job_id = _schedule(cron, spec.job_name, spec.schedule, command, connector.database)
                        history_id = _schedule(cron, spec.history_job, spec.history_schedule, history, cron_database)
                        set_active(cron, [job_id, history_id], not spec.paused)
                    if not same:
                        own_schema(cron, spec)
                    runs_owned = (spec.schema, f"{spec.job_name}_runs") in owned.relations
                    cron.execute(runs_view(spec, runs_owned))
                    if not runs_owned:
                        mark(cron, spec, "VIEW", spec.ident("_runs"))
                committed = True
            index_created = _create_index(conn, spec)
        except Exception:
            if committed and not existed:
                with contextlib.suppress(Exception):
                    unprovision(connector, spec)
            raise
        indexed = has_index(conn, spec)
    return {
        "cron_database": cron_database,
        "column_kind": kind,
        "job_id": job_id,
        "history_job_id": history_id,
        "created_schema": created_schema,
        "created_index": index_created,
        "expiry_column_indexed": indexed,
    }


def _create_index(conn: psycopg.Connection, spec: PurgeSpec) -> bool:
    """CREATE INDEX CONCURRENTLY on the expiry column when asked and none leads with it; whether it did."""
    if not spec.create_index or has_index(conn, spec):
        return False
    conn.execute(
        sql.SQL("CREATE INDEX CONCURRENTLY {} ON {} ({}) WHERE {} IS NOT NULL").format(
            sql.Identifier(spec.index_name),
            spec.target,
            sql.Identifier(spec.column),
            sql.Identifier(spec.column),
        )
    )
    mark(conn, spec, "INDEX", sql.Identifier(spec.table_schema, spec.index_name))
    return True


def unprovision(connector: Connector, spec: PurgeSpec) -> None:
    """Remove the jobs and what the cleanup created, each only if it carries this job's marker (the
    schema: when Expiry created it and no other cleanup is left in it). An object of the same name
    without the marker, the table, its rows and the archive are left alone."""
    with connector.connect() as conn:
        cron_database = pg_cron_database(conn)
    with connector.connect(cron_database) as cron:
        with cron.transaction(), scheduling_role(cron, spec):
            cron.execute(
                "SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = ANY(%s) AND username = current_user "
                "AND starts_with(command, %s)",
                ([spec.job_name, spec.history_job], cron_command(spec.job_name, "")),
            )
        drop_if_ours(cron, spec, "VIEW", spec.ident("_runs"))
        if cron_database != connector.database:
            drop_schema_if_ours(cron, spec)
    with connector.connect() as conn:
        drop_if_ours(conn, spec, "PROCEDURE", sql.SQL("{}(integer, integer)").format(spec.ident()))
        drop_if_ours(conn, spec, "VIEW", spec.ident("_status"))
        drop_if_ours(conn, spec, "TABLE", spec.ident("_batches"))
        drop_if_ours(conn, spec, "TABLE", spec.ident("_log"))
        drop_if_ours(conn, spec, "INDEX CONCURRENTLY", sql.Identifier(spec.table_schema, spec.index_name))
        drop_schema_if_ours(conn, spec)


TERRAFORM_KEY = "tf"
# A change of these makes another job or table (pg_cron keys a job by name and role): the old one is removed first.
IDENTITY = ("job_name", "table", "table_schema", "schema", "run_as")


def _parse(payload: dict[str, Any]) -> tuple[PurgeSpec, Postgres]:
    try:
        spec = PurgeSpec.from_dict(payload["cleanup"])
        raw = payload["connection"]
        postgres = Postgres(
            host=raw["host"],
            port=int(raw.get("port", 5432)),
            database=raw["database"],
            secret_arn=raw["secret_arn"],
            user=raw.get("user"),
            lookback_seconds=3600,
        )
    except KeyError as error:
        raise JobConfigError(f"payload: missing {error}; expected cleanup and connection") from error
    except TypeError as error:
        raise JobConfigError(f"payload: cleanup: {error}") from error
    except CleanupError as error:
        raise JobConfigError(f"payload: cleanup.{error}") from error
    return spec, postgres


def handle(event: dict[str, Any], secrets_client: Callable[[], Any]) -> dict[str, Any]:
    """Create, update or delete the cleanup the event describes; return what provisioning reports."""
    lifecycle = event.get(TERRAFORM_KEY) or {"action": "create", "prev_input": None}
    action = lifecycle.get("action")
    spec, postgres = _parse(event)
    secrets = secrets_client()
    if action == "delete":
        unprovision(connector(secrets, postgres), spec)
        return {"action": "delete", "job_name": spec.job_name}
    if action not in ("create", "update"):
        raise JobConfigError(f"payload: {TERRAFORM_KEY}.action: must be create, update or delete, got {action!r}")
    previous = lifecycle.get("prev_input")
    if action == "update" and previous:
        old_spec, old_postgres = _parse(previous)
        moved = any(getattr(old_spec, key) != getattr(spec, key) for key in IDENTITY) or (
            (old_postgres.host, old_postgres.port, old_postgres.database)
            != (postgres.host, postgres.port, postgres.database)
        )
        if moved:
            unprovision(connector(secrets, old_postgres), old_spec)
    return {"action": action, **provision(connector(secrets, postgres), spec)}
