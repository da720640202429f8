"""A cleanup's figures: the status view's row, the procedure's log, pg_cron's runs (what the pg monitor
reports), and the table's status for the CLI."""

from typing import Any, TypedDict

import psycopg
from psycopg import sql

from expiry.runtime.postgres.catalog import column_kind, has_index, one_row, pg_cron_database
from expiry.runtime.postgres.spec import PurgeSpec
from expiry.runtime.postgres.statements import status_query


class CronHealth(TypedDict):
    """A pg_cron job's recent failures and the age of its last success (None: never succeeded)."""

    failed_runs: int
    last_success_age_seconds: int | None
    job_scheduled: bool


class LoggedSince(TypedDict):
    """From the procedure's log over a window: rows its committed batches deleted, runs refused."""

    rows_purged: int
    refused_runs: int


def _row_dict(cursor: psycopg.Cursor[tuple[Any, ...]]) -> dict[str, Any]:
    names = [column.name for column in cursor.description or ()]
    return dict(zip(names, one_row(cursor), strict=True))


def status(conn: psycopg.Connection, spec: PurgeSpec) -> dict[str, Any]:
    """The status view's row."""
    return _row_dict(conn.execute(sql.SQL("SELECT * FROM {}").format(spec.ident("_status"))))


def cron_health(cron: psycopg.Connection, job_name: str, since_seconds: int) -> CronHealth:
    """Failed runs in the last ``since_seconds`` and the age of the last successful run. pg_cron records
    a run that failed to start (connection failed, no worker) with NULL start and end times: such a
    run counts until a run of any job that started before the window has a higher run id (run ids grow
    with time), so it is counted in the window it happened in, or later, never missed."""
    row = one_row(
        cron.execute(
            """SELECT count(*) FILTER (WHERE d.status = 'failed'
                    AND (d.start_time > now() - make_interval(secs => %(s)s)
                    OR (d.start_time IS NULL AND d.end_time IS NULL AND d.runid > (SELECT coalesce(max(runid), 0)
                    FROM cron.job_run_details WHERE start_time <= now() - make_interval(secs => %(s)s))))),
                  extract(epoch from now() - max(d.end_time) FILTER (WHERE d.status = 'succeeded'))::bigint,
                  (SELECT count(*) FROM cron.job WHERE jobname = %(j)s)
           FROM cron.job_run_details d JOIN cron.job j ON j.jobid = d.jobid WHERE j.jobname = %(j)s""",
            {"s": since_seconds, "j": job_name},
        )
    )
    return {"failed_runs": row[0], "last_success_age_seconds": row[1], "job_scheduled": bool(row[2])}


def logged_since(conn: psycopg.Connection, spec: PurgeSpec, since_seconds: int) -> LoggedSince:
    """From the procedure's log over the last ``since_seconds``: rows deleted by committed batches
    (a run killed mid-way included) and runs the breaker refused."""
    row = one_row(
        conn.execute(
            sql.SQL(
                "SELECT (SELECT coalesce(sum(rows_deleted), 0) FROM {batches} WHERE logged_at > now() - {window}), "
                "(SELECT count(*) FROM {log} WHERE refused IS NOT NULL AND started_at > now() - {window})"
            ).format(
                batches=spec.ident("_batches"),
                log=spec.ident("_log"),
                window=sql.SQL("make_interval(secs => {})").format(sql.Literal(since_seconds)),
            )
        )
    )
    return {"rows_purged": int(row[0]), "refused_runs": int(row[1])}


def index_advice(conn: psycopg.Connection, spec: PurgeSpec, indexed: bool) -> str | None:
    """What an index on the expiry column would change, when there is none: batches walk the whole
    table by TID range (one pass a run); with the index each batch reads just the expired rows."""
    if indexed or spec.expiry_expression is not None:
        return None
    column = sql.Identifier(spec.column)
    statement = sql.SQL("CREATE INDEX CONCURRENTLY ON {} ({}) WHERE {} IS NOT NULL;").format(
        spec.target, column, column
    )
    return (
        f"no btree index leads with {spec.column!r}: each purge reads the whole table once (batches by TID "
        f"range); with an index it reads only the expired rows: {statement.as_string(conn)} "
        "(or set create_index)"
    )


def table_status(conn: psycopg.Connection, spec: PurgeSpec, job_name: str | None) -> dict[str, Any]:
    """What the maintenance guide checks by hand: rows by state, oldest expired, size, last runs.
    Needs no cleanup provisioned: it runs the status view's query itself."""
    kind = column_kind(conn, spec)
    result: dict[str, Any] = {
        "table": f"{spec.table_schema}.{spec.table}",
        "column_kind": kind,
        **_row_dict(conn.execute(status_query(spec, kind))),
        "expiry_column_indexed": has_index(conn, spec),
    }
    advice = index_advice(conn, spec, result["expiry_column_indexed"])
    if advice:
        result["index_advice"] = advice
    if job_name:
        cron_database = pg_cron_database(conn)
        if cron_database != conn.info.dbname:
            result["last_runs"] = f"in pg_cron's database {cron_database!r}: connect there to read them"
            return result
        rows = conn.execute(
            "SELECT d.status, d.start_time, d.end_time, d.return_message FROM cron.job_run_details d "
            "JOIN cron.job j ON j.jobid = d.jobid WHERE j.jobname = %s ORDER BY d.start_time DESC LIMIT 5",
            (job_name,),
        ).fetchall()
        result["last_runs"] = [{"status": r[0], "start": str(r[1]), "end": str(r[2]), "message": r[3]} for r in rows]
    return result
