"""PostgreSQL cleanup: the SQL of batched purges, their pg_cron jobs, status view and monitoring.

One module for every path: the Pulumi dynamic provider (from the deploying machine), the
provisioning Lambda (inside a VPC), the Lambda purge for databases without pg_cron, the monitor and
the operator CLI. Identifiers are always composed with psycopg.sql, never formatted into strings:
a name with quotes, semicolons or spaces is a literal identifier, never code.
"""

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

DEFAULT_SCHEMA = "expiry"
DEFAULT_BATCH_SIZE = 5000
DEFAULT_MAX_RUNTIME_SECONDS = 300
DEFAULT_HISTORY_DAYS = 7
DEFAULT_HISTORY_SCHEDULE = "17 * * * *"
CREATED_BY = "created by expiry; dropped with the last cleanup in it"
MAX_JOB_NAME = 48  # leaves room for suffixes within PostgreSQL's 63-byte identifiers
CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")
CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
CRON_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
EPOCH_TYPES = {
    "bigint": "epoch",
    "integer": "epoch",
    "smallint": "epoch",
    "numeric": "epoch",
    "double precision": "epoch",
    "timestamp with time zone": "timestamptz",
    "timestamp without time zone": "timestamp",
}


class CleanupError(ValueError):
    """A cleanup that cannot be provisioned or run as asked; the message says why."""


def check_cron(schedule: str, field: str = "schedule") -> str:
    """Check a 5-field cron expression (pg_cron 1.4: no seconds, no names, GMT)."""
    if not isinstance(schedule, str):
        raise CleanupError(f"{field}: must be a 5-field cron expression, got {schedule!r}")
    parts = schedule.split()
    if len(parts) != 5:
        raise CleanupError(
            f"{field}: pg_cron needs 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(parts)} in {schedule!r}"
        )
    for part, (low, high), name in zip(parts, CRON_RANGES, CRON_NAMES, strict=True):
        if not CRON_FIELD.match(part):
            raise CleanupError(f"{field}: cron {name} field {part!r} is not numbers, ranges, steps or *")
        for number in re.findall(r"(?<![/\d])\d+", part):
            if not low <= int(number) <= high:
                raise CleanupError(f"{field}: cron {name} field {part!r}: {number} is outside {low}..{high}")
    return schedule


@dataclass(frozen=True)
class PurgeSpec:
    """What to purge and how; validated on construction."""

    job_name: str
    table: str
    expiry_column: str
    table_schema: str = "public"
    schema: str = DEFAULT_SCHEMA
    batch_size: int = DEFAULT_BATCH_SIZE
    max_runtime_seconds: int = DEFAULT_MAX_RUNTIME_SECONDS
    schedule: str = "0 3 * * *"
    history_days: int = DEFAULT_HISTORY_DAYS
    history_schedule: str = DEFAULT_HISTORY_SCHEDULE
    extra_column: str | None = None
    extra_value: str | int | None = None
    create_index: bool = False

    def __post_init__(self) -> None:
        for field in ("job_name", "table", "expiry_column", "table_schema", "schema"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value or "\x00" in value or len(value.encode()) > 63:
                raise CleanupError(f"{field}: must be a name of 1..63 bytes without NUL, got {value!r}")
        if len(self.job_name.encode()) > MAX_JOB_NAME:
            raise CleanupError(f"job_name: at most {MAX_JOB_NAME} bytes (suffixes must fit 63), got {self.job_name!r}")
        for field, low, high in (
            ("batch_size", 1, 1_000_000),
            ("max_runtime_seconds", 1, 86_400),
            ("history_days", 1, 3650),
        ):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise CleanupError(f"{field}: must be an integer in {low}..{high}, got {value!r}")
        check_cron(self.schedule)
        check_cron(self.history_schedule, "history_schedule")
        if (self.extra_column is None) != (self.extra_value is None):
            raise CleanupError("extra_column: extra_column and extra_value go together")
        if self.extra_column is not None and (not self.extra_column or "\x00" in self.extra_column):
            raise CleanupError(f"extra_column: must be a column name, got {self.extra_column!r}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "PurgeSpec":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise CleanupError(f"unknown settings {unknown}; allowed: {sorted(known)}")
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # Names of what the cleanup creates, all inside its own schema.
    def ident(self, suffix: str = "") -> sql.Identifier:
        return sql.Identifier(self.schema, self.job_name + suffix)

    @property
    def target(self) -> sql.Identifier:
        return sql.Identifier(self.table_schema, self.table)

    @property
    def history_job(self) -> str:
        return f"{self.job_name}-history"

    @property
    def index_name(self) -> str:
        return f"{self.job_name}_expiry_idx"

    @property
    def command(self) -> sql.Composed:
        return sql.SQL("CALL {}()").format(self.ident())


def column_kind(conn: psycopg.Connection, spec: PurgeSpec) -> str:
    """'epoch', 'timestamptz' or 'timestamp', read from the catalog."""
    row = conn.execute(
        """SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
           JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relname = %s AND a.attname = %s AND a.attnum > 0 AND NOT a.attisdropped""",
        (spec.table_schema, spec.table, spec.expiry_column),
    ).fetchone()
    if row is None:
        raise CleanupError(
            f"expiry_column: no column {spec.expiry_column!r} in table "
            f"{spec.table_schema}.{spec.table} of this database"
        )
    kind = EPOCH_TYPES.get(re.sub(r"\(.*\)", "", row[0]).strip())
    if kind is None:
        raise CleanupError(
            f"expiry_column: {spec.expiry_column!r} is {row[0]}; expected epoch seconds "
            f"(bigint, integer, numeric) or timestamptz or timestamp"
        )
    return kind


def _now(kind: str) -> sql.SQL:
    return {
        "epoch": sql.SQL("extract(epoch from now())::bigint"),
        "timestamptz": sql.SQL("now()"),
        "timestamp": sql.SQL("(now() AT TIME ZONE 'UTC')"),
    }[kind]


def expired_condition(spec: PurgeSpec, kind: str) -> sql.Composed:
    """Rows whose expiry is set and has passed (NULL never expires), plus the extra equality."""
    condition = sql.SQL("{col} IS NOT NULL AND {col} < {now}").format(
        col=sql.Identifier(spec.expiry_column), now=_now(kind)
    )
    if spec.extra_column is not None:
        condition = sql.SQL("{} AND {} = {}").format(
            condition, sql.Identifier(spec.extra_column), sql.Literal(spec.extra_value)
        )
    return condition


def batch_delete(spec: PurgeSpec, kind: str, limit: sql.Composable) -> sql.Composed:
    """One batch: lock up to ``limit`` expired rows (skipping locked ones), oldest first, and delete
    them if they are still expired when deleted, so a row renewed meanwhile survives."""
    condition = expired_condition(spec, kind)
    return sql.SQL(
        "DELETE FROM {target} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {target} WHERE {condition} "
        "ORDER BY {col} LIMIT {limit} FOR UPDATE SKIP LOCKED)) AND {condition}"
    ).format(target=spec.target, condition=condition, col=sql.Identifier(spec.expiry_column), limit=limit)


def procedure(spec: PurgeSpec, kind: str) -> sql.Composed:
    """CREATE OR REPLACE PROCEDURE <schema>.<job>: batches with a COMMIT after each, until no
    expired row is left or the runtime is spent; then one row in <job>_log."""
    body = sql.SQL("""
DECLARE
  started timestamptz := clock_timestamp();
  deleted bigint;
  total bigint := 0;
  batches integer := 0;
  out_of_time boolean := false;
BEGIN
  LOOP
    {delete};
    GET DIAGNOSTICS deleted = ROW_COUNT;
    total := total + deleted;
    batches := batches + 1;
    COMMIT;
    EXIT WHEN deleted < batch_size;
    IF clock_timestamp() - started > make_interval(secs => max_runtime_seconds) THEN
      out_of_time := true;
      EXIT;
    END IF;
  END LOOP;
  INSERT INTO {log} (started_at, finished_at, rows_deleted, batches, out_of_time)
    VALUES (started, clock_timestamp(), total, batches, out_of_time);
  DELETE FROM {log} WHERE finished_at < now() - make_interval(days => {history_days});
  COMMIT;
END
""").format(
        delete=batch_delete(spec, kind, sql.SQL("batch_size")),
        log=spec.ident("_log"),
        history_days=sql.Literal(spec.history_days),
    )
    return sql.SQL(
        "CREATE OR REPLACE PROCEDURE {name}(batch_size integer DEFAULT {batch}, "
        "max_runtime_seconds integer DEFAULT {runtime}) LANGUAGE plpgsql AS {body}"
    ).format(
        name=spec.ident(),
        batch=sql.Literal(spec.batch_size),
        runtime=sql.Literal(spec.max_runtime_seconds),
        body=sql.Literal(body.as_string(None)),
    )


def status_query(spec: PurgeSpec, kind: str) -> sql.Composed:
    """Permanent (no expiry), live and expired rows, the oldest expired and its age, the table's size."""
    col, now = sql.Identifier(spec.expiry_column), _now(kind)
    scope = (
        sql.SQL("TRUE")
        if spec.extra_column is None
        else sql.SQL("{} = {}").format(sql.Identifier(spec.extra_column), sql.Literal(spec.extra_value))
    )
    return sql.SQL("""SELECT
  count(*) FILTER (WHERE {col} IS NULL) AS permanent_rows,
  count(*) FILTER (WHERE {col} >= {now}) AS live_rows,
  count(*) FILTER (WHERE {col} < {now}) AS expired_rows,
  min({col}) FILTER (WHERE {col} < {now}) AS oldest_expired,
  coalesce({age}, 0)::bigint AS oldest_expired_age_seconds,
  pg_total_relation_size({oid}) AS table_bytes,
  pg_size_pretty(pg_total_relation_size({oid})) AS table_size
FROM {target} WHERE {scope}""").format(
        col=col, now=now, target=spec.target, oid=_table_oid(spec), scope=scope, age=_oldest_age(spec, kind)
    )


def status_view(spec: PurgeSpec, kind: str) -> sql.Composed:
    """<job>_status: the status query as a view (the guide's attribute_cleanup_status)."""
    return sql.SQL("CREATE OR REPLACE VIEW {} AS {}").format(spec.ident("_status"), status_query(spec, kind))


def _oldest_age(spec: PurgeSpec, kind: str) -> sql.Composed:
    oldest = sql.SQL("min({col}) FILTER (WHERE {col} < {now})").format(
        col=sql.Identifier(spec.expiry_column), now=_now(kind)
    )
    if kind == "epoch":
        return sql.SQL("({} - {})").format(_now(kind), oldest)
    return sql.SQL("extract(epoch from {} - {})").format(_now(kind), oldest)


def _table_oid(spec: PurgeSpec) -> sql.Composed:
    return sql.SQL(
        "(SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = {} AND c.relname = {})"
    ).format(sql.Literal(spec.table_schema), sql.Literal(spec.table))


def runs_view(spec: PurgeSpec) -> sql.Composed:
    """<job>_runs (in the cron database): the job's last 50 runs from cron.job_run_details."""
    return sql.SQL("""CREATE OR REPLACE VIEW {view} AS
SELECT d.runid, d.status, d.return_message, d.start_time, d.end_time
FROM cron.job_run_details d JOIN cron.job j ON j.jobid = d.jobid
WHERE j.jobname = {job} ORDER BY d.start_time DESC LIMIT 50""").format(
        view=spec.ident("_runs"), job=sql.Literal(spec.job_name)
    )


@dataclass(frozen=True)
class Connector:
    """Opens connections to the table's database or to pg_cron's, with the same credentials."""

    conninfo: str
    database: str

    def connect(self, database: str | None = None, autocommit: bool = True) -> psycopg.Connection:
        kwargs = {"dbname": database} if database and database != self.database else {}
        return psycopg.connect(self.conninfo, autocommit=autocommit, connect_timeout=15, **kwargs)


def pg_cron_database(conn: psycopg.Connection) -> str:
    """The database pg_cron runs in; a clear error when pg_cron is not loaded."""
    libraries = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()[0]
    if "pg_cron" not in [name.strip() for name in libraries.split(",")]:
        raise CleanupError(
            "pg_cron is not loaded: add pg_cron to shared_preload_libraries (and set cron.database_name), then "
            f"restart PostgreSQL; shared_preload_libraries is {libraries!r}"
        )
    return conn.execute("SELECT current_setting('cron.database_name')").fetchone()[0]


def _has_index(conn: psycopg.Connection, spec: PurgeSpec) -> bool:
    """Whether a btree index leads with the expiry column (what the ordered batches need)."""
    row = conn.execute(
        """SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_class ic ON ic.oid = i.indexrelid
           JOIN pg_am am ON am.oid = ic.relam
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]
           WHERE n.nspname = %s AND c.relname = %s AND a.attname = %s AND am.amname = 'btree')""",
        (spec.table_schema, spec.table, spec.expiry_column),
    ).fetchone()
    return bool(row[0])


def _schedule(
    conn: psycopg.Connection, job: str, schedule: str, command: str, database: str, cron_database: str
) -> int:
    if database == cron_database:
        return conn.execute("SELECT cron.schedule(%s, %s, %s)", (job, schedule, command)).fetchone()[0]
    existing = conn.execute(
        "SELECT jobid FROM cron.job WHERE jobname = %s AND username = current_user", (job,)
    ).fetchone()
    if existing:
        conn.execute("SELECT cron.alter_job(%s, %s, %s, %s)", (existing[0], schedule, command, database))
        return existing[0]
    return conn.execute(
        "SELECT cron.schedule_in_database(%s, %s, %s, %s)", (job, schedule, command, database)
    ).fetchone()[0]


def provision(connector: Connector, spec: PurgeSpec) -> dict[str, Any]:
    """Create or update everything the cleanup needs; idempotent. Returns what it found and made."""
    with connector.connect() as conn:
        cron_database = pg_cron_database(conn)
        kind = column_kind(conn, spec)
        schema_existed = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)", (spec.schema,)
        ).fetchone()[0]
        with conn.transaction():
            if not schema_existed:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(spec.schema)))
                conn.execute(
                    sql.SQL("COMMENT ON SCHEMA {} IS {}").format(sql.Identifier(spec.schema), sql.Literal(CREATED_BY))
                )
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (run_id bigserial PRIMARY KEY, started_at timestamptz NOT NULL, "
                    "finished_at timestamptz NOT NULL, rows_deleted bigint NOT NULL, batches integer NOT NULL, "
                    "out_of_time boolean NOT NULL)"
                ).format(spec.ident("_log"))
            )
            conn.execute(procedure(spec, kind))
            conn.execute(status_view(spec, kind))
        index_created = False
        if spec.create_index and not _has_index(conn, spec):
            conn.execute(
                sql.SQL("CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({}) WHERE {} IS NOT NULL").format(
                    sql.Identifier(spec.index_name),
                    spec.target,
                    sql.Identifier(spec.expiry_column),
                    sql.Identifier(spec.expiry_column),
                )
            )
            conn.execute(
                sql.SQL("COMMENT ON INDEX {} IS {}").format(
                    sql.Identifier(spec.table_schema, spec.index_name), sql.Literal(CREATED_BY)
                )
            )
            index_created = True
        indexed = _has_index(conn, spec)
    command = connector_command(spec)
    history = sql.SQL("DELETE FROM cron.job_run_details WHERE end_time < now() - make_interval(days => {})").format(
        sql.Literal(spec.history_days)
    )
    with connector.connect(cron_database) as cron:
        cron.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        job_id = _schedule(cron, spec.job_name, spec.schedule, command, connector.database, cron_database)
        history_id = _schedule(
            cron, spec.history_job, spec.history_schedule, history.as_string(cron), cron_database, cron_database
        )
        if not cron.execute("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)", (spec.schema,)).fetchone()[
            0
        ]:
            cron.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(spec.schema)))
            cron.execute(
                sql.SQL("COMMENT ON SCHEMA {} IS {}").format(sql.Identifier(spec.schema), sql.Literal(CREATED_BY))
            )
        cron.execute(runs_view(spec))
    return {
        "cron_database": cron_database,
        "column_kind": kind,
        "job_id": job_id,
        "history_job_id": history_id,
        "created_schema": not schema_existed,
        "created_index": index_created,
        "expiry_column_indexed": indexed,
    }


def connector_command(spec: PurgeSpec) -> str:
    """The command pg_cron runs: CALL of the procedure (identifiers quoted by psycopg)."""
    return spec.command.as_string(None)


def unprovision(connector: Connector, spec: PurgeSpec) -> None:
    """Remove the jobs and what the cleanup created (the schema and index only if it created them,
    as their comment records); the table and its rows are left alone."""
    with connector.connect() as conn:
        cron_database = pg_cron_database(conn)
    with connector.connect(cron_database) as cron:
        for job in (spec.job_name, spec.history_job):
            cron.execute(
                "SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = %s AND username = current_user", (job,)
            )
        cron.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(spec.ident("_runs")))
        if cron_database != connector.database:
            _drop_schema_if_ours(cron, spec)
    with connector.connect() as conn:
        conn.execute(sql.SQL("DROP PROCEDURE IF EXISTS {}(integer, integer)").format(spec.ident()))
        conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(spec.ident("_status")))
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(spec.ident("_log")))
        index = sql.Identifier(spec.table_schema, spec.index_name)
        ours = conn.execute(
            "SELECT obj_description(to_regclass(%s), 'pg_class') = %s", (index.as_string(conn), CREATED_BY)
        ).fetchone()[0]
        if ours:
            conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(index))
        _drop_schema_if_ours(conn, spec)


def _drop_schema_if_ours(conn: psycopg.Connection, spec: PurgeSpec) -> None:
    ours = conn.execute(
        "SELECT obj_description(oid, 'pg_namespace') = %s FROM pg_namespace WHERE nspname = %s",
        (CREATED_BY, spec.schema),
    ).fetchone()
    if ours and ours[0]:
        with contextlib.suppress(psycopg.errors.DependentObjectsStillExist):  # other cleanups still live in it
            conn.execute(sql.SQL("DROP SCHEMA {} RESTRICT").format(sql.Identifier(spec.schema)))


@dataclass
class PurgeResult:
    rows_deleted: int = 0
    batches: int = 0
    out_of_time: bool = False
    stopped_early: bool = False


def purge(
    conn: psycopg.Connection,
    spec: PurgeSpec,
    should_stop: Callable[[], bool] = lambda: False,
    on_batch: Callable[[int], None] | None = None,
) -> PurgeResult:
    """The same batched purge from a client (Lambda, CLI): a commit after every batch, stopping when
    nothing is left, at ``max_runtime_seconds``, or when ``should_stop`` says so."""
    kind = column_kind(conn, spec)
    statement = batch_delete(spec, kind, sql.Literal(spec.batch_size))
    result, started = PurgeResult(), time.monotonic()
    while True:
        with conn.transaction():
            deleted = conn.execute(statement).rowcount
        result.rows_deleted += deleted
        result.batches += 1
        if on_batch:
            on_batch(deleted)
        if deleted < spec.batch_size:
            return result
        if time.monotonic() - started > spec.max_runtime_seconds:
            result.out_of_time = True
            return result
        if should_stop():
            result.stopped_early = True
            return result


def _one_row(cursor: psycopg.Cursor) -> dict[str, Any]:
    names = [column.name for column in cursor.description]
    return dict(zip(names, cursor.fetchone(), strict=True))


def status(conn: psycopg.Connection, spec: PurgeSpec) -> dict[str, Any]:
    """The status view's row."""
    return _one_row(conn.execute(sql.SQL("SELECT * FROM {}").format(spec.ident("_status"))))


def cron_health(cron: psycopg.Connection, job_name: str, since_seconds: int) -> dict[str, Any]:
    """Failed runs in the last ``since_seconds`` and the age of the last successful run."""
    row = cron.execute(
        """SELECT count(*) FILTER (WHERE d.status = 'failed' AND d.start_time > now() - make_interval(secs => %s)),
                  extract(epoch from now() - max(d.end_time) FILTER (WHERE d.status = 'succeeded'))::bigint,
                  (SELECT count(*) FROM cron.job WHERE jobname = %s)
           FROM cron.job_run_details d JOIN cron.job j ON j.jobid = d.jobid WHERE j.jobname = %s""",
        (since_seconds, job_name, job_name),
    ).fetchone()
    return {"failed_runs": row[0], "last_success_age_seconds": row[1], "job_scheduled": bool(row[2])}


def purged_since(conn: psycopg.Connection, spec: PurgeSpec, since_seconds: int) -> int:
    """Rows the procedure deleted in runs that finished in the last ``since_seconds``."""
    row = conn.execute(
        sql.SQL(
            "SELECT coalesce(sum(rows_deleted), 0) FROM {} WHERE finished_at > now() - make_interval(secs => {})"
        ).format(spec.ident("_log"), sql.Literal(since_seconds))
    ).fetchone()
    return int(row[0])


def table_status(conn: psycopg.Connection, spec: PurgeSpec, job_name: str | None) -> dict[str, Any]:
    """What the maintenance guide checks by hand: rows by state, oldest expired, size, last runs.
    Needs no cleanup provisioned: it runs the status view's query itself."""
    kind = column_kind(conn, spec)
    result: dict[str, Any] = {
        "table": f"{spec.table_schema}.{spec.table}",
        "column_kind": kind,
        **_one_row(conn.execute(status_query(spec, kind))),
        "expiry_column_indexed": _has_index(conn, spec),
    }
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
