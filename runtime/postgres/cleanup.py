"""PostgreSQL cleanup: the SQL of batched purges, their pg_cron jobs, status view and monitoring.

One module for every path: the Pulumi dynamic provider (from the deploying machine), the
provisioning Lambda (inside a VPC), the Lambda purge for databases without pg_cron, the monitor and
the operator CLI. Identifiers are always composed with psycopg.sql, never formatted into strings:
a name with quotes, semicolons or spaces is a literal identifier, never code.
"""

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict
from urllib.parse import quote

import psycopg
from psycopg import sql

DEFAULT_SCHEMA = "expiry"
DEFAULT_BATCH_SIZE = 5000
DEFAULT_TARGET_BATCH_MS = 50
DEFAULT_MAX_BATCH_SIZE = 200_000
MIN_BATCH_SIZE = 10
MAX_GROWTH = 4  # a batch is at most this many times the size of the one before
DEFAULT_ARCHIVE_DAYS = 30
MODE_DELETE = "delete"
MODE_DROP_PARTITIONS = "drop-partitions"
MODES = (MODE_DELETE, MODE_DROP_PARTITIONS)
DEFAULT_MAX_RUNTIME_SECONDS = 300
DEFAULT_HISTORY_DAYS = 7
DEFAULT_HISTORY_SCHEDULE = "17 * * * *"
DEFAULT_BREAKER_MAX_SHARE = 0.5
DEFAULT_BREAKER_IGNORE_BELOW = 10
DEFAULT_SAMPLE_SIZE = 20
CREATED_BY = "created by expiry; dropped with the last cleanup in it"
OWNED = "expiry:owned job="  # the marker of what a cleanup created: its comment, a pg_cron command's first comment
MAX_JOB_NAME = 48  # leaves room for suffixes within PostgreSQL's 63-byte identifiers
CRON_PART = re.compile(r"^(?:(\*)|(\d+)(?:-(\d+))?)(?:/(\d+))?$")
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


class ProvisionState(TypedDict):
    """What provisioning created and found: the state the dynamic provider and the VPC provisioner keep."""

    cron_database: str
    column_kind: str
    job_id: int
    history_job_id: int
    created_schema: bool
    created_index: bool
    expiry_column_indexed: bool


class CronHealth(TypedDict):
    """A pg_cron job's recent failures and the age of its last success (None: never succeeded)."""

    failed_runs: int
    last_success_age_seconds: int | None
    job_scheduled: bool


class LoggedSince(TypedDict):
    """From the procedure's log over a window: rows its committed batches deleted, runs refused."""

    rows_purged: int
    refused_runs: int


class CleanupError(ValueError):
    """A cleanup that cannot be provisioned or run as asked; the message says why."""


def owned_marker(job_name: str) -> str:
    """The marker of what provisioning created for ``job_name``: the comment on each object and the
    comment leading each pg_cron command. The name is percent-encoded, so it never ends a comment."""
    return OWNED + quote(job_name, safe="")


def cron_command(job_name: str, command: str) -> str:
    """A pg_cron job's command as provisioning schedules it: led by the job's marker."""
    return f"/* {owned_marker(job_name)} */ {command}"


def check_cron(schedule: str, field: str = "schedule") -> str:
    """Check a 5-field cron expression as pg_cron 1.4 parses it (numbers, no names, no seconds, GMT):
    a step follows only ``*`` or a range and is at least 1 (``*/0`` and ``0/5`` are refused there too);
    a range that runs backwards (never matches) is refused here as well."""
    if not isinstance(schedule, str):
        raise CleanupError(f"{field}: must be a 5-field cron expression, got {schedule!r}")
    parts = schedule.split()
    if len(parts) != 5:
        raise CleanupError(
            f"{field}: pg_cron needs 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(parts)} in {schedule!r}"
        )
    for part, (low, high), name in zip(parts, CRON_RANGES, CRON_NAMES, strict=True):
        for item in part.split(","):
            match = CRON_PART.match(item)
            if match is None:
                raise CleanupError(
                    f"{field}: cron {name} field {part!r}: {item!r} is not a number, a range or *, "
                    "with an optional /step after * or a range"
                )
            star, first, last, step = match.groups()
            if step is not None and star is None and last is None:
                raise CleanupError(f"{field}: cron {name} field {part!r}: a /step needs * or a range before it")
            if step is not None and int(step) == 0:
                raise CleanupError(f"{field}: cron {name} field {part!r}: the step must be at least 1")
            for number in (first, last):
                if number is not None and not low <= int(number) <= high:
                    raise CleanupError(f"{field}: cron {name} field {part!r}: {number} is outside {low}..{high}")
            if last is not None and int(first) > int(last):
                raise CleanupError(f"{field}: cron {name} field {part!r}: the range {item} runs backwards")
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
    breaker_max_share: float = DEFAULT_BREAKER_MAX_SHARE
    breaker_max_count: int | None = None
    breaker_ignore_below: int = DEFAULT_BREAKER_IGNORE_BELOW
    allow_mass_deletion: bool = False
    target_batch_ms: int = DEFAULT_TARGET_BATCH_MS
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    archive: bool = False
    archive_days: int = DEFAULT_ARCHIVE_DAYS
    mode: str = MODE_DELETE
    run_as: str | None = None

    def __post_init__(self) -> None:
        for name in ("job_name", "table", "expiry_column", "table_schema", "schema"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or "\x00" in value or len(value.encode()) > 63:
                raise CleanupError(f"{name}: must be a name of 1..63 bytes without NUL, got {value!r}")
        if len(self.job_name.encode()) > MAX_JOB_NAME:
            raise CleanupError(f"job_name: at most {MAX_JOB_NAME} bytes (suffixes must fit 63), got {self.job_name!r}")
        for name, low, high in (
            ("batch_size", 1, 1_000_000),
            ("max_runtime_seconds", 1, 86_400),
            ("history_days", 1, 3650),
            ("breaker_ignore_below", 0, 1_000_000_000),
            ("target_batch_ms", 0, 60_000),
            ("max_batch_size", 1, 1_000_000),
            ("archive_days", 1, 3650),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise CleanupError(f"{name}: must be an integer in {low}..{high}, got {value!r}")
        share = self.breaker_max_share
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
            raise CleanupError(f"breaker_max_share: must be a number in 0..1 (a share of the rows), got {share!r}")
        count = self.breaker_max_count
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise CleanupError(f"breaker_max_count: must be a whole number of rows (0 or more) or unset, got {count!r}")
        for name in ("allow_mass_deletion", "archive"):
            if not isinstance(getattr(self, name), bool):
                raise CleanupError(f"{name}: must be true or false, got {getattr(self, name)!r}")
        if self.max_batch_size < self.batch_size:
            raise CleanupError(
                f"max_batch_size: must be at least batch_size ({self.batch_size}), got {self.max_batch_size}"
            )
        if self.mode not in MODES:
            raise CleanupError(f"mode: must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mode == MODE_DROP_PARTITIONS and self.extra_column is not None:
            raise CleanupError("extra_column: not with mode drop-partitions (a dropped partition takes all its rows)")
        if self.mode == MODE_DROP_PARTITIONS and self.archive:
            raise CleanupError("archive: only with mode delete (partitions are dropped, not read)")
        check_cron(self.schedule)
        check_cron(self.history_schedule, "history_schedule")
        if (self.extra_column is None) != (self.extra_value is None):
            raise CleanupError("extra_column: extra_column and extra_value go together")
        if self.extra_column is not None and (not self.extra_column or "\x00" in self.extra_column):
            raise CleanupError(f"extra_column: must be a column name, got {self.extra_column!r}")
        role = self.run_as
        if role is not None and (not isinstance(role, str) or not role or "\x00" in role or len(role.encode()) > 63):
            raise CleanupError(f"run_as: must be a role name of 1..63 bytes without NUL, or unset, got {role!r}")

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
    def lock_key(self) -> sql.Composed:
        """The advisory lock every run of this cleanup takes (pg_cron's and a client's alike)."""
        return sql.SQL("hashtextextended({}, 0)").format(sql.Literal(f"expiry:{self.schema}.{self.job_name}"))

    @property
    def command(self) -> sql.Composed:
        return sql.SQL("CALL {}()").format(self.ident())


def column_kind(conn: psycopg.Connection, spec: PurgeSpec) -> str:
    """'epoch', 'timestamptz' or 'timestamp', read from the catalog."""
    return column_type(conn, spec)[0]


def column_type(conn: psycopg.Connection, spec: PurgeSpec) -> tuple[str, str]:
    """The expiry column's kind ('epoch', 'timestamptz' or 'timestamp') and SQL type, from the catalog."""
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
    return kind, row[0]


def check_partitioned(conn: psycopg.Connection, spec: PurgeSpec) -> None:
    """drop-partitions needs the table partitioned by RANGE on the expiry column alone."""
    row = conn.execute(
        sql.SQL(
            "SELECT p.partstrat, p.partnatts, a.attname FROM pg_partitioned_table p "
            "LEFT JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] "
            "WHERE p.partrelid = {}"
        ).format(_table_oid(spec))
    ).fetchone()
    wanted = f"PARTITION BY RANGE ({spec.expiry_column})"
    if row is None:
        raise CleanupError(
            f"mode: drop-partitions needs {spec.table_schema}.{spec.table} to be {wanted}; it is not partitioned"
        )
    if (row[0], row[1], row[2]) != ("r", 1, spec.expiry_column):
        raise CleanupError(
            f"mode: drop-partitions needs {spec.table_schema}.{spec.table} to be {wanted}; it is partitioned "
            f"by {'RANGE' if row[0] == 'r' else {'l': 'LIST', 'h': 'HASH'}.get(row[0], row[0])} "
            f"on {row[1]} column(s) starting with {row[2]!r}"
        )


CUTOFF_TYPES = {"epoch": "bigint", "timestamptz": "timestamptz", "timestamp": "timestamp"}


def _now(kind: str) -> sql.SQL:
    return {
        "epoch": sql.SQL("extract(epoch from now())::bigint"),
        "timestamptz": sql.SQL("now()"),
        "timestamp": sql.SQL("(now() AT TIME ZONE 'UTC')"),
    }[kind]


def _scope(spec: PurgeSpec) -> sql.Composable:
    """The rows the cleanup is about: all, or those whose extra_column equals extra_value."""
    if spec.extra_column is None:
        return sql.SQL("TRUE")
    return sql.SQL("{} = {}").format(sql.Identifier(spec.extra_column), sql.Literal(spec.extra_value))


def expired_condition(spec: PurgeSpec, cutoff: sql.Composable) -> sql.Composed:
    """Rows in scope whose expiry is set and before ``cutoff`` (NULL never expires)."""
    return sql.SQL("{col} IS NOT NULL AND {col} < {cutoff} AND {scope}").format(
        col=sql.Identifier(spec.expiry_column), cutoff=cutoff, scope=_scope(spec)
    )


def batch_delete(
    spec: PurgeSpec, cutoff: sql.Composable, start: sql.Composable, limit: sql.Composable, run: sql.Composable
) -> sql.Composed:
    """One batch, one statement (one snapshot): the expiry ``limit`` keys past ``start`` on the
    expiry index (where the last batch stopped: the cutoff is fixed, so nothing before it is left to
    find) is the batch's upper end; delete by range the rows expired before ``cutoff`` with an expiry
    from ``start`` up to it, excluded (to the cutoff when fewer rows are left). Returns (rows in the
    range, rows deleted, where the next batch starts: NULL once the cutoff is reached, the first key
    from ``start``). When the upper end equals the first key (more than ``limit`` rows share one
    expiry) it deletes nothing: the caller then runs tie_delete. No row locks are taken before the
    DELETE (no UPDATE privilege, less WAL): a row being renewed makes the DELETE wait for the renewal
    to commit, then PostgreSQL re-checks the condition on the renewed row, which no longer matches;
    it is counted as skipped."""
    col = sql.Identifier(spec.expiry_column)
    from_start = sql.SQL("{target} WHERE {condition} AND {col} >= {start}").format(
        target=spec.target, condition=expired_condition(spec, cutoff), col=col, start=start
    )
    in_range = sql.SQL("{} AND {} < coalesce((SELECT upper FROM edge), {})").format(from_start, col, cutoff)
    return sql.SQL(
        "WITH edge AS MATERIALIZED (SELECT (SELECT {col} FROM {from_start} ORDER BY {col} OFFSET {limit} LIMIT 1) "
        "AS upper, (SELECT min({col}) FROM {from_start}) AS first), {effects}"
        "SELECT (SELECT count(*) FROM {in_range}), (SELECT count(*) FROM {counted}), "
        "(SELECT upper FROM edge), (SELECT first FROM edge)"
    ).format(
        col=col,
        from_start=from_start,
        limit=limit,
        in_range=in_range,
        **_effects(spec, sql.SQL("DELETE FROM {} ").format(in_range), run),
    )


def tie_delete(
    spec: PurgeSpec, cutoff: sql.Composable, key: sql.Composable, limit: sql.Composable, run: sql.Composable
) -> sql.Composed:
    """A batch of rows that share the expiry ``key``: up to ``limit`` of them picked by row id and
    deleted if still expired; returns (rows picked, rows deleted). A row id is the pair (tableoid,
    ctid): ctids repeat across the partitions of a partitioned table. The ctid list keeps the TID
    scan; the pair makes it exact."""
    condition = sql.SQL("{} AND {} = {}").format(
        expired_condition(spec, cutoff), sql.Identifier(spec.expiry_column), key
    )
    gone = sql.SQL(
        "DELETE FROM {target} WHERE ctid = ANY (ARRAY(SELECT ctid FROM picked)) "
        "AND (tableoid, ctid) IN (SELECT tableoid, ctid FROM picked) AND {condition} "
    ).format(target=spec.target, condition=condition)
    return sql.SQL(
        "WITH picked AS MATERIALIZED (SELECT tableoid, ctid FROM {target} WHERE {condition} LIMIT {limit}), "
        "{effects}"
        "SELECT (SELECT count(*) FROM picked), (SELECT count(*) FROM {counted})"
    ).format(target=spec.target, condition=condition, limit=limit, **_effects(spec, gone, run))


def _effects(spec: PurgeSpec, gone: sql.Composable, run: sql.Composable) -> dict[str, sql.Composable]:
    """The DELETE as a CTE and what counts its rows; with ``archive``, the deleted rows go to
    <job>_archive as jsonb in the same statement (run ``run``): archived exactly when deleted."""
    if not spec.archive:
        return {"effects": sql.SQL("gone AS ({}RETURNING 1) ").format(gone), "counted": sql.SQL("gone")}
    return {
        "effects": sql.SQL(
            "gone AS ({gone}RETURNING *), kept AS (INSERT INTO {archive} (run_id, row_data) "
            "SELECT {run}, to_jsonb(g) FROM gone g RETURNING 1) "
        ).format(gone=gone, archive=spec.ident("_archive"), run=run),
        "counted": sql.SQL("kept"),
    }


def first_expired(spec: PurgeSpec, cutoff: sql.Composable) -> sql.Composed:
    """Where the first batch starts: the lowest expiry before ``cutoff`` (NULL: nothing to delete)."""
    return sql.SQL("SELECT min({col}) FROM {target} WHERE {condition}").format(
        col=sql.Identifier(spec.expiry_column), target=spec.target, condition=expired_condition(spec, cutoff)
    )


def next_batch_size(spec: PurgeSpec, size: int, elapsed_ms: float) -> int:
    """The next batch's size: scaled toward ``target_batch_ms`` (at most MAX_GROWTH times larger),
    within MIN_BATCH_SIZE (or batch_size when smaller) and max_batch_size; fixed when the target is 0."""
    if not spec.target_batch_ms:
        return size
    scaled = size * min(float(MAX_GROWTH), spec.target_batch_ms / max(elapsed_ms, 1.0))
    return int(max(min(MIN_BATCH_SIZE, spec.batch_size), min(spec.max_batch_size, scaled)))


def _next_batch_size_sql(spec: PurgeSpec) -> sql.Composable:
    """next_batch_size in PL/pgSQL, from v_size and v_ms."""
    if not spec.target_batch_ms:
        return sql.SQL("v_size")
    return sql.SQL(
        "greatest({low}, least({high}, floor(v_size * least({growth}, {target} / greatest(v_ms, 1.0)))))::integer"
    ).format(
        low=sql.Literal(min(MIN_BATCH_SIZE, spec.batch_size)),
        high=sql.Literal(spec.max_batch_size),
        growth=sql.Literal(float(MAX_GROWTH)),
        target=sql.Literal(float(spec.target_batch_ms)),
    )


def partitions_before(spec: PurgeSpec, cutoff: sql.Composable, column_type: str, rows: bool = True) -> sql.Composed:
    """(oid, name, upper bound, rows) of the table's range partitions whose upper bound is at or
    before ``cutoff``, oldest first: every row they can hold expired before it. The DEFAULT
    partition, a MAXVALUE bound, partitioned children and a detach left pending are never listed.
    Rows are counted through the parent: partition pruning on the cutoff keeps the scan to these
    partitions and the one around the cutoff; without ``rows`` they are not counted (0)."""
    counted: sql.Composable = sql.SQL("SELECT NULL::oid AS oid, NULL::bigint AS n")
    if rows:
        counted = sql.SQL(
            "SELECT tableoid AS oid, count(*) AS n FROM {target} WHERE {col} < {cutoff} GROUP BY tableoid"
        ).format(target=spec.target, col=sql.Identifier(spec.expiry_column), cutoff=cutoff)
    return sql.SQL(
        "WITH parts AS (SELECT c.oid, c.oid::regclass::text AS name, "
        "nullif(btrim(substring(pg_get_expr(c.relpartbound, c.oid) FROM {pattern}), ''''), 'MAXVALUE') "
        "AS upper_text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = {oid} AND c.relkind = 'r' AND NOT i.inhdetachpending), "
        "droppable AS (SELECT oid, name, upper_text::{type} AS upper FROM parts "
        "WHERE upper_text IS NOT NULL AND upper_text::{type} <= {cutoff}), "
        "counted AS MATERIALIZED ({counted}) "
        "SELECT d.oid, d.name, d.upper, coalesce(c.n, 0) FROM droppable d LEFT JOIN counted c USING (oid) "
        "ORDER BY d.upper"
    ).format(
        pattern=sql.Literal(r"TO \((.+)\)$"),
        oid=_table_oid(spec),
        type=sql.SQL(column_type),
        cutoff=cutoff,
        counted=counted,
    )


def plan_counts(spec: PurgeSpec, cutoff: sql.Composable, column_type: str) -> sql.Composed:
    """(rows to delete, rows examined, refusal): the mass-deletion breaker's one decision.

    Rows to delete: rows in scope expired before ``cutoff`` (drop-partitions: the rows of the
    partitions it would drop). Rows examined, the breaker's
    denominator: the rows in scope (NULL expiry included), counted only as far as the decision needs
    (up to to_delete / breaker_max_share + 1). Refusal: NULL, or why the run deletes nothing."""
    share = float(spec.breaker_max_share)
    cap = sql.SQL("floor(n / {})::bigint + 1").format(sql.Literal(share)) if share > 0 else sql.SQL("n + 1")
    how = (
        "; nothing was deleted. If this is right, raise breaker_max_share or breaker_max_count, "
        "or set allow_mass_deletion"
    )
    refusal: sql.Composable = sql.SQL("NULL")
    if not spec.allow_mass_deletion:
        branches = [sql.SQL("WHEN e.n <= {} THEN NULL").format(sql.Literal(spec.breaker_ignore_below))]
        if spec.breaker_max_count is not None:
            branches.append(
                sql.SQL("WHEN e.n > {max} THEN format({text}, e.n, {max})").format(
                    max=sql.Literal(spec.breaker_max_count),
                    text=sql.Literal(f"mass-deletion breaker: %s rows to delete, more than breaker_max_count %s{how}"),
                )
            )
        branches.append(
            sql.SQL(
                "WHEN e.n > {share} * greatest(s.n, e.n) THEN format({text}, e.n, greatest(s.n, e.n), {pct})"
            ).format(
                share=sql.Literal(share),
                pct=sql.Literal(f"{share:.0%}"),
                text=sql.Literal(
                    "mass-deletion breaker: %s of %s rows examined would be deleted, more than "
                    f"breaker_max_share %s{how}"
                ),
            )
        )
        refusal = sql.SQL("CASE {} END").format(sql.SQL(" ").join(branches))
    if spec.mode == MODE_DROP_PARTITIONS:
        expired = sql.SQL("SELECT coalesce(sum(p.n), 0)::bigint AS n FROM ({}) p(oid, name, upper, n)").format(
            partitions_before(spec, cutoff, column_type)
        )
    else:
        expired = sql.SQL("SELECT count(*) AS n FROM {} WHERE {}").format(spec.target, expired_condition(spec, cutoff))
    return sql.SQL(
        "WITH e AS ({expired}), "
        "s AS (SELECT count(*) AS n FROM (SELECT FROM {target} WHERE {scope} LIMIT (SELECT {cap} FROM e)) x) "
        "SELECT e.n, s.n, {refusal} FROM e, s"
    ).format(target=spec.target, expired=expired, scope=_scope(spec), cap=cap, refusal=refusal)


def procedure(spec: PurgeSpec, kind: str, column_type: str, replace: bool) -> sql.Composed:
    """CREATE (``replace``: OR REPLACE) PROCEDURE <schema>.<job>: one run under an advisory lock (runs never
    overlap). The run's cutoff is fixed at its start; the breaker decides on the plan; then batches
    (or dropped partitions), each committed together with its row in <job>_batches, until nothing
    expired before the cutoff is left or the runtime is spent. <job>_log holds one row per run,
    written at its start."""
    body = sql.SQL("""
DECLARE
  v_started timestamptz := clock_timestamp();
  v_cutoff {cutoff_type} := {now};
  v_run bigint;
  v_to_delete bigint;
  v_examined bigint;
  v_refusal text;
  v_picked bigint;
  v_deleted bigint;
  v_total bigint := 0;
  v_skipped bigint := 0;
  v_batch integer := 0;
  v_out_of_time boolean := false;
  v_size integer := batch_size;
  v_from {column}%TYPE;
  v_upper {column}%TYPE;
  v_first {column}%TYPE;
  v_ms double precision;
  v_at timestamptz;
  v_parts regclass[];
  v_part regclass;
  v_name text;
  v_live bigint;
BEGIN
  IF NOT pg_try_advisory_lock({lock}) THEN
    RAISE EXCEPTION 'another run of % is in progress (it holds the advisory lock); this run did nothing', {job};
  END IF;
  {plan} INTO v_to_delete, v_examined, v_refusal;
  INSERT INTO {log} (started_at, cutoff, expired_rows, examined_rows, refused)
    VALUES (v_started, v_cutoff::text, v_to_delete, v_examined, v_refusal) RETURNING run_id INTO v_run;
  COMMIT;
  IF v_refusal IS NOT NULL THEN
    UPDATE {log} SET finished_at = clock_timestamp() WHERE run_id = v_run;
    COMMIT;
    PERFORM pg_advisory_unlock({lock});
    RAISE EXCEPTION '%', v_refusal;
  END IF;
{work}
  UPDATE {log} SET finished_at = clock_timestamp(), rows_deleted = v_total, rows_skipped = v_skipped,
    batches = v_batch, out_of_time = v_out_of_time WHERE run_id = v_run;
  DELETE FROM {log} WHERE started_at < now() - make_interval(days => {history_days});
  COMMIT;
{prune}
  PERFORM pg_advisory_unlock({lock});
END
""")
    if spec.mode == MODE_DROP_PARTITIONS:
        work = sql.SQL("""
  SELECT coalesce(array_agg(p.oid::regclass ORDER BY p.upper), '{{}}') INTO v_parts
    FROM ({partitions}) p(oid, name, upper, n);
  FOREACH v_part IN ARRAY v_parts LOOP
    IF clock_timestamp() - v_started > make_interval(secs => max_runtime_seconds) THEN
      v_out_of_time := true;
      EXIT;
    END IF;
    v_at := clock_timestamp();
    v_name := v_part::text;
    SET LOCAL lock_timeout = '10s';
    EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', {target}, v_part);
    EXECUTE format('SELECT count(*), count(*) FILTER (WHERE %I IS NULL OR %I >= $1) FROM %s',
      {col}, {col}, v_part) INTO v_deleted, v_live USING v_cutoff;
    IF v_live > 0 THEN
      RAISE EXCEPTION 'partition % holds % live rows (expiry at or after the cutoff %); nothing of it was dropped',
        v_name, v_live, v_cutoff;
    END IF;
    EXECUTE format('DROP TABLE %s', v_part);
    v_batch := v_batch + 1;
    v_total := v_total + v_deleted;
    INSERT INTO {batches} (run_id, batch, rows_deleted, rows_skipped, duration_ms, dropped_partition)
      VALUES (v_run, v_batch, v_deleted, 0, 1000 * extract(epoch from clock_timestamp() - v_at), v_name);
    COMMIT;
  END LOOP;""").format(
            partitions=partitions_before(spec, sql.SQL("v_cutoff"), column_type, rows=False),
            target=sql.Literal(spec.target.as_string(None)),
            col=sql.Literal(spec.expiry_column),
            batches=spec.ident("_batches"),
        )
    else:
        work = sql.SQL("""
  {first} INTO v_from;
  WHILE v_from IS NOT NULL LOOP
    v_at := clock_timestamp();
    {delete} INTO v_picked, v_deleted, v_upper, v_first;
    IF v_upper = v_first THEN
      {ties} INTO v_picked, v_deleted;
    END IF;
    v_from := v_upper;
    v_batch := v_batch + 1;
    INSERT INTO {batches} (run_id, batch, rows_deleted, rows_skipped, batch_rows, duration_ms)
      VALUES (v_run, v_batch, v_deleted, v_picked - v_deleted, v_size,
        1000 * extract(epoch from clock_timestamp() - v_at));
    COMMIT;
    v_ms := 1000 * extract(epoch from clock_timestamp() - v_at);
    v_total := v_total + v_deleted;
    v_skipped := v_skipped + v_picked - v_deleted;
    EXIT WHEN v_from IS NULL;
    IF clock_timestamp() - v_started > make_interval(secs => max_runtime_seconds) THEN
      v_out_of_time := true;
      EXIT;
    END IF;
    v_size := {next_size};
  END LOOP;""").format(
            first=first_expired(spec, sql.SQL("v_cutoff")),
            delete=batch_delete(spec, sql.SQL("v_cutoff"), sql.SQL("v_from"), sql.SQL("v_size"), sql.SQL("v_run")),
            ties=tie_delete(spec, sql.SQL("v_cutoff"), sql.SQL("v_first"), sql.SQL("v_size"), sql.SQL("v_run")),
            batches=spec.ident("_batches"),
            next_size=_next_batch_size_sql(spec),
        )
    prune: sql.Composable = sql.SQL("")
    if spec.archive:
        prune = sql.SQL("""
  LOOP
    {prune} INTO v_deleted;
    COMMIT;
    EXIT WHEN v_deleted < batch_size;
  END LOOP;""").format(prune=archive_prune(spec, sql.SQL("batch_size")))
    text = body.format(
        cutoff_type=sql.SQL(CUTOFF_TYPES[kind]),
        now=_now(kind),
        column=sql.Identifier(spec.table_schema, spec.table, spec.expiry_column),
        lock=spec.lock_key,
        job=sql.Literal(spec.job_name),
        plan=plan_counts(spec, sql.SQL("v_cutoff"), column_type),
        work=work,
        prune=prune,
        log=spec.ident("_log"),
        history_days=sql.Literal(spec.history_days),
    )
    return sql.SQL(
        "{create} PROCEDURE {name}(batch_size integer DEFAULT {batch}, "
        "max_runtime_seconds integer DEFAULT {runtime}) LANGUAGE plpgsql AS {body}"
    ).format(
        create=_create(replace),
        name=spec.ident(),
        batch=sql.Literal(spec.batch_size),
        runtime=sql.Literal(spec.max_runtime_seconds),
        body=sql.Literal(text.as_string(None)),
    )


def archive_prune(spec: PurgeSpec, limit: sql.Composable) -> sql.Composed:
    """Delete up to ``limit`` archived rows older than ``archive_days``; returns how many."""
    archive = spec.ident("_archive")
    return sql.SQL(
        "WITH gone AS (DELETE FROM {archive} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {archive} "
        "WHERE archived_at < now() - make_interval(days => {days}) LIMIT {limit})) RETURNING 1) "
        "SELECT count(*) FROM gone"
    ).format(archive=archive, days=sql.Literal(spec.archive_days), limit=limit)


def status_query(spec: PurgeSpec, kind: str) -> sql.Composed:
    """Permanent (no expiry), live and expired rows, the oldest expired and its age, the table's size."""
    col, now = sql.Identifier(spec.expiry_column), _now(kind)
    return sql.SQL("""SELECT
  count(*) FILTER (WHERE {col} IS NULL) AS permanent_rows,
  count(*) FILTER (WHERE {col} >= {now}) AS live_rows,
  count(*) FILTER (WHERE {col} < {now}) AS expired_rows,
  min({col}) FILTER (WHERE {col} < {now}) AS oldest_expired,
  coalesce({age}, 0)::bigint AS oldest_expired_age_seconds,
  pg_total_relation_size({oid}) AS table_bytes,
  pg_size_pretty(pg_total_relation_size({oid})) AS table_size
FROM {target} WHERE {scope}""").format(
        col=col, now=now, target=spec.target, oid=_table_oid(spec), scope=_scope(spec), age=_oldest_age(spec, kind)
    )


def status_view(spec: PurgeSpec, kind: str, replace: bool) -> sql.Composed:
    """<job>_status: the status query as a view (the guide's attribute_cleanup_status)."""
    return sql.SQL("{} VIEW {} AS {}").format(_create(replace), spec.ident("_status"), status_query(spec, kind))


def _create(replace: bool) -> sql.SQL:
    """CREATE OR REPLACE for an object this cleanup owns already, else CREATE: it fails if the name was taken
    since the ownership check, rather than replace what someone else made."""
    return sql.SQL("CREATE OR REPLACE" if replace else "CREATE")


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


def runs_view(spec: PurgeSpec, replace: bool) -> sql.Composed:
    """<job>_runs (in the cron database): the job's last 50 runs from cron.job_run_details."""
    return sql.SQL("""{create} VIEW {view} AS
SELECT d.runid, d.status, d.return_message, d.start_time, d.end_time
FROM cron.job_run_details d JOIN cron.job j ON j.jobid = d.jobid
WHERE j.jobname = {job} ORDER BY d.start_time DESC LIMIT 50""").format(
        create=_create(replace), view=spec.ident("_runs"), job=sql.Literal(spec.job_name)
    )


def _row(cursor: psycopg.Cursor[tuple[Any, ...]]) -> tuple[Any, ...]:
    """The row of a query that always returns one (aggregates, settings, privilege checks)."""
    row = cursor.fetchone()
    if row is None:
        raise CleanupError("a query that returns one row returned none")
    return row


@dataclass(frozen=True)
class Connector:
    """Opens connections to the table's database or to pg_cron's, with the same credentials."""

    conninfo: str
    database: str

    def connect(self, database: str | None = None, autocommit: bool = True) -> psycopg.Connection:
        other = database if database and database != self.database else None  # None: the conninfo's database
        return psycopg.connect(self.conninfo, autocommit=autocommit, connect_timeout=15, dbname=other)


def pg_cron_database(conn: psycopg.Connection) -> str:
    """The database pg_cron runs in; a clear error when pg_cron is not loaded or the settings cannot be read."""
    try:
        libraries = _row(conn.execute("SELECT current_setting('shared_preload_libraries')"))[0]
        if "pg_cron" not in [name.strip() for name in libraries.split(",")]:
            raise CleanupError(
                "pg_cron is not loaded: add pg_cron to shared_preload_libraries (and set cron.database_name), "
                f"then restart PostgreSQL; shared_preload_libraries is {libraries!r}"
            )
        return _row(conn.execute("SELECT current_setting('cron.database_name')"))[0]
    except psycopg.errors.InsufficientPrivilege as error:
        role = sql.Identifier(conn.info.user).as_string(conn)
        raise CleanupError(
            f"missing grant: GRANT pg_read_all_settings TO {role}; (to read shared_preload_libraries and "
            "cron.database_name)"
        ) from error


def _has_index(conn: psycopg.Connection, spec: PurgeSpec) -> bool:
    """Whether a btree index leads with the expiry column (what the ordered batches need)."""
    row = _row(
        conn.execute(
            """SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_class ic ON ic.oid = i.indexrelid
           JOIN pg_am am ON am.oid = ic.relam
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]
           WHERE n.nspname = %s AND c.relname = %s AND a.attname = %s AND am.amname = 'btree')""",
            (spec.table_schema, spec.table, spec.expiry_column),
        )
    )
    return bool(row[0])


SCHEDULE_IN_DATABASE = "cron.schedule_in_database(text,text,text,text,text,boolean)"
ALTER_JOB = "cron.alter_job(bigint,text,text,text,text,boolean)"


def _schema_grant(conn: psycopg.Connection, schema: str, role: str) -> str | None:
    """What lets ``role`` create the cleanup's objects in ``schema`` (CREATE on it, or on the database)."""
    exists, allowed = _row(
        conn.execute(
            "SELECT to_regnamespace(quote_ident(%(s)s)) IS NOT NULL, CASE WHEN to_regnamespace(quote_ident(%(s)s)) "
            "IS NULL THEN has_database_privilege(current_database(), 'CREATE') "
            "ELSE has_schema_privilege(%(s)s, 'CREATE') AND has_schema_privilege(%(s)s, 'USAGE') END",
            {"s": schema},
        )
    )
    if allowed:
        return None
    if exists:
        return f"GRANT USAGE, CREATE ON SCHEMA {sql.Identifier(schema).as_string(conn)} TO {role};"
    return f"GRANT CREATE ON DATABASE {sql.Identifier(conn.info.dbname).as_string(conn)} TO {role};"


def missing_grants(conn: psycopg.Connection, cron: psycopg.Connection, spec: PurgeSpec) -> list[str]:
    """The grants lacking to provision and run ``spec``, as the statements that give them (run by a
    superuser or RDS's master user): the connected role's (none for a superuser) and, with ``run_as``,
    the grants of the role the jobs run as. ``cron`` is a connection to pg_cron's database (``conn``
    itself when the table lives there)."""
    role_name, superuser = _row(
        conn.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")
    )
    missing = _run_as_grants(conn, cron, spec, role_name) if spec.run_as else []
    if superuser:
        return missing
    role = sql.Identifier(role_name).as_string(conn)
    table = spec.target.as_string(conn)
    usage, select, delete, owner = _row(
        conn.execute(
            sql.SQL(
                "SELECT has_schema_privilege({ts}, 'USAGE'), has_table_privilege({oid}, 'SELECT'), "
                "has_table_privilege({oid}, 'DELETE'), pg_has_role((SELECT relowner FROM pg_class WHERE oid = {oid}), "
                "'USAGE')"
            ).format(ts=sql.Literal(spec.table_schema), oid=_table_oid(spec))
        )
    )
    if not usage:
        missing.append(f"GRANT USAGE ON SCHEMA {sql.Identifier(spec.table_schema).as_string(conn)} TO {role};")
    runs_here = spec.run_as is None  # else run_as deletes; this role reads (the status view) and schedules
    granted = [name for name, ok in (("SELECT", select), ("DELETE", delete or not runs_here)) if not ok]
    if granted:
        missing.append(f"GRANT {', '.join(granted)} ON {table} TO {role};")
    if spec.create_index and not owner and not _has_index(conn, spec):
        missing.append(f"ALTER TABLE {table} OWNER TO {role}; (create_index: only the owner can create an index)")
    if spec.mode == MODE_DROP_PARTITIONS and not owner and runs_here:
        missing.append(f"ALTER TABLE {table} OWNER TO {role}; (drop-partitions: only the owner can detach and drop)")
    missing += filter(None, [_schema_grant(conn, spec.schema, role)])
    version = cron.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'").fetchone()
    if version is None:
        missing.append(f"CREATE EXTENSION pg_cron; (as a superuser, in database {cron.info.dbname!r})")
        return missing
    if not _row(cron.execute("SELECT has_schema_privilege('cron', 'USAGE')"))[0]:
        missing.append(f"GRANT USAGE ON SCHEMA cron TO {role};")
        return missing
    if cron is not conn:
        for function in (SCHEDULE_IN_DATABASE, ALTER_JOB) if runs_here else ():
            if not _row(cron.execute("SELECT has_function_privilege(%s, 'EXECUTE')", (function,)))[0]:
                missing.append(f"GRANT EXECUTE ON FUNCTION {function} TO {role};")
        if not _row(cron.execute("SELECT has_database_privilege(%s, 'CONNECT')", (conn.info.dbname,)))[0]:
            missing.append(f"GRANT CONNECT ON DATABASE {sql.Identifier(conn.info.dbname).as_string(conn)} TO {role};")
        missing += filter(None, [_schema_grant(cron, spec.schema, role)])
    return missing


def _run_as_grants(conn: psycopg.Connection, cron: psycopg.Connection, spec: PurgeSpec, provisioner: str) -> list[str]:
    """What ``run_as`` lacks to run the jobs: LOGIN (pg_cron connects as it), CONNECT, SELECT and DELETE on
    the table (its ownership for drop-partitions), USAGE on a schema the cleanup did not create, pg_cron's
    grants; and the membership that lets ``provisioner`` SET ROLE to it (pg_cron 1.4 lets only a superuser
    schedule a job for another role, so provisioning schedules as run_as itself)."""
    assert spec.run_as is not None
    runner, role = sql.Identifier(spec.run_as).as_string(conn), sql.Identifier(provisioner).as_string(conn)
    table = spec.target.as_string(conn)
    found = conn.execute(
        sql.SQL(
            "SELECT r.rolcanlogin, pg_has_role({p}, r.oid, 'MEMBER'), has_schema_privilege(r.oid, {ts}, 'USAGE'), "
            "has_table_privilege(r.oid, {oid}, 'SELECT'), has_table_privilege(r.oid, {oid}, 'DELETE'), "
            "pg_has_role(r.oid, (SELECT relowner FROM pg_class WHERE oid = {oid}), 'USAGE'), "
            "CASE WHEN to_regnamespace(quote_ident({s})) IS NULL THEN true "
            "WHEN obj_description(to_regnamespace(quote_ident({s})), 'pg_namespace') = {ours} THEN true "
            "ELSE has_schema_privilege(r.oid, {s}, 'USAGE') END FROM pg_roles r WHERE r.rolname = {r}"
        ).format(
            p=sql.Literal(provisioner),
            r=sql.Literal(spec.run_as),
            ts=sql.Literal(spec.table_schema),
            s=sql.Literal(spec.schema),
            oid=_table_oid(spec),
            ours=sql.Literal(CREATED_BY),
        )
    ).fetchone()
    if found is None:
        return [f"CREATE ROLE {runner} LOGIN; (run_as: no such role)"]
    login, member, usage, select, delete, owner, schema_usage = found
    missing = [] if login else [f"ALTER ROLE {runner} LOGIN; (pg_cron connects as the role a job runs as)"]
    if not member:
        missing.append(f"GRANT {runner} TO {role}; (run_as: provisioning schedules the jobs as {runner})")
    if not usage:
        missing.append(f"GRANT USAGE ON SCHEMA {sql.Identifier(spec.table_schema).as_string(conn)} TO {runner};")
    granted = [name for name, ok in (("SELECT", select), ("DELETE", delete)) if not ok]
    if granted:
        missing.append(f"GRANT {', '.join(granted)} ON {table} TO {runner};")
    if spec.mode == MODE_DROP_PARTITIONS and not owner:
        missing.append(f"ALTER TABLE {table} OWNER TO {runner}; (drop-partitions: only the owner can detach and drop)")
    if not schema_usage:
        missing.append(f"GRANT USAGE ON SCHEMA {sql.Identifier(spec.schema).as_string(conn)} TO {runner};")
    for database in dict.fromkeys((conn.info.dbname, cron.info.dbname)):
        if not _row(cron.execute("SELECT has_database_privilege(%s, %s, 'CONNECT')", (spec.run_as, database)))[0]:
            missing.append(f"GRANT CONNECT ON DATABASE {sql.Identifier(database).as_string(conn)} TO {runner};")
    if not cron.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'").fetchone():
        return missing  # provisioning creates it (a superuser) or asks for it
    if not _row(cron.execute("SELECT has_schema_privilege(%s, 'cron', 'USAGE')", (spec.run_as,)))[0]:
        missing.append(f"GRANT USAGE ON SCHEMA cron TO {runner};")
    elif cron is not conn:
        for function in (SCHEDULE_IN_DATABASE, ALTER_JOB):
            if not _row(cron.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE')", (spec.run_as, function)))[0]:
                missing.append(f"GRANT EXECUTE ON FUNCTION {function} TO {runner};")
    return missing


def _schedule(cron: psycopg.Connection, job: str, schedule: str, command: str, database: str) -> int:
    """Schedule ``job`` as the current user (in place when it exists), to run in ``database``."""
    if database == cron.info.dbname:
        return _row(cron.execute("SELECT cron.schedule(%s, %s, %s)", (job, schedule, command)))[0]
    existing = cron.execute(
        "SELECT jobid FROM cron.job WHERE jobname = %s AND username = current_user", (job,)
    ).fetchone()
    if existing:
        cron.execute("SELECT cron.alter_job(%s, %s, %s, %s)", (existing[0], schedule, command, database))
        return existing[0]
    return _row(cron.execute("SELECT cron.schedule_in_database(%s, %s, %s, %s)", (job, schedule, command, database)))[0]


@contextlib.contextmanager
def _scheduling_role(cron: psycopg.Connection, spec: PurgeSpec) -> Iterator[None]:
    """Inside a transaction: with ``run_as``, act as it (SET LOCAL ROLE) on pg_cron's jobs, which pg_cron
    keys by name and role and runs as their role; back to the connected role after."""
    if spec.run_as is None:
        yield
        return
    cron.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(spec.run_as)))
    yield
    cron.execute("RESET ROLE")


RELATION_KINDS = {
    "r": "table",
    "p": "partitioned table",
    "v": "view",
    "m": "materialized view",
    "i": "index",
    "I": "partitioned index",
    "S": "sequence",
    "f": "foreign table",
    "c": "composite type",
}
ROUTINE_KINDS = {"f": "function", "p": "procedure", "a": "aggregate", "w": "window function"}


@dataclass
class Owned:
    """This cleanup's objects that exist already, each marked as its own: relations by (schema, name),
    whether its procedure exists, and its pg_cron jobs by name."""

    relations: set[tuple[str, str]] = field(default_factory=set)
    procedure: bool = False
    jobs: set[str] = field(default_factory=set)


def _relations(conn: psycopg.Connection, spec: PurgeSpec, names: list[tuple[str, str]], owned: Owned) -> list[str]:
    """Add the relations of ``names`` (schema, name) that carry the job's marker to ``owned``; describe the others."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname, c.relkind, coalesce(obj_description(c.oid, 'pg_class') = %s, false), "
        "quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
        (owned_marker(spec.job_name), [schema for schema, _ in names], [name for _, name in names]),
    ).fetchall()
    owned.relations |= {(schema, name) for schema, name, _, ours, _ in rows if ours}
    return [f"{RELATION_KINDS.get(kind, 'relation')} {shown}" for _, _, kind, ours, shown in rows if not ours]


def _claim(conn: psycopg.Connection, cron: psycopg.Connection, spec: PurgeSpec) -> Owned:
    """What of the cleanup's objects exists already, each of it marked as this job's: a name taken by an
    object without the marker (the user's table, procedure or pg_cron job, or another cleanup's) is a
    CleanupError that names them all, raised before anything is written."""
    owned, marker = Owned(), owned_marker(spec.job_name)
    names = [(spec.schema, spec.job_name + suffix) for suffix in ("_log", "_batches", "_status")]
    if spec.archive:
        names += [(spec.schema, f"{spec.job_name}_archive"), (spec.schema, f"{spec.job_name}_archive_at")]
    if spec.create_index and not _has_index(conn, spec):
        names.append((spec.table_schema, spec.index_name))
    runs = [(spec.schema, f"{spec.job_name}_runs")]
    foreign = _relations(conn, spec, names + runs if cron is conn else names, owned)
    if cron is not conn:
        foreign += _relations(cron, spec, runs, owned)
    for shown, kind, ours in conn.execute(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '(' || "
        "pg_get_function_identity_arguments(p.oid) || ')', p.prokind, "
        "coalesce(obj_description(p.oid, 'pg_proc') = %s, false) FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s AND p.proname = %s ORDER BY 1",
        (marker, spec.schema, spec.job_name),
    ).fetchall():
        owned.procedure |= ours
        foreign += [] if ours else [f"{ROUTINE_KINDS.get(kind, 'routine')} {shown}"]
    if _row(cron.execute("SELECT to_regclass('cron.job') IS NOT NULL"))[0]:
        with cron.transaction(), _scheduling_role(cron, spec):
            jobs = cron.execute(
                "SELECT jobname, username, starts_with(command, %s) FROM cron.job "
                "WHERE jobname = ANY(%s) AND username = current_user ORDER BY jobname",
                (cron_command(spec.job_name, ""), [spec.job_name, spec.history_job]),
            ).fetchall()
        owned.jobs = {name for name, _, ours in jobs if ours}
        foreign += [f"pg_cron job {name!r} of role {role!r}" for name, role, ours in jobs if not ours]
    if foreign:
        raise CleanupError(
            f"job {spec.job_name!r}: in the way of what it creates, and not created by Expiry for this job (no "
            f"marker {marker!r}): {', '.join(foreign)}; nothing was changed. Choose another job_name or schema, "
            "or rename what is in the way"
        )
    return owned


def _mark(conn: psycopg.Connection, spec: PurgeSpec, kind: str, name: sql.Composable) -> None:
    """Mark a new object as this cleanup's own (COMMENT ON ``kind`` ``name``)."""
    conn.execute(
        sql.SQL("COMMENT ON {} {} IS {}").format(sql.SQL(kind), name, sql.Literal(owned_marker(spec.job_name)))
    )


def _own_schema(conn: psycopg.Connection, spec: PurgeSpec) -> bool:
    """Create the cleanup's schema (marked as ours) when missing; whether it was created."""
    if _row(conn.execute("SELECT to_regnamespace(quote_ident(%s)) IS NOT NULL", (spec.schema,)))[0]:
        return False
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(spec.schema)))
    conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(sql.Identifier(spec.schema), sql.Literal(CREATED_BY)))
    return True


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
)
BATCH_COLUMNS = ("batch_rows integer", "duration_ms double precision", "dropped_partition text")


def _log_tables(conn: psycopg.Connection, spec: PurgeSpec, owned: Owned) -> None:
    """<job>_log (a row per run, written when it starts) and <job>_batches (a row per committed
    batch), created and marked unless this cleanup owns them already; its older log table gains the new columns."""
    log = spec.ident("_log")
    if (spec.schema, f"{spec.job_name}_log") not in owned.relations:
        conn.execute(
            sql.SQL("CREATE TABLE {} (run_id bigserial PRIMARY KEY, started_at timestamptz NOT NULL)").format(log)
        )
        _mark(conn, spec, "TABLE", log)
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
        _mark(conn, spec, "TABLE", spec.ident("_batches"))
    conn.execute(
        sql.SQL("ALTER TABLE {} {}").format(
            spec.ident("_batches"),
            sql.SQL(", ").join(sql.SQL("ADD COLUMN IF NOT EXISTS " + column) for column in BATCH_COLUMNS),
        )
    )
    if spec.archive:
        create_archive(conn, spec, owned)


def create_archive(conn: psycopg.Connection, spec: PurgeSpec, owned: Owned) -> None:
    """<job>_archive: each purged row as jsonb, with when and by which run (NULL: a client purge), and its
    index; each created and marked unless this cleanup owns it already."""
    archive = spec.ident("_archive")
    if (spec.schema, f"{spec.job_name}_archive") not in owned.relations:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (archived_at timestamptz NOT NULL DEFAULT clock_timestamp(), "
                "run_id bigint, row_data jsonb NOT NULL)"
            ).format(archive)
        )
        _mark(conn, spec, "TABLE", archive)
    if (spec.schema, f"{spec.job_name}_archive_at") not in owned.relations:
        conn.execute(
            sql.SQL("CREATE INDEX {} ON {} (archived_at)").format(
                sql.Identifier(f"{spec.job_name}_archive_at"), archive
            )
        )
        _mark(conn, spec, "INDEX", spec.ident("_archive_at"))


def _grant_run_as(conn: psycopg.Connection, spec: PurgeSpec) -> None:
    """What ``run_as`` needs of the cleanup's own objects: to run the procedure, write its log (and the
    archive) and read its status; USAGE on the schema when the cleanup created it."""
    if spec.run_as is None:
        return
    role, log = sql.Identifier(spec.run_as), spec.ident("_log")
    sequence = _row(conn.execute("SELECT pg_get_serial_sequence(%s, 'run_id')", (log.as_string(conn),)))[0]
    grants = [
        ("EXECUTE ON PROCEDURE", sql.SQL("{}(integer, integer)").format(spec.ident())),
        ("SELECT, INSERT, UPDATE, DELETE ON TABLE", log),
        ("USAGE ON SEQUENCE", sql.SQL(sequence)),  # quoted and qualified by PostgreSQL itself
        ("SELECT, INSERT, DELETE ON TABLE", spec.ident("_batches")),
        ("SELECT ON TABLE", spec.ident("_status")),
    ]
    if spec.archive:
        grants.append(("SELECT, INSERT, DELETE ON TABLE", spec.ident("_archive")))
    if _schema_is_ours(conn, spec):
        grants.append(("USAGE ON SCHEMA", sql.Identifier(spec.schema)))
    for privileges, name in grants:
        conn.execute(sql.SQL("GRANT {} {} TO {}").format(sql.SQL(privileges), name, role))


def _check_extra_column(conn: psycopg.Connection, spec: PurgeSpec) -> None:
    if spec.extra_column is None:
        return
    found = _row(
        conn.execute(
            sql.SQL(
                "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = {} AND attname = %s AND attnum > 0 "
                "AND NOT attisdropped)"
            ).format(_table_oid(spec)),
            (spec.extra_column,),
        )
    )[0]
    if not found:
        raise CleanupError(f"extra_column: no column {spec.extra_column!r} in table {spec.table_schema}.{spec.table}")


def provision(connector: Connector, spec: PurgeSpec) -> ProvisionState:
    """Create or update everything the cleanup needs, all or nothing; idempotent.

    Everything is checked first (pg_cron loaded, columns, every grant, no name taken by an object this
    job did not mark: see _claim), then created and marked in one
    transaction when the table lives in pg_cron's database, else in one transaction per database,
    committed back to back (the table's first): a failure before the commits leaves nothing behind,
    and a create that fails after the first commit is undone. The optional index comes last
    (CREATE INDEX CONCURRENTLY cannot run in a transaction). Returns what it found and made."""
    with contextlib.ExitStack() as stack:
        conn = stack.enter_context(connector.connect())
        cron_database = pg_cron_database(conn)
        kind, expiry_type = column_type(conn, spec)
        _check_extra_column(conn, spec)
        if spec.mode == MODE_DROP_PARTITIONS:
            check_partitioned(conn, spec)
        same = cron_database == connector.database
        cron = conn if same else stack.enter_context(connector.connect(cron_database))
        missing = missing_grants(conn, cron, spec)
        if missing:
            raise CleanupError(f"missing grants for role {conn.info.user!r}: " + " ".join(missing))
        owned = _claim(conn, cron, spec)
        existed = spec.job_name in owned.jobs
        command = cron_command(spec.job_name, spec.command.as_string(conn))
        history = cron_command(spec.job_name, history_prune(spec.history_days).as_string(cron))
        committed = False
        try:
            with contextlib.nullcontext() if same else cron.transaction():
                with conn.transaction():
                    cron.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
                    created_schema = _own_schema(conn, spec)
                    _log_tables(conn, spec, owned)
                    conn.execute(procedure(spec, kind, expiry_type, owned.procedure))
                    if not owned.procedure:
                        _mark(conn, spec, "PROCEDURE", sql.SQL("{}(integer, integer)").format(spec.ident()))
                    status_owned = (spec.schema, f"{spec.job_name}_status") in owned.relations
                    conn.execute(status_view(spec, kind, status_owned))
                    if not status_owned:
                        _mark(conn, spec, "VIEW", spec.ident("_status"))
                    _grant_run_as(conn, spec)
                    with _scheduling_role(cron, spec):
                        job_id = _schedule(cron, spec.job_name, spec.schedule, command, connector.database)
                        history_id = _schedule(cron, spec.history_job, spec.history_schedule, history, cron_database)
                    if not same:
                        _own_schema(cron, spec)
                    runs_owned = (spec.schema, f"{spec.job_name}_runs") in owned.relations
                    cron.execute(runs_view(spec, runs_owned))
                    if not runs_owned:
                        _mark(cron, spec, "VIEW", spec.ident("_runs"))
                committed = True
            index_created = _create_index(conn, spec)
        except Exception:
            if committed and not existed:
                with contextlib.suppress(Exception):
                    unprovision(connector, spec)
            raise
        indexed = _has_index(conn, spec)
    return {
        "cron_database": cron_database,
        "column_kind": kind,
        "job_id": job_id,
        "history_job_id": history_id,
        "created_schema": created_schema,
        "created_index": index_created,
        "expiry_column_indexed": indexed,
    }


def history_prune(days: int) -> sql.Composed:
    """The history job: delete cron.job_run_details rows that ended more than ``days`` ago, and failed
    runs pg_cron recorded without times (a connection that failed) followed by a run that started
    more than ``days`` ago (run ids grow with time)."""
    window = sql.SQL("now() - make_interval(days => {})").format(sql.Literal(days))
    return sql.SQL(
        "DELETE FROM cron.job_run_details WHERE end_time < {window} OR (start_time IS NULL AND end_time IS NULL "
        "AND status = 'failed' AND runid < (SELECT max(runid) FROM cron.job_run_details WHERE start_time < {window}))"
    ).format(window=window)


def _create_index(conn: psycopg.Connection, spec: PurgeSpec) -> bool:
    """CREATE INDEX CONCURRENTLY on the expiry column when asked and none leads with it; whether it did."""
    if not spec.create_index or _has_index(conn, spec):
        return False
    conn.execute(
        sql.SQL("CREATE INDEX CONCURRENTLY {} ON {} ({}) WHERE {} IS NOT NULL").format(
            sql.Identifier(spec.index_name),
            spec.target,
            sql.Identifier(spec.expiry_column),
            sql.Identifier(spec.expiry_column),
        )
    )
    _mark(conn, spec, "INDEX", sql.Identifier(spec.table_schema, spec.index_name))
    return True


def unprovision(connector: Connector, spec: PurgeSpec) -> None:
    """Remove the jobs and what the cleanup created, each only if it carries this job's marker (the
    schema: when Expiry created it and no other cleanup is left in it). An object of the same name
    without the marker, the table, its rows and the archive are left alone."""
    with connector.connect() as conn:
        cron_database = pg_cron_database(conn)
    with connector.connect(cron_database) as cron:
        with cron.transaction(), _scheduling_role(cron, spec):
            cron.execute(
                "SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = ANY(%s) AND username = current_user "
                "AND starts_with(command, %s)",
                ([spec.job_name, spec.history_job], cron_command(spec.job_name, "")),
            )
        _drop_if_ours(cron, spec, "VIEW", spec.ident("_runs"))
        if cron_database != connector.database:
            _drop_schema_if_ours(cron, spec)
    with connector.connect() as conn:
        _drop_if_ours(conn, spec, "PROCEDURE", sql.SQL("{}(integer, integer)").format(spec.ident()))
        _drop_if_ours(conn, spec, "VIEW", spec.ident("_status"))
        _drop_if_ours(conn, spec, "TABLE", spec.ident("_batches"))
        _drop_if_ours(conn, spec, "TABLE", spec.ident("_log"))
        _drop_if_ours(conn, spec, "INDEX CONCURRENTLY", sql.Identifier(spec.table_schema, spec.index_name))
        _drop_schema_if_ours(conn, spec)


def _drop_if_ours(conn: psycopg.Connection, spec: PurgeSpec, kind: str, name: sql.Composable) -> None:
    """DROP ``kind`` ``name`` if it exists and carries this job's marker."""
    find, catalog = ("to_regprocedure", "pg_proc") if kind == "PROCEDURE" else ("to_regclass", "pg_class")
    ours = _row(
        conn.execute(
            sql.SQL("SELECT obj_description({}(%s), %s) = %s").format(sql.SQL(find)),
            (name.as_string(conn), catalog, owned_marker(spec.job_name)),
        )
    )[0]
    if ours:
        conn.execute(sql.SQL("DROP {} {}").format(sql.SQL(kind), name))


def _schema_is_ours(conn: psycopg.Connection, spec: PurgeSpec) -> bool:
    """Whether Expiry created the cleanup's schema (its comment says so)."""
    ours = conn.execute(
        "SELECT obj_description(oid, 'pg_namespace') = %s FROM pg_namespace WHERE nspname = %s",
        (CREATED_BY, spec.schema),
    ).fetchone()
    return bool(ours and ours[0])


def _drop_schema_if_ours(conn: psycopg.Connection, spec: PurgeSpec) -> None:
    if _schema_is_ours(conn, spec):
        with contextlib.suppress(psycopg.errors.DependentObjectsStillExist):  # other cleanups still live in it
            conn.execute(sql.SQL("DROP SCHEMA {} RESTRICT").format(sql.Identifier(spec.schema)))


def _key_columns(conn: psycopg.Connection, spec: PurgeSpec) -> list[str]:
    """The table's primary key columns, in key order; ctid when it has none."""
    rows = conn.execute(
        sql.SQL(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY (i.indkey) WHERE i.indrelid = {} AND i.indisprimary "
            "ORDER BY array_position(i.indkey::int2[], a.attnum)"
        ).format(_table_oid(spec))
    ).fetchall()
    return [row[0] for row in rows] or ["ctid"]


@dataclass
class Plan:
    """What a run at ``cutoff`` deletes: the rows in scope expired before it (``expired_rows``; a
    sample of their primary keys, oldest first; drop-partitions: the partitions to drop, each with
    its upper bound and rows), and the breaker's decision on them."""

    cutoff: str
    expired_rows: int
    examined_rows: int
    refused: str | None
    key_columns: list[str] = field(default_factory=list)
    sample_keys: list[dict[str, str | None]] = field(default_factory=list)
    partitions: list[dict[str, Any]] = field(default_factory=list)


def _cutoff(conn: psycopg.Connection, kind: str) -> Any:
    """The run's cutoff: the database's now, read once."""
    return _row(conn.execute(sql.SQL("SELECT {}").format(_now(kind))))[0]


def _plan(conn: psycopg.Connection, spec: PurgeSpec, at: Any, expiry_type: str, sample_size: int) -> Plan:
    cutoff = sql.Literal(at)
    expired, examined, refused = _row(conn.execute(plan_counts(spec, cutoff, expiry_type)))
    plan = Plan(str(at), expired, examined, refused)
    if spec.mode == MODE_DROP_PARTITIONS:
        rows = conn.execute(partitions_before(spec, cutoff, expiry_type)).fetchall()
        plan.partitions = [{"partition": r[1], "upper_bound": str(r[2]), "rows": r[3]} for r in rows]
    elif sample_size:
        plan.key_columns = _key_columns(conn, spec)
        keys = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(column)) for column in plan.key_columns)
        rows = conn.execute(
            sql.SQL("SELECT {keys} FROM {target} WHERE {condition} ORDER BY {col}, {keys} LIMIT {limit}").format(
                keys=keys,
                target=spec.target,
                condition=expired_condition(spec, cutoff),
                col=sql.Identifier(spec.expiry_column),
                limit=sql.Literal(sample_size),
            )
        ).fetchall()
        plan.sample_keys = [dict(zip(plan.key_columns, row, strict=True)) for row in rows]
    return plan


def plan(conn: psycopg.Connection, spec: PurgeSpec, sample_size: int = DEFAULT_SAMPLE_SIZE) -> Plan:
    """The dry run: what a purge now would delete (count, a sample of keys or the partitions) and
    whether the breaker would refuse it. Deletes nothing; a purge on the same rows deletes exactly these."""
    kind, expiry_type = column_type(conn, spec)
    if spec.mode == MODE_DROP_PARTITIONS:
        check_partitioned(conn, spec)
    return _plan(conn, spec, _cutoff(conn, kind), expiry_type, sample_size)


@dataclass
class PurgeResult:
    plan: Plan
    rows_deleted: int = 0
    rows_skipped: int = 0
    batches: int = 0
    out_of_time: bool = False
    stopped_early: bool = False
    partitions_dropped: list[str] = field(default_factory=list)


@contextlib.contextmanager
def run_lock(conn: psycopg.Connection, spec: PurgeSpec) -> Iterator[None]:
    """The advisory lock of the cleanup's runs, held for the whole run: runs never overlap."""
    if not _row(conn.execute(sql.SQL("SELECT pg_try_advisory_lock({})").format(spec.lock_key)))[0]:
        raise CleanupError(f"another run of {spec.job_name} is in progress (it holds the advisory lock); nothing done")
    try:
        yield
    finally:
        if not conn.closed:
            conn.execute(sql.SQL("SELECT pg_advisory_unlock({})").format(spec.lock_key))


def purge(
    conn: psycopg.Connection,
    spec: PurgeSpec,
    should_stop: Callable[[], bool] = lambda: False,
    on_batch: Callable[[int], None] | None = None,
) -> PurgeResult:
    """The procedure's run from a client (Lambda, CLI; ``conn`` in autocommit): under the same lock,
    with the same cutoff fixed at the start and the same breaker (a refused run deletes nothing and
    says why in ``result.plan.refused``), then batches of rows expired before the cutoff (or whole
    partitions), a commit after each, until none is left, at ``max_runtime_seconds``, or when
    ``should_stop`` says so."""
    kind, expiry_type = column_type(conn, spec)
    if spec.mode == MODE_DROP_PARTITIONS:
        check_partitioned(conn, spec)
    if spec.archive:
        _ensure_archive(conn, spec)
    with run_lock(conn, spec):
        at = _cutoff(conn, kind)
        result, started = PurgeResult(_plan(conn, spec, at, expiry_type, 0)), time.monotonic()
        if result.plan.refused:
            return result

        def stop() -> bool:
            if time.monotonic() - started > spec.max_runtime_seconds:
                result.out_of_time = True
            elif should_stop():
                result.stopped_early = True
            return result.out_of_time or result.stopped_early

        if spec.mode == MODE_DROP_PARTITIONS:
            _drop_partitions(conn, spec, at, expiry_type, result, stop, on_batch)
        else:
            _delete_batches(conn, spec, at, result, stop, on_batch)
        if spec.archive:
            limit = sql.Literal(spec.batch_size)
            while _row(conn.execute(archive_prune(spec, limit)))[0] == spec.batch_size:
                pass
        return result


def _delete_batches(
    conn: psycopg.Connection,
    spec: PurgeSpec,
    at: Any,
    result: PurgeResult,
    stop: Callable[[], bool],
    on_batch: Callable[[int], None] | None,
) -> None:
    """The procedure's loop: batches by expiry range from where the last one stopped (ties beyond a
    batch by row id), sized toward target_batch_ms."""
    cutoff, size = sql.Literal(at), spec.batch_size
    start = _row(conn.execute(first_expired(spec, cutoff)))[0]
    while start is not None:
        began = time.monotonic()
        with conn.transaction():
            statement = batch_delete(spec, cutoff, sql.Literal(start), sql.Literal(size), sql.NULL)
            picked, deleted, upper, first = _row(conn.execute(statement))
            if upper is not None and upper == first:
                statement = tie_delete(spec, cutoff, sql.Literal(first), sql.Literal(size), sql.NULL)
                picked, deleted = _row(conn.execute(statement))
        start = upper
        result.rows_deleted += deleted
        result.rows_skipped += picked - deleted
        result.batches += 1
        if on_batch:
            on_batch(deleted)
        if start is None or stop():
            return
        size = next_batch_size(spec, size, (time.monotonic() - began) * 1000)


def _drop_partitions(
    conn: psycopg.Connection,
    spec: PurgeSpec,
    at: Any,
    expiry_type: str,
    result: PurgeResult,
    stop: Callable[[], bool],
    on_batch: Callable[[int], None] | None,
) -> None:
    """Drop the planned partitions, oldest first: each is checked for live rows, detached
    (CONCURRENTLY unless the table has a DEFAULT partition, which forbids it), checked again and
    dropped. A partition holding a live row is re-attached as it was and the run fails."""
    concurrently = not _row(
        conn.execute(
            sql.SQL("SELECT EXISTS (SELECT FROM pg_partitioned_table WHERE partrelid = {} AND partdefid <> 0)").format(
                _table_oid(spec)
            )
        )
    )[0]
    for partition in conn.execute(partitions_before(spec, sql.Literal(at), expiry_type, rows=False)).fetchall():
        oid, name = partition[0], partition[1]
        table = sql.SQL(name)  # regclass text: quoted and qualified by PostgreSQL itself
        bound = _row(conn.execute("SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE oid = %s", (oid,)))[0]
        _refuse_live_rows(conn, spec, table, at)
        detach = sql.SQL("ALTER TABLE {} DETACH PARTITION {}{}").format(
            spec.target, table, sql.SQL(" CONCURRENTLY" if concurrently else "")
        )
        conn.execute(detach)
        with conn.transaction():
            try:
                rows = _refuse_live_rows(conn, spec, table, at)
            except CleanupError:
                conn.execute(
                    sql.SQL("ALTER TABLE {} ATTACH PARTITION {} {}").format(spec.target, table, sql.SQL(bound))
                )
                raise
            conn.execute(sql.SQL("DROP TABLE {}").format(table))
        result.rows_deleted += rows
        result.batches += 1
        result.partitions_dropped.append(name)
        if on_batch:
            on_batch(rows)
        if stop():
            return


def _refuse_live_rows(conn: psycopg.Connection, spec: PurgeSpec, table: sql.Composable, at: Any) -> int:
    """The partition's rows; a CleanupError if any is live (expiry NULL or at or after the cutoff)."""
    col = sql.Identifier(spec.expiry_column)
    rows, live = _row(
        conn.execute(
            sql.SQL("SELECT count(*), count(*) FILTER (WHERE {col} IS NULL OR {col} >= {at}) FROM {table}").format(
                col=col, at=sql.Literal(at), table=table
            )
        )
    )
    if live:
        raise CleanupError(
            f"partition {table.as_string(conn)} holds {live} live rows (expiry at or after the cutoff {at}); "
            "nothing of it was dropped"
        )
    return int(rows)


def _ensure_archive(conn: psycopg.Connection, spec: PurgeSpec) -> None:
    """The archive table for a client purge (the procedure's provisioning creates it too); a table or
    index of its name that this job did not mark is refused."""
    owned = Owned()
    names = [(spec.schema, f"{spec.job_name}_archive"), (spec.schema, f"{spec.job_name}_archive_at")]
    foreign = _relations(conn, spec, names, owned)
    if foreign:
        raise CleanupError(
            f"archive: job {spec.job_name!r}: in the way of its archive, and not created by Expiry for this job (no "
            f"marker {owned_marker(spec.job_name)!r}): {', '.join(foreign)}; nothing was deleted"
        )
    try:
        with conn.transaction():
            _own_schema(conn, spec)
            create_archive(conn, spec, owned)
    except psycopg.errors.InsufficientPrivilege as error:
        raise CleanupError(f"archive: cannot create {spec.ident('_archive').as_string(conn)}: {error}") from error


def _one_row(cursor: psycopg.Cursor[tuple[Any, ...]]) -> dict[str, Any]:
    names = [column.name for column in cursor.description or ()]
    return dict(zip(names, _row(cursor), strict=True))


def status(conn: psycopg.Connection, spec: PurgeSpec) -> dict[str, Any]:
    """The status view's row."""
    return _one_row(conn.execute(sql.SQL("SELECT * FROM {}").format(spec.ident("_status"))))


def cron_health(cron: psycopg.Connection, job_name: str, since_seconds: int) -> CronHealth:
    """Failed runs in the last ``since_seconds`` and the age of the last successful run. pg_cron records
    a run that failed to start (connection failed, no worker) with NULL start and end times: such a
    run counts until a run of any job that started before the window has a higher run id (run ids grow
    with time), so it is counted in the window it happened in, or later, never missed."""
    row = _row(
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
    row = _row(
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
