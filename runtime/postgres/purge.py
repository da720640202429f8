"""The purge from a client (the Lambda for databases without pg_cron, the CLI) and its dry run, the plan:
the procedure's run, batch by batch, with a commit after each."""

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from expiry.runtime.postgres import statements  # builders by module: one place to substitute a statement
from expiry.runtime.postgres.catalog import check_partitioned, column_type, has_index, one_row
from expiry.runtime.postgres.ownership import Owned, claim_relations, create_archive, own_schema
from expiry.runtime.postgres.spec import (
    MAX_GROWTH,
    MIN_BATCH_SIZE,
    MODE_DROP_PARTITIONS,
    CleanupError,
    PurgeSpec,
    owned_marker,
)

DEFAULT_SAMPLE_SIZE = 20


def next_batch_size(spec: PurgeSpec, size: int, elapsed_ms: float) -> int:
    """The next batch's size: scaled toward ``target_batch_ms`` (at most MAX_GROWTH times larger),
    within MIN_BATCH_SIZE (or batch_size when smaller) and max_batch_size; fixed when the target is 0."""
    if not spec.target_batch_ms:
        return size
    scaled = size * min(float(MAX_GROWTH), spec.target_batch_ms / max(elapsed_ms, 1.0))
    return int(max(min(MIN_BATCH_SIZE, spec.batch_size), min(spec.max_batch_size, scaled)))


def next_range_pages(spec: PurgeSpec, pages: int, max_pages: int, elapsed_ms: float) -> int:
    """The next TID range's pages: next_batch_size's rule in pages, from 1 to ``max_pages``."""
    if not spec.target_batch_ms:
        return pages
    scaled = pages * min(float(MAX_GROWTH), spec.target_batch_ms / max(elapsed_ms, 1.0))
    return int(max(1, min(max_pages, scaled)))


def _key_columns(conn: psycopg.Connection, spec: PurgeSpec) -> list[str]:
    """The table's primary key columns, in key order; ctid when it has none."""
    rows = conn.execute(
        sql.SQL(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY (i.indkey) WHERE i.indrelid = {} AND i.indisprimary "
            "ORDER BY array_position(i.indkey::int2[], a.attnum)"
        ).format(statements.table_oid(spec))
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
    return one_row(conn.execute(sql.SQL("SELECT {}").format(statements.database_now(kind))))[0]


def _plan(conn: psycopg.Connection, spec: PurgeSpec, at: Any, expiry_type: str, sample_size: int) -> Plan:
    cutoff = sql.Literal(at)
    expired, examined, refused = one_row(conn.execute(statements.plan_counts(spec, cutoff, expiry_type)))
    plan = Plan(str(at), expired, examined, refused)
    if spec.mode == MODE_DROP_PARTITIONS:
        rows = conn.execute(statements.partitions_before(spec, cutoff, expiry_type)).fetchall()
        plan.partitions = [{"partition": r[1], "upper_bound": str(r[2]), "rows": r[3]} for r in rows]
    elif sample_size:
        plan.key_columns = _key_columns(conn, spec)
        keys = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(column)) for column in plan.key_columns)
        rows = conn.execute(
            sql.SQL("SELECT {keys} FROM {target} WHERE {condition} ORDER BY {col}, {keys} LIMIT {limit}").format(
                keys=keys,
                target=spec.target,
                condition=statements.expired_condition(spec, cutoff),
                col=spec.expiry,
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
    walk: str = "index"  # or "tid-ranges": no expiry index (or an expiry expression)
    next_block: int | None = None  # tid-ranges: where a run resuming this one starts


@contextlib.contextmanager
def run_lock(conn: psycopg.Connection, spec: PurgeSpec) -> Iterator[None]:
    """The advisory lock of the cleanup's runs, held for the whole run: runs never overlap."""
    if not one_row(conn.execute(sql.SQL("SELECT pg_try_advisory_lock({})").format(spec.lock_key)))[0]:
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
    start_block: int = 0,
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
        elif has_index(conn, spec):
            _delete_batches(conn, spec, at, result, stop, on_batch)
        else:
            _delete_ranges(conn, spec, at, result, stop, on_batch, start_block)
        if spec.archive:
            limit = sql.Literal(spec.batch_size)
            while one_row(conn.execute(statements.archive_prune(spec, limit)))[0] == spec.batch_size:
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
    start = one_row(conn.execute(statements.first_expired(spec, cutoff)))[0]
    while start is not None:
        began = time.monotonic()
        with conn.transaction():
            statement = statements.batch_delete(spec, cutoff, sql.Literal(start), sql.Literal(size), sql.NULL)
            picked, deleted, upper, first = one_row(conn.execute(statement))
            if upper is not None and upper == first:
                statement = statements.tie_delete(spec, cutoff, sql.Literal(first), sql.Literal(size), sql.NULL)
                picked, deleted = one_row(conn.execute(statement))
        start = upper
        result.rows_deleted += deleted
        result.rows_skipped += picked - deleted
        result.batches += 1
        if on_batch:
            on_batch(deleted)
        if start is None or stop():
            return
        size = next_batch_size(spec, size, (time.monotonic() - began) * 1000)


def _delete_ranges(
    conn: psycopg.Connection,
    spec: PurgeSpec,
    at: Any,
    result: PurgeResult,
    stop: Callable[[], bool],
    on_batch: Callable[[int], None] | None,
    start: int,
) -> None:
    """The procedure's walk by TID range: from block ``start`` to the end of the table and round to
    ``start`` again, a range of pages a batch, sized toward target_batch_ms."""
    cutoff, batch = sql.Literal(at), sql.Literal(spec.batch_size)
    blocks, pages, max_pages = one_row(conn.execute(statements.tid_layout(spec, batch)))
    result.walk = "tid-ranges"
    start = start if 0 <= start < blocks else 0
    done = 0
    while done < blocks:
        began = time.monotonic()
        low = (start + done) % blocks
        high = min(low + pages, blocks if low >= start else start)
        with conn.transaction():
            statement = statements.range_delete(spec, cutoff, sql.Literal(low), sql.Literal(high), sql.NULL)
            picked, deleted = one_row(conn.execute(statement))
        done += high - low
        result.next_block = high % blocks
        result.rows_deleted += deleted
        result.rows_skipped += picked - deleted
        result.batches += 1
        if on_batch:
            on_batch(deleted)
        if done >= blocks or stop():
            return
        pages = next_range_pages(spec, pages, max_pages, (time.monotonic() - began) * 1000)


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
    concurrently = not one_row(
        conn.execute(
            sql.SQL("SELECT EXISTS (SELECT FROM pg_partitioned_table WHERE partrelid = {} AND partdefid <> 0)").format(
                statements.table_oid(spec)
            )
        )
    )[0]
    for partition in conn.execute(
        statements.partitions_before(spec, sql.Literal(at), expiry_type, rows=False)
    ).fetchall():
        oid, name = partition[0], partition[1]
        table = sql.SQL(name)  # regclass text: quoted and qualified by PostgreSQL itself
        bound = one_row(conn.execute("SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE oid = %s", (oid,)))[0]
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
    col = sql.Identifier(spec.column)
    rows, live = one_row(
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
    foreign = claim_relations(conn, spec, names, owned)
    if foreign:
        raise CleanupError(
            f"archive: job {spec.job_name!r}: in the way of its archive, and not created by Expiry for this job (no "
            f"marker {owned_marker(spec.job_name)!r}): {', '.join(foreign)}; nothing was deleted"
        )
    try:
        with conn.transaction():
            own_schema(conn, spec)
            create_archive(conn, spec, owned)
    except psycopg.errors.InsufficientPrivilege as error:
        raise CleanupError(f"archive: cannot create {spec.ident('_archive').as_string(conn)}: {error}") from error
