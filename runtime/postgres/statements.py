"""The SQL statements of a cleanup, composed with psycopg.sql: its expired rows, a batch's delete, the
partitions it may drop, the breaker's plan, the archive's pruning, the status and runs views, the history job.
Identifiers are always composed, never formatted into strings: a name with quotes, semicolons or spaces is a
literal identifier, never code."""

from psycopg import sql

from expiry.runtime.postgres.spec import MODE_DROP_PARTITIONS, PurgeSpec


def database_now(kind: str) -> sql.SQL:
    return {
        "epoch": sql.SQL("extract(epoch from now())::bigint"),
        "timestamptz": sql.SQL("now()"),
        "timestamp": sql.SQL("(now() AT TIME ZONE 'UTC')"),
    }[kind]


def scope_condition(spec: PurgeSpec) -> sql.Composable:
    """The rows the cleanup is about: all, or those whose extra_column equals extra_value."""
    if spec.extra_column is None:
        return sql.SQL("TRUE")
    return sql.SQL("{} = {}").format(sql.Identifier(spec.extra_column), sql.Literal(spec.extra_value))


def expired_condition(spec: PurgeSpec, cutoff: sql.Composable) -> sql.Composed:
    """Rows in scope whose expiry is set and before ``cutoff`` (NULL never expires)."""
    return sql.SQL("{col} IS NOT NULL AND {col} < {cutoff} AND {scope}").format(
        col=spec.expiry, cutoff=cutoff, scope=scope_condition(spec)
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
    col = spec.expiry
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
    condition = sql.SQL("{} AND {} = {}").format(expired_condition(spec, cutoff), spec.expiry, key)
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


def index_exists(spec: PurgeSpec) -> sql.Composable:
    """Whether a btree index leads with the expiry column (what the ordered batches need); false for
    an expiry expression (its batches always walk the table by TID range)."""
    if spec.expiry_expression is not None:
        return sql.SQL("false")
    return sql.SQL(
        "EXISTS (SELECT 1 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
        "JOIN pg_am am ON am.oid = ic.relam JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = i.indkey[0] WHERE i.indrelid = {oid} AND a.attname = {col} AND am.amname = 'btree' "
        "AND i.indisvalid)"
    ).format(oid=table_oid(spec), col=sql.Literal(spec.column))


def tid_layout(spec: PurgeSpec, batch_size: sql.Composable) -> sql.Composed:
    """(blocks, pages of the first range, most pages of a range) for the walk by TID range: the blocks
    of the largest leaf (a TID range applies to each partition of a partitioned table), ranges sized
    so that the first holds about ``batch_size`` rows and none more than max_batch_size, from the rows
    per page the statistics give (50 when the table was never analyzed)."""
    return sql.SQL(
        "WITH leaves AS (SELECT c.relpages, c.reltuples, pg_relation_size(c.oid) AS bytes FROM pg_class c "
        "WHERE c.relkind = 'r' AND (c.oid = {oid} OR c.oid IN (SELECT relid FROM pg_partition_tree({oid}) "
        "WHERE isleaf))), "
        "per AS (SELECT coalesce(max(bytes), 0) / current_setting('block_size')::bigint AS blocks, "
        "greatest(1.0, coalesce(sum(reltuples) FILTER (WHERE relpages > 0 AND reltuples > 0) "
        "/ nullif(sum(relpages) FILTER (WHERE relpages > 0 AND reltuples > 0), 0), 50.0)) AS rows_per_page "
        "FROM leaves) "
        "SELECT blocks, greatest(1, ceil({batch} / rows_per_page))::bigint, "
        "greatest(1, ceil({batch} / rows_per_page), ceil({most} / rows_per_page))::bigint FROM per"
    ).format(oid=table_oid(spec), batch=batch_size, most=sql.Literal(spec.max_batch_size))


def range_delete(
    spec: PurgeSpec, cutoff: sql.Composable, low: sql.Composable, high: sql.Composable, run: sql.Composable
) -> sql.Composed:
    """One batch of the walk by TID range: the rows expired before ``cutoff`` in blocks ``low`` up to
    ``high`` (excluded), a TID Range Scan (PostgreSQL 14+) of those pages alone; returns (rows expired
    in the range, rows deleted). As batch_delete, no row locks are taken first: a row being renewed
    makes the DELETE wait, then PostgreSQL re-checks the condition on the renewed row, which no longer
    matches (counted as skipped)."""
    in_range = sql.SQL(
        "{target} WHERE ctid >= format('(%s,0)', {low})::tid AND ctid < format('(%s,0)', {high})::tid AND {condition}"
    ).format(target=spec.target, low=low, high=high, condition=expired_condition(spec, cutoff))
    return sql.SQL("WITH {effects}SELECT (SELECT count(*) FROM {in_range}), (SELECT count(*) FROM {counted})").format(
        in_range=in_range, **_effects(spec, sql.SQL("DELETE FROM {} ").format(in_range), run)
    )


def first_expired(spec: PurgeSpec, cutoff: sql.Composable) -> sql.Composed:
    """Where the first batch starts: the lowest expiry before ``cutoff`` (NULL: nothing to delete)."""
    return sql.SQL("SELECT min({col}) FROM {target} WHERE {condition}").format(
        col=spec.expiry, target=spec.target, condition=expired_condition(spec, cutoff)
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
        ).format(target=spec.target, col=spec.expiry, cutoff=cutoff)
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
        oid=table_oid(spec),
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
    ).format(target=spec.target, expired=expired, scope=scope_condition(spec), cap=cap, refusal=refusal)


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
    col, now = spec.expiry, database_now(kind)
    return sql.SQL("""SELECT
  count(*) FILTER (WHERE {col} IS NULL) AS permanent_rows,
  count(*) FILTER (WHERE {col} >= {now}) AS live_rows,
  count(*) FILTER (WHERE {col} < {now}) AS expired_rows,
  min({col}) FILTER (WHERE {col} < {now}) AS oldest_expired,
  coalesce({age}, 0)::bigint AS oldest_expired_age_seconds,
  pg_total_relation_size({oid}) AS table_bytes,
  pg_size_pretty(pg_total_relation_size({oid})) AS table_size
FROM {target} WHERE {scope}""").format(
        col=col,
        now=now,
        target=spec.target,
        oid=table_oid(spec),
        scope=scope_condition(spec),
        age=_oldest_age(spec, kind),
    )


def status_view(spec: PurgeSpec, kind: str, replace: bool) -> sql.Composed:
    """<job>_status: the status query as a view (the guide's attribute_cleanup_status)."""
    return sql.SQL("{} VIEW {} AS {}").format(
        create_or_replace(replace), spec.ident("_status"), status_query(spec, kind)
    )


def create_or_replace(replace: bool) -> sql.SQL:
    """CREATE OR REPLACE for an object this cleanup owns already, else CREATE: it fails if the name was taken
    since the ownership check, rather than replace what someone else made."""
    return sql.SQL("CREATE OR REPLACE" if replace else "CREATE")


def _oldest_age(spec: PurgeSpec, kind: str) -> sql.Composed:
    oldest = sql.SQL("min({col}) FILTER (WHERE {col} < {now})").format(col=spec.expiry, now=database_now(kind))
    if kind == "epoch":
        return sql.SQL("({} - {})").format(database_now(kind), oldest)
    return sql.SQL("extract(epoch from {} - {})").format(database_now(kind), oldest)


def table_oid(spec: PurgeSpec) -> sql.Composed:
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
        create=create_or_replace(replace), view=spec.ident("_runs"), job=sql.Literal(spec.job_name)
    )


def history_prune(days: int) -> sql.Composed:
    """The history job: delete cron.job_run_details rows that ended more than ``days`` ago, and failed
    runs pg_cron recorded without times (a connection that failed) followed by a run that started
    more than ``days`` ago (run ids grow with time)."""
    window = sql.SQL("now() - make_interval(days => {})").format(sql.Literal(days))
    return sql.SQL(
        "DELETE FROM cron.job_run_details WHERE end_time < {window} OR (start_time IS NULL AND end_time IS NULL "
        "AND status = 'failed' AND runid < (SELECT max(runid) FROM cron.job_run_details WHERE start_time < {window}))"
    ).format(window=window)
