"""The cleanup's PL/pgSQL procedure, which pg_cron calls: the purge of purge.py inside the database."""

from psycopg import sql

from expiry.runtime.postgres import statements  # builders by module: one place to substitute a statement
from expiry.runtime.postgres.spec import MAX_GROWTH, MIN_BATCH_SIZE, MODE_DROP_PARTITIONS, PurgeSpec

CUTOFF_TYPES = {"epoch": "bigint", "timestamptz": "timestamptz", "timestamp": "timestamp"}


def _next_batch_size_sql(spec: PurgeSpec) -> sql.Composable:
    """purge.next_batch_size in PL/pgSQL, from v_size and v_ms."""
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


def _next_range_pages_sql(spec: PurgeSpec) -> sql.Composable:
    """purge.next_range_pages in PL/pgSQL, from v_pages, v_max_pages and v_ms."""
    if not spec.target_batch_ms:
        return sql.SQL("v_pages")
    return sql.SQL(
        "greatest(1, least(v_max_pages, floor(v_pages * least({growth}, {target} / greatest(v_ms, 1.0)))))::bigint"
    ).format(growth=sql.Literal(float(MAX_GROWTH)), target=sql.Literal(float(spec.target_batch_ms)))


def _range_walk(spec: PurgeSpec) -> sql.Composed:
    """The batches without an expiry index: one pass over the table by TID range, each range its own
    transaction, from the block where the last run stopped (its log's next_block, written with each
    batch, so a run stopped early or killed is resumed) round to it again."""
    return sql.SQL("""
    {layout} INTO v_blocks, v_pages, v_max_pages;
    SELECT next_block INTO v_start FROM {log} WHERE run_id < v_run AND next_block IS NOT NULL
      ORDER BY run_id DESC LIMIT 1;
    v_start := coalesce(v_start, 0);
    IF v_start >= v_blocks THEN
      v_start := 0;
    END IF;
    v_done := 0;
    WHILE v_done < v_blocks LOOP
      v_at := clock_timestamp();
      v_low := (v_start + v_done) % v_blocks;
      v_high := least(v_low + v_pages, CASE WHEN v_low >= v_start THEN v_blocks ELSE v_start END);
      {delete} INTO v_picked, v_deleted;
      v_done := v_done + (v_high - v_low);
      v_batch := v_batch + 1;
      INSERT INTO {batches} (run_id, batch, rows_deleted, rows_skipped, first_block, pages, duration_ms)
        VALUES (v_run, v_batch, v_deleted, v_picked - v_deleted, v_low, v_high - v_low,
          1000 * extract(epoch from clock_timestamp() - v_at));
      UPDATE {log} SET next_block = v_high % v_blocks WHERE run_id = v_run;
      COMMIT;
      v_ms := 1000 * extract(epoch from clock_timestamp() - v_at);
      v_total := v_total + v_deleted;
      v_skipped := v_skipped + v_picked - v_deleted;
      EXIT WHEN v_done >= v_blocks;
      IF clock_timestamp() - v_started > make_interval(secs => max_runtime_seconds) THEN
        v_out_of_time := true;
        EXIT;
      END IF;
      v_pages := {next_pages};
    END LOOP;""").format(
        layout=statements.tid_layout(spec, sql.SQL("batch_size")),
        log=spec.ident("_log"),
        delete=statements.range_delete(
            spec, sql.SQL("v_cutoff"), sql.SQL("v_low"), sql.SQL("v_high"), sql.SQL("v_run")
        ),
        batches=spec.ident("_batches"),
        next_pages=_next_range_pages_sql(spec),
    )


def procedure(spec: PurgeSpec, kind: str, column_type: str, replace: bool) -> sql.Composed:
    """CREATE (``replace``: OR REPLACE) PROCEDURE <schema>.<job>: one run under an advisory lock (runs never
    overlap). The run's cutoff is fixed at its start; the breaker decides on the plan; then batches
    (or dropped partitions), each committed together with its row in <job>_batches, until nothing
    expired before the cutoff is left or the runtime is spent. Whether the batches walk the expiry
    index or the table by TID range (no such index, or an expiry expression) is decided at each run,
    so an index created later is used without provisioning again. <job>_log holds one row per run,
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
  v_from {column};
  v_upper {column};
  v_first {column};
  v_blocks bigint;
  v_pages bigint;
  v_max_pages bigint;
  v_start bigint;
  v_done bigint;
  v_low bigint;
  v_high bigint;
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
            partitions=statements.partitions_before(spec, sql.SQL("v_cutoff"), column_type, rows=False),
            target=sql.Literal(spec.target.as_string(None)),
            col=sql.Literal(spec.column),
            batches=spec.ident("_batches"),
        )
    else:
        work = sql.SQL("""
  IF NOT {indexed} THEN{walk}
  ELSE
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
  END LOOP;
  END IF;""").format(
            indexed=statements.index_exists(spec),
            walk=_range_walk(spec),
            first=statements.first_expired(spec, sql.SQL("v_cutoff")),
            delete=statements.batch_delete(
                spec, sql.SQL("v_cutoff"), sql.SQL("v_from"), sql.SQL("v_size"), sql.SQL("v_run")
            ),
            ties=statements.tie_delete(
                spec, sql.SQL("v_cutoff"), sql.SQL("v_first"), sql.SQL("v_size"), sql.SQL("v_run")
            ),
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
  END LOOP;""").format(prune=statements.archive_prune(spec, sql.SQL("batch_size")))
    text = body.format(
        cutoff_type=sql.SQL(CUTOFF_TYPES[kind]),
        now=statements.database_now(kind),
        column=sql.SQL(column_type),  # format_type's text: a type name quoted by PostgreSQL itself
        lock=spec.lock_key,
        job=sql.Literal(spec.job_name),
        plan=statements.plan_counts(spec, sql.SQL("v_cutoff"), column_type),
        work=work,
        prune=prune,
        log=spec.ident("_log"),
        history_days=sql.Literal(spec.history_days),
    )
    return sql.SQL(
        "{create} PROCEDURE {name}(batch_size integer DEFAULT {batch}, "
        "max_runtime_seconds integer DEFAULT {runtime}) LANGUAGE plpgsql AS {body}"
    ).format(
        create=statements.create_or_replace(replace),
        name=spec.ident(),
        batch=sql.Literal(spec.batch_size),
        runtime=sql.Literal(spec.max_runtime_seconds),
        body=sql.Literal(text.as_string(None)),
    )
