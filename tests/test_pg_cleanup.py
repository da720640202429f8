"""runtime/pg_cleanup.py on a real PostgreSQL 15 with pg_cron: provisioning, the batched purge for
each kind of expiry column, renewals, limits, injection attempts, pg_cron itself and the views."""

import threading
import time

import psycopg
import pytest
from psycopg import sql

from runtime.pg_cleanup import CleanupError, Connector, PurgeSpec, provision, purge, status, unprovision

EXPIRY_TYPES = {
    "bigint": ("now() - interval '1 hour'", "now() + interval '1 hour'", "extract(epoch from {})::bigint"),
    "integer": ("now() - interval '1 hour'", "now() + interval '1 hour'", "extract(epoch from {})::integer"),
    "timestamptz": ("now() - interval '1 hour'", "now() + interval '1 hour'", "{}"),
    "timestamp": ("now() - interval '1 hour'", "now() + interval '1 hour'", "(({}) AT TIME ZONE 'UTC')"),
}


@pytest.fixture
def database(postgres):
    """A fresh database of its own for each test."""
    name = postgres.new_database("app")
    return name


def connector(postgres, database: str) -> Connector:
    return Connector(postgres.dsn(database), database)


def make_table(conn, column_type: str, expired: int, live: int, permanent: int, name: str = "attributes") -> None:
    past, future, cast = EXPIRY_TYPES[column_type]
    conn.execute(
        f"CREATE TABLE \"{name}\" (id serial PRIMARY KEY, kind text NOT NULL DEFAULT 'a', ttl_timestamp {column_type})"
    )
    conn.execute(
        f'INSERT INTO "{name}" (ttl_timestamp) SELECT {cast.format(past)} FROM generate_series(1, %s)', (expired,)
    )
    conn.execute(
        f'INSERT INTO "{name}" (ttl_timestamp) SELECT {cast.format(future)} FROM generate_series(1, %s)', (live,)
    )
    conn.execute(f'INSERT INTO "{name}" (ttl_timestamp) SELECT NULL FROM generate_series(1, %s)', (permanent,))


def spec(**overrides) -> PurgeSpec:
    return PurgeSpec(
        **{
            "job_name": "purge-attributes",
            "table": "attributes",
            "expiry_column": "ttl_timestamp",
            "batch_size": 7,
            **overrides,
        }
    )


def count(conn, where: str = "TRUE", table: str = "attributes") -> int:
    return conn.execute(f'SELECT count(*) FROM "{table}" WHERE {where}').fetchone()[0]


@pytest.mark.parametrize("column_type", list(EXPIRY_TYPES))
def test_procedure_deletes_only_expired_rows_for_each_column_type(postgres, database, column_type):
    with postgres.connect(database) as conn:
        make_table(conn, column_type, expired=50, live=20, permanent=5)
        state = provision(connector(postgres, database), spec())
        assert state["column_kind"] == {"bigint": "epoch", "integer": "epoch"}.get(column_type, column_type)
        conn.execute('CALL expiry."purge-attributes"()')
        assert count(conn) == 25
        assert count(conn, "ttl_timestamp IS NULL") == 5  # NULL never expires
        log = conn.execute('SELECT rows_deleted, batches, out_of_time FROM expiry."purge-attributes_log"').fetchall()
        assert log == [(50, 8, False)]  # 7 full batches of 7, then one of 1: a commit after each


def test_extra_condition_limits_the_purge(postgres, database):
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=10, live=0, permanent=0)
        conn.execute("UPDATE attributes SET kind = 'b' WHERE id <= 4")
        provision(connector(postgres, database), spec(extra_column="kind", extra_value="b"))
        conn.execute('CALL expiry."purge-attributes"()')
        assert count(conn) == 6 and count(conn, "kind = 'b'") == 0


def test_status_view_numbers(postgres, database):
    with postgres.connect(database) as conn:
        make_table(conn, "timestamptz", expired=12, live=8, permanent=3)
        provision(connector(postgres, database), spec())
        row = status(conn, spec())
        assert (row["permanent_rows"], row["live_rows"], row["expired_rows"]) == (3, 8, 12)
        assert row["table_bytes"] > 0 and row["table_size"].endswith(("kB", "bytes", "MB"))
        assert row["oldest_expired"] is not None


def test_row_renewed_while_the_purge_runs_is_kept(postgres, database):
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=30, live=0, permanent=0)
        provision(connector(postgres, database), spec())
    renewer = postgres.connect(database, autocommit=False)
    # The application renews row 5 and has not committed yet when the purge runs: the purge skips the
    # locked row instead of waiting; after the commit the row is live.
    renewer.execute("UPDATE attributes SET ttl_timestamp = extract(epoch from now())::bigint + 3600 WHERE id = 5")
    with postgres.connect(database) as conn:
        conn.execute("SET lock_timeout = '5s'")  # waiting on the renewal would fail the test, not hang it
        conn.execute('CALL expiry."purge-attributes"()')
        renewer.commit()
        assert [r[0] for r in conn.execute("SELECT id FROM attributes").fetchall()] == [5]
    renewer.close()


def test_client_purge_rechecks_expiry_when_it_deletes(postgres, database):
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=20, live=0, permanent=0)
        provision(connector(postgres, database), spec())
    renewed = threading.Event()

    def renew_after_first_batch(deleted: int) -> None:
        if not renewed.is_set():
            with postgres.connect(database) as other:
                other.execute(
                    "UPDATE attributes SET ttl_timestamp = extract(epoch from now())::bigint + 60 "
                    "WHERE id = (SELECT max(id) FROM attributes)"
                )
            renewed.set()

    with postgres.connect(database) as conn:
        result = purge(conn, spec(batch_size=5), on_batch=renew_after_first_batch)
        assert result.rows_deleted == 19 and count(conn) == 1


def test_runtime_limit_stops_the_procedure(postgres, database):
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=400, live=0, permanent=0)
        conn.execute(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN PERFORM pg_sleep(0.01); RETURN OLD; END$$"
        )
        conn.execute("CREATE TRIGGER slow BEFORE DELETE ON attributes FOR EACH ROW EXECUTE FUNCTION slow()")
        provision(connector(postgres, database), spec(batch_size=10, max_runtime_seconds=1))
        conn.execute('CALL expiry."purge-attributes"()')
        rows, batches, out_of_time = conn.execute(
            'SELECT rows_deleted, batches, out_of_time FROM expiry."purge-attributes_log"'
        ).fetchone()
        assert out_of_time is True
        assert rows == batches * 10 and 0 < rows < 400 and count(conn) == 400 - rows


def test_client_purge_batches_and_limits(postgres, database):
    with postgres.connect(database) as conn:
        make_table(conn, "timestamp", expired=23, live=2, permanent=1)
        sizes: list[int] = []
        result = purge(conn, spec(batch_size=10), on_batch=sizes.append)
        assert sizes == [10, 10, 3] and result.rows_deleted == 23 and count(conn) == 3
        make_table(conn, "bigint", expired=30, live=0, permanent=0, name="more")
        stopped = purge(conn, spec(table="more", batch_size=10), should_stop=lambda: True)
        assert stopped.stopped_early and stopped.rows_deleted == 10 and count(conn, table="more") == 20


INJECTIONS = ['attr"; DROP TABLE victims; --', "it's", "with space", "semi;colon", 'quo"te']


@pytest.mark.parametrize("name", INJECTIONS)
def test_identifiers_are_literal_names_never_code(postgres, database, name):
    with postgres.connect(database) as conn:
        conn.execute("CREATE TABLE victims (id int)")
        conn.execute(
            sql.SQL("CREATE TABLE {} (id serial, {} bigint)").format(sql.Identifier(name), sql.Identifier(name))
        )
        conn.execute(
            sql.SQL("INSERT INTO {} ({}) VALUES (1), (NULL), (extract(epoch from now())::bigint + 99)").format(
                sql.Identifier(name), sql.Identifier(name)
            )
        )
        weird = PurgeSpec(job_name=name, table=name, expiry_column=name, schema=name, extra_column=None)
        provision(connector(postgres, database), weird)
        conn.execute(sql.SQL("CALL {}()").format(sql.Identifier(name, name)))
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))).fetchone()[0] == 2
        assert conn.execute("SELECT to_regclass('victims') IS NOT NULL").fetchone()[0]
    with postgres.connect() as cron:
        command = cron.execute("SELECT command FROM cron.job WHERE jobname = %s", (name,)).fetchone()[0]
        assert command == sql.SQL("CALL {}()").format(sql.Identifier(name, name)).as_string(cron)
    unprovision(connector(postgres, database), weird)


def test_bad_specs_are_refused():
    with pytest.raises(CleanupError, match="schedule: pg_cron needs 5 fields"):
        spec(schedule="0 0 3 * * *")
    with pytest.raises(CleanupError, match="schedule: cron hour field '24': 24 is outside 0..23"):
        spec(schedule="0 24 * * *")
    with pytest.raises(CleanupError, match="schedule: cron minute field 'x'"):
        spec(schedule="x * * * *")
    with pytest.raises(CleanupError, match="batch_size: must be an integer in 1..1000000"):
        spec(batch_size=0)
    with pytest.raises(CleanupError, match="job_name: at most 48 bytes"):
        spec(job_name="j" * 49)
    with pytest.raises(CleanupError, match="extra_column: extra_column and extra_value go together"):
        spec(extra_column="kind")
    with pytest.raises(CleanupError, match="table: must be a name"):
        spec(table="a\x00b")


def test_missing_column_and_wrong_type_are_reported(postgres, database):
    with postgres.connect(database) as conn:
        conn.execute("CREATE TABLE attributes (id int, ttl_timestamp text)")
    with pytest.raises(CleanupError, match="expiry_column: 'ttl_timestamp' is text"):
        provision(connector(postgres, database), spec())
    with pytest.raises(CleanupError, match="expiry_column: no column 'expires' in table public.attributes"):
        provision(connector(postgres, database), spec(expiry_column="expires"))


def test_without_pg_cron_the_error_names_shared_preload_libraries(postgres_without_cron):
    with postgres_without_cron.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS attributes (id int, ttl_timestamp bigint)")
    with pytest.raises(CleanupError, match="pg_cron is not loaded: add pg_cron to shared_preload_libraries"):
        provision(Connector(postgres_without_cron.dsn(), "postgres"), spec())
    with postgres_without_cron.connect() as conn:
        assert conn.execute("SELECT to_regnamespace('expiry') IS NULL").fetchone()[0]  # nothing created


def test_update_in_place_and_unprovision_leave_the_table_alone(postgres, database):
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=3, live=3, permanent=1)
    first = provision(connector(postgres, database), spec(create_index=True))
    assert first["created_index"] and first["expiry_column_indexed"] and first["created_schema"]
    second = provision(connector(postgres, database), spec(schedule="30 4 * * *", batch_size=99))
    assert second["job_id"] == first["job_id"]  # updated in place, not a new job
    with postgres.connect() as cron:
        assert cron.execute(
            "SELECT schedule, database FROM cron.job WHERE jobname = 'purge-attributes'"
        ).fetchone() == ("30 4 * * *", database)
    with postgres.connect(database) as conn:
        default = conn.execute("SELECT pg_get_function_arguments('expiry.\"purge-attributes\"'::regproc)").fetchone()
        assert "DEFAULT 99" in default[0]
    unprovision(connector(postgres, database), spec())
    with postgres.connect(database) as conn:
        assert count(conn) == 7  # every row still there, expired ones included
        assert conn.execute("SELECT to_regnamespace('expiry') IS NULL").fetchone()[0]
        assert conn.execute("SELECT to_regclass('purge-attributes_expiry_idx') IS NULL").fetchone()[0]
    with postgres.connect() as cron:
        assert cron.execute("SELECT count(*) FROM cron.job WHERE jobname LIKE 'purge-attributes%'").fetchone()[0] == 0


def test_missing_index_is_reported(postgres, database):
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=1, live=1, permanent=0)
    state = provision(connector(postgres, database), spec())
    assert state["expiry_column_indexed"] is False and state["created_index"] is False
    unprovision(connector(postgres, database), spec())


def test_run_history_retention_job(postgres, database):
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=1, live=0, permanent=0)
    state = provision(connector(postgres, database), spec(history_days=7))
    with postgres.connect() as cron:
        cron.execute(
            "INSERT INTO cron.job_run_details (jobid, runid, job_pid, database, username, command, status, "
            "return_message, start_time, end_time) VALUES "
            "(%s, nextval('cron.runid_seq'), 1, 'x', 'postgres', 'old', 'succeeded', '', now() - interval '9 days', "
            "now() - interval '9 days'), (%s, nextval('cron.runid_seq'), 1, 'x', 'postgres', 'new', 'succeeded', '', "
            "now() - interval '1 day', now() - interval '1 day')",
            (state["job_id"], state["job_id"]),
        )
        command = cron.execute("SELECT command FROM cron.job WHERE jobid = %s", (state["history_job_id"],)).fetchone()[
            0
        ]
        cron.execute(command)
        left = cron.execute("SELECT command FROM cron.job_run_details WHERE jobid = %s", (state["job_id"],)).fetchall()
        assert left == [("new",)]
    unprovision(connector(postgres, database), spec())


def test_the_job_really_runs_from_pg_cron(postgres, database):
    """Waits for one pg_cron tick (at most about 70 s)."""
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=40, live=2, permanent=1)
    state = provision(connector(postgres, database), spec(schedule="* * * * *"))
    deadline = time.monotonic() + 75
    with postgres.connect() as cron:
        while time.monotonic() < deadline:
            row = cron.execute(
                "SELECT status, return_message FROM cron.job_run_details WHERE jobid = %s AND status <> 'running' "
                "ORDER BY start_time DESC LIMIT 1",
                (state["job_id"],),
            ).fetchone()
            if row:
                break
            time.sleep(1)
        assert row is not None, "pg_cron did not run the job within 75 s"
        assert row[0] == "succeeded", row
        runs = cron.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("expiry", "purge-attributes_runs"))
        ).fetchone()[0]
        assert runs >= 1
    with postgres.connect(database) as conn:
        assert count(conn) == 3
    unprovision(connector(postgres, database), spec())


def test_schedule_in_another_database_than_pg_cron(postgres, database):
    """pg_cron lives in `postgres`; the table in its own database: cron.schedule_in_database."""
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=1, live=0, permanent=0)
    state = provision(connector(postgres, database), spec())
    with postgres.connect() as cron:
        assert cron.execute("SELECT database FROM cron.job WHERE jobid = %s", (state["job_id"],)).fetchone() == (
            database,
        )
    assert state["cron_database"] == "postgres"
    unprovision(connector(postgres, database), spec())
    with psycopg.connect(postgres.dsn(database)) as conn:
        assert conn.execute("SELECT count(*) FROM attributes").fetchone()[0] == 1


def test_a_schema_the_cleanup_did_not_create_is_kept(postgres, database):
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=1, live=0, permanent=0)
        conn.execute("CREATE SCHEMA expiry")
    state = provision(connector(postgres, database), spec(schema="expiry"))
    assert state["created_schema"] is False
    unprovision(connector(postgres, database), spec(schema="expiry"))
    with postgres.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'expiry'").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname = 'purge-attributes'").fetchone()[0] == 0


def test_client_purge_skips_a_row_being_renewed(postgres, database):
    """The Lambda and CLI purge: a row the application is renewing (locked, not yet committed) is
    skipped, not waited for, and survives once the renewal commits."""
    with postgres.connect(database) as conn:
        make_table(conn, "timestamptz", expired=12, live=0, permanent=0)
    renewer = postgres.connect(database, autocommit=False)
    renewer.execute("UPDATE attributes SET ttl_timestamp = now() + interval '1 day' WHERE id = 3")
    with postgres.connect(database) as conn:
        conn.execute("SET lock_timeout = '5s'")  # waiting on the renewal would fail the test, not hang it
        result = purge(conn, spec(batch_size=5))
        renewer.commit()
        assert result.rows_deleted == 11
        assert [r[0] for r in conn.execute("SELECT id FROM attributes").fetchall()] == [3]
    renewer.close()
