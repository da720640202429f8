"""PostgreSQL purge benchmark: 1,000,000 rows, 30 % expired, on a real PostgreSQL 15 with pg_cron.

Compares the maintenance guide's single `DELETE ... WHERE expires < now()` with PgCronCleanup's
batched procedure (5,000 rows a batch, a COMMIT after each) and with the same batches locking their
rows first (`FOR UPDATE SKIP LOCKED`, what the procedure did before), while a writer inserts and
updates live rows, one transaction each. Prints a Markdown table: rows deleted per second, WAL
written, the longest single transaction of the purge (sampled from pg_stat_activity every 10 ms) and
the writer's p50/p99 latency.
Figures, not a test: run `make benchmark`.

    venv/bin/python benchmarks/pg_purge_benchmark.py [--rows 1000000] [--expired-share 0.3]
"""

import argparse
import random
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import psycopg  # noqa: E402
from postgres import PostgresServer  # noqa: E402

from expiry.runtime.postgres.cleanup import Connector, PurgeSpec, provision  # noqa: E402

DATABASE = "bench"
# The procedure's batches as they were before: rows locked first, then deleted if still expired.
LOCKING_BATCHES = """DO $$
DECLARE deleted bigint;
BEGIN
  LOOP
    DELETE FROM sessions WHERE ctid = ANY (ARRAY(SELECT ctid FROM sessions WHERE expires_at < now()
      ORDER BY expires_at LIMIT {batch} FOR UPDATE SKIP LOCKED)) AND expires_at < now();
    GET DIAGNOSTICS deleted = ROW_COUNT;
    COMMIT;
    EXIT WHEN deleted < {batch};
  END LOOP;
END $$"""


def fill(server: PostgresServer, rows: int, expired_share: float) -> None:
    with server.connect(DATABASE) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS sessions (id bigserial PRIMARY KEY, owner text NOT NULL, "
            "payload text NOT NULL, expires_at timestamptz)"
        )
        conn.execute("TRUNCATE sessions RESTART IDENTITY")
        expired = int(rows * expired_share)
        conn.execute(
            "INSERT INTO sessions (owner, payload, expires_at) SELECT 'user-' || (g %% 1000), "
            "repeat(md5(g::text), 2), CASE WHEN g <= %s THEN now() - (g || ' seconds')::interval "
            "ELSE now() + interval '30 days' END FROM generate_series(1, %s) g",
            (expired, rows),
        )
        conn.execute("CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at)")
        conn.execute("VACUUM ANALYZE sessions")


class Writer(threading.Thread):
    """Inserts a live row and updates another, one transaction each, until stopped."""

    def __init__(self, server: PostgresServer, live_ids: tuple[int, int]) -> None:
        super().__init__(daemon=True)
        self.server, self.live_ids = server, live_ids
        self.latencies: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        rng = random.Random(7)
        with self.server.connect(DATABASE) as conn:
            while not self.stop.is_set():
                started = time.perf_counter()
                conn.execute(
                    "INSERT INTO sessions (owner, payload, expires_at) VALUES ('writer', 'x', now() + interval '1 day')"
                )
                conn.execute(
                    "UPDATE sessions SET expires_at = now() + interval '2 days' WHERE id = %s",
                    (rng.randint(*self.live_ids),),
                )
                self.latencies.append((time.perf_counter() - started) * 1000)


class LongestTransaction(threading.Thread):
    """Samples the age of the purge backend's current transaction."""

    def __init__(self, server: PostgresServer, application: str) -> None:
        super().__init__(daemon=True)
        self.server, self.application = server, application
        self.longest = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        with self.server.connect(DATABASE) as conn:
            while not self.stop.is_set():
                row = conn.execute(
                    "SELECT extract(epoch from max(clock_timestamp() - xact_start)) "
                    "FROM pg_stat_activity WHERE application_name = %s",
                    (self.application,),
                ).fetchone()
                if row[0] is not None:
                    self.longest = max(self.longest, float(row[0]))
                time.sleep(0.01)


def measure(server: PostgresServer, name: str, statement: str, rows: int, expired_share: float) -> dict:
    fill(server, rows, expired_share)
    expired = int(rows * expired_share)
    writer = Writer(server, (expired + 1, rows))
    sampler = LongestTransaction(server, "purge")
    dsn = server.dsn(DATABASE) + " application_name=purge"
    with psycopg.connect(dsn, autocommit=True) as conn:
        writer.start()
        sampler.start()
        time.sleep(0.5)  # the writer's latency before the purge is part of its sample too
        started = time.perf_counter()
        deleted_before = conn.execute("SELECT count(*) FROM sessions WHERE expires_at < now()").fetchone()[0]
        conn.execute("CHECKPOINT")  # every variant starts right after one: the same full-page images to write
        wal_before = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        conn.execute(statement)
        seconds = time.perf_counter() - started
        wal = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (wal_before,)).fetchone()[0]
        left = conn.execute("SELECT count(*) FROM sessions WHERE expires_at < now()").fetchone()[0]
        time.sleep(0.5)
    for thread in (writer, sampler):
        thread.stop.set()
        thread.join()
    latencies = sorted(writer.latencies)
    return {
        "variant": name,
        "deleted": deleted_before - left,
        "seconds": seconds,
        "rate": (deleted_before - left) / seconds,
        "wal_mb": float(wal) / 1e6,
        "longest": sampler.longest,
        "p50": statistics.median(latencies),
        "p99": latencies[int(len(latencies) * 0.99) - 1],
        "writes": len(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--expired-share", type=float, default=0.3)
    parser.add_argument("--batch-size", type=int, default=5000)
    args = parser.parse_args()
    server = PostgresServer(with_pg_cron=True, durable=True)
    try:
        server.create_database(DATABASE)
        fill(server, 10, 0.5)
        spec = PurgeSpec(
            job_name="purge-sessions",
            table="sessions",
            expiry_column="expires_at",
            batch_size=args.batch_size,
            max_runtime_seconds=3600,
            allow_mass_deletion=True,  # the benchmark's purge is the mass deletion it measures
        )
        provision(Connector(server.dsn(DATABASE), DATABASE), spec)
        results = [
            measure(
                server,
                "Single DELETE (the guide)",
                "DELETE FROM sessions WHERE expires_at < now()",
                args.rows,
                args.expired_share,
            ),
            measure(
                server,
                f"Batched procedure ({args.batch_size:,} a batch)",
                'CALL expiry."purge-sessions"()',
                args.rows,
                args.expired_share,
            ),
            measure(
                server,
                "Same batches with FOR UPDATE SKIP LOCKED",
                LOCKING_BATCHES.format(batch=args.batch_size),
                args.rows,
                args.expired_share,
            ),
        ]
    finally:
        server.stop()
    print(
        f"{args.rows:,} rows, {args.expired_share:.0%} expired, PostgreSQL 15 with its default durability "
        f"(fsync, synchronous_commit) on this machine (2 cores), one concurrent writer\n"
    )
    print(
        "| variant | rows deleted | seconds | rows/s | WAL (MB) | longest transaction (s) | writer p50 (ms) | "
        "writer p99 (ms) | writer transactions |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['variant']} | {r['deleted']:,} | {r['seconds']:.1f} | {r['rate']:,.0f} | {r['wal_mb']:,.0f} "
            f"| {r['longest']:.2f} "
            f"| {r['p50']:.2f} | {r['p99']:.2f} | {r['writes']:,} |"
        )


if __name__ == "__main__":
    main()
