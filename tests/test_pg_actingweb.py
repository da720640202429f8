"""Acceptance: PgCronCleanup's purge on ActingWeb's own PostgreSQL table, as its initial Alembic
migration creates it and as its code writes it (TTL + 3600 s clock-skew buffer, reads treat
ttl_timestamp <= now as absent, renewals by upsert), provisioned and run by a non-superuser role."""

import itertools
import threading
import time

import psycopg
from postgres import create_purge_role

from expiry.runtime.postgres.connection import Connector
from expiry.runtime.postgres.provision import provision, unprovision
from expiry.runtime.postgres.purge import plan
from expiry.runtime.postgres.spec import PurgeSpec

CLOCK_SKEW_BUFFER = 3600  # ActingWeb adds this to every ttl_timestamp it writes
DDL = [
    """CREATE TABLE attributes (
        id varchar(255) NOT NULL,
        bucket_name varchar(255) NOT NULL,
        bucket varchar(255) NOT NULL,
        name varchar(255) NOT NULL,
        data jsonb,
        timestamp timestamp,
        ttl_timestamp bigint,
        PRIMARY KEY (id, bucket_name))""",
    "CREATE INDEX idx_attributes_ttl ON attributes (ttl_timestamp) WHERE ttl_timestamp IS NOT NULL",
]
UPSERT = """INSERT INTO attributes (id, bucket_name, bucket, name, data, timestamp, ttl_timestamp)
VALUES (%(id)s, %(bucket_name)s, %(bucket)s, %(name)s, %(data)s, now() AT TIME ZONE 'UTC',
        extract(epoch from now())::bigint + %(ttl)s + 3600)
ON CONFLICT (id, bucket_name) DO UPDATE SET data = EXCLUDED.data, timestamp = EXCLUDED.timestamp,
  ttl_timestamp = EXCLUDED.ttl_timestamp"""
VISIBLE = (
    "SELECT id, bucket_name FROM attributes WHERE ttl_timestamp IS NULL OR ttl_timestamp > extract(epoch from now())"
)
ROLES = itertools.count()


def write(conn, actor: str, bucket: str, name: str, ttl: int | None) -> None:
    """One attribute as ActingWeb stores it: ttl None is permanent, else TTL seconds from now
    (negative: a token that ran out that long ago) plus the clock-skew buffer."""
    bucket_name = f"{bucket}:{name}"
    conn.execute(
        "INSERT INTO attributes VALUES (%s, %s, %s, %s, %s, now() AT TIME ZONE 'UTC', "
        "CASE WHEN %s::bigint IS NULL THEN NULL ELSE extract(epoch from now())::bigint + %s + %s END)",
        (actor, bucket_name, bucket, name, psycopg.types.json.Jsonb({"v": name}), ttl, ttl, CLOCK_SKEW_BUFFER),
    )


def world(conn) -> dict[str, set[tuple[str, str]]]:
    """Actors with permanent properties, live tokens, tokens that ran out within the buffer (still
    read as present) and tokens long gone (read as absent)."""
    kinds: dict[str, set[tuple[str, str]]] = {"permanent": set(), "live": set(), "in_buffer": set(), "gone": set()}
    for a in range(12):
        actor = f"actor-{a:02d}"
        for p in range(4):
            write(conn, actor, "properties", f"p{p}", None)
            kinds["permanent"].add((actor, f"properties:p{p}"))
        for t in range(3):
            write(conn, actor, "mcp_tokens", f"live{t}", 3600)
            kinds["live"].add((actor, f"mcp_tokens:live{t}"))
        write(conn, actor, "mcp_auth_codes", "recent", -1800)  # ran out 30 min ago: inside the buffer
        kinds["in_buffer"].add((actor, "mcp_auth_codes:recent"))
        for t in range(2):
            write(
                conn, actor, "mcp_refresh_tokens", f"old{t}", -(86400 + 1000 * t + 10 * a)
            )  # oldest: old1 of actor-11
            kinds["gone"].add((actor, f"mcp_refresh_tokens:old{t}"))
    return kinds


def rows(conn, query: str = "SELECT id, bucket_name FROM attributes") -> set[tuple[str, str]]:
    return {tuple(r) for r in conn.execute(query).fetchall()}


def blocked(conn, application: str) -> None:
    deadline = time.monotonic() + 30
    while not conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
        (application,),
    ).fetchone()[0]:
        assert time.monotonic() < deadline, f"{application} never waited for the upsert's row lock"
        time.sleep(0.05)


def test_purge_on_actingweb_table_keeps_what_actingweb_reads_and_every_renewal(postgres):
    database = postgres.new_database("actingweb")
    with postgres.connect(database) as conn:
        for statement in DDL:
            conn.execute(statement)
        kinds = world(conn)
        visible_before = rows(conn, VISIBLE)
    role = f"actingweb_purge_{next(ROLES)}"
    dsn = create_purge_role(postgres, role, database)
    spec = PurgeSpec(
        job_name="actingweb-ttl-cleanup", table="attributes", expiry_column="ttl_timestamp", schema=role, batch_size=5
    )
    state = provision(Connector(dsn, database), spec)
    assert state["expiry_column_indexed"] is True  # ActingWeb's partial index serves the batches
    with psycopg.connect(dsn, autocommit=True) as app:
        dry = plan(app, spec, sample_size=100)
        assert dry.key_columns == ["id", "bucket_name"] and dry.refused is None
        assert {(k["id"], k["bucket_name"]) for k in dry.sample_keys} == kinds["gone"]

        # ActingWeb renews two expired refresh tokens by upsert: the oldest (the purge's first batch
        # reaches it while the renewal is still open), and the newest (renewed and committed while the
        # purge waits, before any batch reached it).
        held = postgres.connect(database, autocommit=False)  # ActingWeb's own role writes
        held.execute(
            UPSERT,
            {
                "id": "actor-11",
                "bucket_name": "mcp_refresh_tokens:old1",
                "bucket": "mcp_refresh_tokens",
                "name": "old1",
                "data": "{}",
                "ttl": 3600,
            },
        )
        purge = threading.Thread(
            target=lambda: psycopg.connect(dsn + " application_name=purge", autocommit=True).execute(spec.command),
            daemon=True,
        )
        purge.start()
        blocked(app, "purge")
        with postgres.connect(database) as writer:
            writer.execute(
                UPSERT,
                {
                    "id": "actor-00",
                    "bucket_name": "mcp_refresh_tokens:old0",
                    "bucket": "mcp_refresh_tokens",
                    "name": "old0",
                    "data": "{}",
                    "ttl": 3600,
                },
            )
        held.commit()
        held.close()
        purge.join(60)
        renewed = {("actor-11", "mcp_refresh_tokens:old1"), ("actor-00", "mcp_refresh_tokens:old0")}
        left = rows(app)
        assert renewed <= left  # both renewals survive
        assert left == kinds["permanent"] | kinds["live"] | kinds["in_buffer"] | renewed  # NULL never deleted
        assert rows(app, VISIBLE) == visible_before | renewed  # the purge removed only what ActingWeb reads as absent
        run = app.execute(
            "SELECT rows_deleted, rows_skipped, refused, finished_at IS NOT NULL FROM "
            + f'"{role}"."actingweb-ttl-cleanup_log"'
        ).fetchone()
        assert run[2] is None and run[3] is True
        assert run[:2] == (22, 1)  # counts of effects: 22 deleted; the open renewal was reached and skipped
    unprovision(Connector(dsn, database), spec)
