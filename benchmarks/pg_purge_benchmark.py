"""PostgreSQL purge benchmark: 1,000,000 rows, 30 % expired, on a real PostgreSQL 15 with pg_cron.

Compares the maintenance guide's single `DELETE ... WHERE expires < now()` with the procedure as it
was (5,000-row batches, each re-walking the expiry index from its start and deleting by ctid) and
with PgCronCleanup's procedure now (each batch starts where the last one stopped and deletes by
expiry range; fixed 5,000-row batches, or batches sized toward a target duration), while a writer
renews expired rows (the race the purge must lose), one transaction each. Prints a Markdown table:
rows deleted per second and as a share of the single DELETE's, WAL written, batches and the
largest, the longest transaction of the purge (sampled from pg_stat_activity every 10 ms), the
renewals' latency (their lock waits: a renewal of a row the purge has deleted but not committed
waits for the commit) and renewed rows lost (must be 0). Each variant runs --repeat times on a
fresh table; the run of median duration is printed.
Then the same table without an expiry index (--suite no-index runs only these): the single DELETE,
the procedure before this version (the index walk's statements, which then read the whole table each
batch; runs capped at --before-runtime seconds) and the walk by TID range that replaces it.
Figures, not a test: run `make benchmark`.

    venv/bin/python benchmarks/pg_purge_benchmark.py [--rows 1000000] [--expired-share 0.3] [--suite no-index]
"""

import argparse
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import psycopg  # noqa: E402
from postgres import PostgresServer  # noqa: E402
from psycopg import sql  # noqa: E402

from expiry.runtime.postgres import procedure as procedure_module  # noqa: E402
from expiry.runtime.postgres.connection import Connector  # noqa: E402
from expiry.runtime.postgres.provision import provision  # noqa: E402
from expiry.runtime.postgres.spec import PurgeSpec  # noqa: E402
from expiry.runtime.postgres.statements import plan_counts  # noqa: E402

DATABASE = "bench"
# The procedure's batches before this version, after the same breaker plan: each batch walks the
# expiry index from its start and deletes by ctid.
REWALKING_BATCHES = """DO $$
DECLARE picked bigint; deleted bigint; cutoff timestamptz := now();
BEGIN
  PERFORM 1 FROM ({plan}) p;
  LOOP
    WITH p AS (SELECT ctid FROM sessions WHERE expires_at IS NOT NULL AND expires_at < cutoff
      ORDER BY expires_at LIMIT {batch}),
    gone AS (DELETE FROM sessions WHERE ctid = ANY (ARRAY(SELECT ctid FROM p)) AND expires_at IS NOT NULL
      AND expires_at < cutoff RETURNING 1)
    SELECT (SELECT count(*) FROM p), (SELECT count(*) FROM gone) INTO picked, deleted;
    INSERT INTO expiry.rewalk_batches VALUES ({batch});
    COMMIT;
    EXIT WHEN picked < {batch};
  END LOOP;
END $$"""


def fill(server: PostgresServer, rows: int, expired_share: float, index: bool = True) -> None:
    with server.connect(DATABASE) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS sessions (id bigserial PRIMARY KEY, owner text NOT NULL, "
            "payload text NOT NULL, expires_at timestamptz)"
        )
        conn.execute("TRUNCATE sessions RESTART IDENTITY")
        if not index:
            conn.execute("DROP INDEX IF EXISTS sessions_expires_at")
        expired = int(rows * expired_share)
        conn.execute(
            "INSERT INTO sessions (owner, payload, expires_at) SELECT 'user-' || (g %% 1000), "
            "repeat(md5(g::text), 2), CASE WHEN g <= %s THEN now() - ((%s - g) || ' seconds')::interval "
            "ELSE now() + interval '30 days' END FROM generate_series(1, %s) g",
            (expired, expired, rows),
        )
        if index:
            conn.execute("CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at)")
        conn.execute("VACUUM ANALYZE sessions")


class Renewer(threading.Thread):
    """Renews a random expired row, one transaction each, until stopped: the application's race
    with the purge. Latencies include the waits for the purge's row locks."""

    def __init__(self, server: PostgresServer, expired: int) -> None:
        super().__init__(daemon=True)
        self.server, self.expired = server, expired
        self.latencies: list[float] = []
        self.renewed: set[int] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        rng = random.Random(7)
        with psycopg.connect(self.server.dsn(DATABASE) + " application_name=renewer", autocommit=True) as conn:
            while not self.stop.is_set():
                row = rng.randint(1, self.expired)
                started = time.perf_counter()
                done = conn.execute(
                    "UPDATE sessions SET expires_at = now() + interval '1 day' WHERE id = %s RETURNING id", (row,)
                ).fetchone()
                self.latencies.append((time.perf_counter() - started) * 1000)
                if done:
                    self.renewed.add(row)


class LockWaits(threading.Thread):
    """Samples the renewer's backend every 2 ms: for each statement seen waiting for a lock (by its
    query_start), how long it was seen waiting."""

    def __init__(self, server: PostgresServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.waits: dict[Any, list[float]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        with self.server.connect(DATABASE) as conn:
            while not self.stop.is_set():
                row = conn.execute(
                    "SELECT query_start, clock_timestamp() FROM pg_stat_activity "
                    "WHERE application_name = 'renewer' AND wait_event_type = 'Lock'"
                ).fetchone()
                if row:
                    self.waits.setdefault(row[0], []).append(row[1].timestamp())
                time.sleep(0.002)

    def summary(self) -> tuple[int, float]:
        """(statements seen waiting, the longest wait in ms: first to last sample plus 2 ms)."""
        longest = max(((seen[-1] - seen[0]) * 1000 + 2 for seen in self.waits.values()), default=0.0)
        return len(self.waits), longest


class LongestTransaction(threading.Thread):
    """Samples the age of the purge backend's current transaction while ``measuring`` is set."""

    def __init__(self, server: PostgresServer, application: str) -> None:
        super().__init__(daemon=True)
        self.server, self.application = server, application
        self.longest = 0.0
        self.stop, self.measuring = threading.Event(), threading.Event()

    def run(self) -> None:
        with self.server.connect(DATABASE) as conn:
            while not self.stop.is_set():
                if not self.measuring.is_set():
                    time.sleep(0.001)
                    continue
                row = conn.execute(
                    "SELECT extract(epoch from max(clock_timestamp() - xact_start)) "
                    "FROM pg_stat_activity WHERE application_name = %s",
                    (self.application,),
                ).fetchone()
                if row and row[0] is not None:
                    self.longest = max(self.longest, float(row[0]))
                time.sleep(0.01)


def measure(
    server: PostgresServer,
    name: str,
    statement: str,
    batches_table: str | None,
    rows: int,
    expired_share: float,
    index: bool = True,
) -> dict[str, Any]:
    fill(server, rows, expired_share, index)
    expired = int(rows * expired_share)
    renewer = Renewer(server, expired)
    sampler, locks = LongestTransaction(server, "purge"), LockWaits(server)
    dsn = server.dsn(DATABASE) + " application_name=purge"
    with psycopg.connect(dsn, autocommit=True) as conn:
        renewer.start()
        sampler.start()
        locks.start()
        if batches_table:
            conn.execute(f"DELETE FROM {batches_table}")  # this run's batches only
            log = batches_table.removesuffix('_batches"') + '_log"'
            if log != batches_table:  # and no run to resume: the TID walk starts at block 0
                conn.execute(f"DELETE FROM {log}")
        time.sleep(0.5)  # the renewals before the purge are part of their sample too
        conn.execute("CHECKPOINT")  # every variant starts right after one: the same full-page images to write
        wal_before = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        before = conn.execute("SELECT count(*) FROM sessions").fetchone()[0]
        sampler.measuring.set()
        started = time.perf_counter()
        conn.execute(statement)
        seconds = time.perf_counter() - started
        sampler.measuring.clear()
        wal = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (wal_before,)).fetchone()[0]
        time.sleep(0.5)
        for thread in (renewer, sampler, locks):
            thread.stop.set()
            thread.join()
        deleted = before - conn.execute("SELECT count(*) FROM sessions").fetchone()[0]
        lost = conn.execute(
            "SELECT %s - count(*) FROM sessions WHERE id = ANY(%s)", (len(renewer.renewed), sorted(renewer.renewed))
        ).fetchone()[0]
        batches: Any = (0, 0)
        if batches_table:
            pages = ", NULL" if batches_table == "expiry.rewalk_batches" else ", max(pages)"
            batches = conn.execute(f"SELECT count(*), max(batch_rows){pages} FROM {batches_table}").fetchone()
    latencies = sorted(renewer.latencies)
    return {
        "variant": name,
        "deleted": deleted,
        "seconds": seconds,
        "rate": deleted / seconds,
        "wal_mb": float(wal) / 1e6,
        "batches": batches,
        "longest": sampler.longest,
        "p50": statistics.median(latencies),
        "p99": latencies[int(len(latencies) * 0.99) - 1],
        "max": latencies[-1],
        "lock_waits": locks.summary(),
        "renewals": len(latencies),
        "lost": lost,
    }


def procedures(server: PostgresServer, batch_size: int, targets: list[int]) -> list[tuple[str, str, str | None]]:
    """Provision one purge per batch sizing: (variant name, statement, its batch table)."""
    connector = Connector(server.dsn(DATABASE), DATABASE)
    variants: list[tuple[str, str, str | None]] = []
    for target in [0, *targets]:
        spec = PurgeSpec(
            job_name=f"purge-{target}",
            table="sessions",
            expiry_column="expires_at",
            batch_size=batch_size,
            target_batch_ms=target,
            max_runtime_seconds=3600,
            allow_mass_deletion=True,  # the benchmark's purge is the mass deletion it measures
        )
        provision(connector, spec)
        name = f"{batch_size:,} a batch" if not target else f"batches sized to {target} ms"
        variants.append((f"Procedure now, {name}", spec.command.as_string(None), f'expiry."purge-{target}_batches"'))
    return variants


def no_index_procedures(
    server: PostgresServer, batch_size: int, target: int, before_runtime: int
) -> list[tuple[str, str, str | None]]:
    """Without an expiry index: the procedure before this version (its index walk, forced: each batch
    then reads the table) with fixed and time-sized batches, runs capped at ``before_runtime`` seconds,
    and the walk by TID range with the same two sizings."""
    connector = Connector(server.dsn(DATABASE), DATABASE)
    variants: list[tuple[str, str, str | None]] = []
    for walk, sizing in (("before", 0), ("before", target), ("tid", 0), ("tid", target)):
        spec = PurgeSpec(
            job_name=f"noindex-{walk}-{sizing}",
            table="sessions",
            expiry_column="expires_at",
            batch_size=batch_size,
            target_batch_ms=sizing,
            max_runtime_seconds=before_runtime if walk == "before" else 3600,
            allow_mass_deletion=True,
        )
        provision(connector, spec)
        if walk == "before":
            index_exists = procedure_module.statements.index_exists
            procedure_module.statements.index_exists = lambda _spec: sql.SQL("true")  # type: ignore[assignment]
            try:
                body = procedure_module.procedure(spec, "timestamptz", "timestamp with time zone", True)
            finally:
                procedure_module.statements.index_exists = index_exists  # type: ignore[assignment]
            with server.connect(DATABASE) as conn:
                conn.execute(body)
        size = f"{batch_size:,} a batch" if not sizing else f"batches sized to {sizing} ms"
        name = (
            f"No index, procedure before, {size} (stops at {before_runtime} s)"
            if walk == "before"
            else f"No index, TID ranges, {size}"
        )
        variants.append((name, spec.command.as_string(None), f'expiry."{spec.job_name}_batches"'))
    return variants


def measure_partition_drop(server: PostgresServer, rows: int, expired_share: float) -> dict[str, Any]:
    """The same rows in a table partitioned by day on expires_at, purged by mode drop-partitions."""
    expired = int(rows * expired_share)
    with server.connect(DATABASE) as conn:
        conn.execute("DROP TABLE IF EXISTS sessions_by_day CASCADE")
        conn.execute(
            "CREATE TABLE sessions_by_day (id bigint NOT NULL, owner text NOT NULL, payload text NOT NULL, "
            "expires_at timestamptz NOT NULL, PRIMARY KEY (id, expires_at)) PARTITION BY RANGE (expires_at)"
        )
        for (statement,) in conn.execute(
            "SELECT format('CREATE TABLE %%I PARTITION OF sessions_by_day FOR VALUES FROM (%%L) TO (%%L)', "
            "'sessions_by_day_' || replace(d::text, '-', 'm'), date_trunc('day', now()) + d * interval '1 day', "
            "date_trunc('day', now()) + (d + 1) * interval '1 day') FROM generate_series(-(%s / 86400) - 1, 31) d",
            (expired,),
        ).fetchall():
            conn.execute(statement)
        conn.execute(
            "INSERT INTO sessions_by_day SELECT g, 'user-' || (g %% 1000), repeat(md5(g::text), 2), CASE WHEN g <= %s "
            "THEN now() - ((%s - g) || ' seconds')::interval ELSE now() + interval '30 days' END "
            "FROM generate_series(1, %s) g",
            (expired, expired, rows),
        )
        conn.execute("VACUUM ANALYZE sessions_by_day")
        spec = PurgeSpec(
            job_name="drop-days",
            table="sessions_by_day",
            expiry_column="expires_at",
            mode="drop-partitions",
            allow_mass_deletion=True,
        )
        provision(Connector(server.dsn(DATABASE), DATABASE), spec)
        before = conn.execute("SELECT count(*) FROM sessions_by_day").fetchone()[0]
        conn.execute("CHECKPOINT")
        wal_before = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        started = time.perf_counter()
        conn.execute(spec.command)
        seconds = time.perf_counter() - started
        wal = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (wal_before,)).fetchone()[0]
        deleted = before - conn.execute("SELECT count(*) FROM sessions_by_day").fetchone()[0]
        dropped = conn.execute('SELECT count(*) FROM expiry."drop-days_batches"').fetchone()[0]
        left = conn.execute("SELECT count(*) FROM sessions_by_day WHERE expires_at < now()").fetchone()[0]
    return {"deleted": deleted, "seconds": seconds, "wal_mb": float(wal) / 1e6, "dropped": dropped, "left": left}


def breaker_plan() -> str:
    """The breaker's plan as every variant of the procedure runs it (allowed: the benchmark deletes)."""
    spec = PurgeSpec(job_name="plan", table="sessions", expiry_column="expires_at", allow_mass_deletion=True)
    return plan_counts(spec, sql.SQL("cutoff"), "timestamp with time zone").as_string(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--expired-share", type=float, default=0.3)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each variant; the median is reported")
    parser.add_argument("--targets", type=int, nargs="*", default=[50, 250], help="target_batch_ms values")
    parser.add_argument("--suite", choices=("all", "index", "no-index"), default="all")
    parser.add_argument("--before-runtime", type=int, default=30, help="no index: the old procedure's runtime cap")
    args = parser.parse_args()
    server = PostgresServer(with_pg_cron=True, durable=True)
    try:
        server.create_database(DATABASE)
        fill(server, 10, 0.5)
        variants = [
            ("Single DELETE (the guide)", "DELETE FROM sessions WHERE expires_at < now()", None),
            (
                f"Procedure before, {args.batch_size:,} a batch, index re-walked",
                REWALKING_BATCHES.format(batch=args.batch_size, plan=breaker_plan()),
                "expiry.rewalk_batches",
            ),
            *procedures(server, args.batch_size, args.targets),
        ]
        unindexed = [
            ("No index, single DELETE", "DELETE FROM sessions WHERE expires_at < now()", None),
            *no_index_procedures(server, args.batch_size, args.targets[0] if args.targets else 50, args.before_runtime),
        ]
        with server.connect(DATABASE) as conn:
            conn.execute("CREATE TABLE expiry.rewalk_batches (batch_rows integer)")
        suites = {"all": [(variants, True), (unindexed, False)], "index": [(variants, True)]}
        dropping = measure_partition_drop(server, args.rows, args.expired_share) if args.suite != "no-index" else None
        tables = []
        for chosen, index in suites.get(args.suite, [(unindexed, False)]):
            results = []
            for variant in chosen:  # the run of median duration of each variant
                runs = sorted(
                    (measure(server, *variant, args.rows, args.expired_share, index) for _ in range(args.repeat)),
                    key=lambda r: r["seconds"],
                )
                results.append(runs[len(runs) // 2])
            tables.append(results)
    finally:
        server.stop()
    for results in tables:
        print_table(args, results)
    if dropping:
        print(
            f"\nThe same rows in a table partitioned by day on expires_at, `mode: drop-partitions` (no writer): "
            f"{dropping['dropped']} partitions dropped, {dropping['deleted']:,} rows in {dropping['seconds']:.2f} s "
            f"({dropping['deleted'] / dropping['seconds']:,.0f} rows/s), {dropping['wal_mb']:,.1f} MB of WAL; "
            f"{dropping['left']:,} expired rows left in the partition around now."
        )


def print_table(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    """One Markdown table; shares are of the first variant's rate (the single DELETE)."""
    single = results[0]["rate"]
    load = os.getloadavg()[0]
    print(
        f"{args.rows:,} rows, {args.expired_share:.0%} expired, PostgreSQL 15 with its default durability "
        f"(fsync, synchronous_commit), {os.cpu_count()} cores, load average {load:.2f} at the end; "
        f"one concurrent writer renewing expired rows; median of {args.repeat} runs\n"
    )
    print(
        "| variant | rows deleted | seconds | rows/s | share of one DELETE | WAL (MB) | batches (largest) | "
        "longest transaction (s) | renewal p50 / p99 / max (ms) | renewals | renewals seen waiting for a lock, "
        "longest wait (ms) | renewed rows lost |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        count, largest, pages = (*r["batches"], None)[:3]
        batches = f"{count:,} ({largest:,})" if count and largest else "1"
        if count and pages:
            batches = f"{count:,} ({pages:,} pages)"
        print(
            f"| {r['variant']} | {r['deleted']:,} | {r['seconds']:.2f} | {r['rate']:,.0f} | {r['rate'] / single:.2f} "
            f"| {r['wal_mb']:,.0f} | {batches} | {r['longest']:.2f} "
            f"| {r['p50']:.2f} / {r['p99']:.2f} / {r['max']:.0f} | {r['renewals']:,} "
            f"| {r['lock_waits'][0]:,}, {r['lock_waits'][1]:.0f} | {r['lost']} |"
        )
    print()


if __name__ == "__main__":
    main()
