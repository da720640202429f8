"""runtime/postgres/ on a real PostgreSQL 15 with pg_cron: provisioning, the batched purge for
each kind of expiry column, renewals, limits, injection attempts, pg_cron itself and the views."""

import itertools
import threading
import time

import psycopg
import pytest
from postgres import create_purge_role
from psycopg import sql

from expiry.runtime.postgres.connection import Connector
from expiry.runtime.postgres.provision import provision, unprovision
from expiry.runtime.postgres.purge import plan, purge
from expiry.runtime.postgres.spec import CleanupError, PurgeSpec, check_cron, cron_command
from expiry.runtime.postgres.status import logged_since, status

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


def make_table(
    conn, column_type: str, expired: int, live: int, permanent: int, name: str = "attributes", index: bool = True
) -> None:
    """The table with its expiry index (the batches walk it); ``index=False``: none (batches by TID range)."""
    past, future, cast = EXPIRY_TYPES[column_type]
    conn.execute(
        f"CREATE TABLE \"{name}\" (id serial PRIMARY KEY, kind text NOT NULL DEFAULT 'a', ttl_timestamp {column_type})"
    )
    if index:
        conn.execute(f'CREATE INDEX ON "{name}" (ttl_timestamp)')
    expiries = cast.format(past + " + g * interval '1 second'")  # one second apart, oldest first by id
    conn.execute(f'INSERT INTO "{name}" (ttl_timestamp) SELECT {expiries} FROM generate_series(1, %s) g', (expired,))
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
            "target_batch_ms": 0,  # fixed batch sizes; the adaptive sizing has tests of its own
            **overrides,
        }
    )


def count(conn, where: str = "TRUE", table: str = "attributes") -> int:
    return conn.execute(f'SELECT count(*) FROM "{table}" WHERE {where}').fetchone()[0]


@pytest.mark.parametrize("column_type", list(EXPIRY_TYPES))
def test_procedure_deletes_only_expired_rows_for_each_column_type(postgres, database, column_type):
    with postgres.connect(database) as conn:
        make_table(conn, column_type, expired=50, live=60, permanent=5)
        state = provision(connector(postgres, database), spec())
        assert state["column_kind"] == {"bigint": "epoch", "integer": "epoch"}.get(column_type, column_type)
        conn.execute('CALL expiry."purge-attributes"()')
        assert count(conn) == 65
        assert count(conn, "ttl_timestamp IS NULL") == 5  # NULL never expires
        log = conn.execute(
            "SELECT expired_rows, examined_rows, rows_deleted, batches, out_of_time, refused, finished_at IS NOT NULL "
            'FROM expiry."purge-attributes_log"'
        ).fetchall()
        assert log == [(50, 101, 50, 8, False, None, True)]  # examined: counted as far as 50 / 0.5 + 1
        batches = conn.execute('SELECT batch, rows_deleted FROM expiry."purge-attributes_batches" ORDER BY batch')
        assert batches.fetchall() == [(n, 7) for n in range(1, 8)] + [(8, 1)]  # a row per committed batch


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


def blocked_on_a_lock(postgres, database: str, application: str) -> None:
    """Wait until the session named ``application`` waits for a row lock (guards a hang, not a timing)."""
    deadline = time.monotonic() + 30
    with postgres.connect(database) as watcher:
        while time.monotonic() < deadline:
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
                (application,),
            ).fetchone()[0]
            if waiting:
                return
            time.sleep(0.05)
    raise AssertionError(f"{application} never waited for the renewal's row lock")


def in_background(target) -> tuple[threading.Thread, list]:
    """Run ``target`` in a thread; the list receives its result or its exception."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(target())
        except Exception as error:  # noqa: BLE001 - handed to the test
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def named(postgres, database: str, application: str) -> psycopg.Connection:
    return psycopg.connect(postgres.dsn(database) + f" application_name={application}", autocommit=True)


@pytest.mark.parametrize("index", [True, False], ids=["index walk", "TID ranges"])
def test_row_renewed_while_the_purge_runs_is_kept(postgres, database, index):
    """The application renews row 5 and has not committed when the procedure reaches it: the DELETE
    waits for the renewal (no row locks taken before it), re-checks expiry on the renewed row and
    keeps it; every other expired row goes."""
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=30, live=40, permanent=0, index=index)
        provision(connector(postgres, database), spec())
    renewer = postgres.connect(database, autocommit=False)
    renewer.execute("UPDATE attributes SET ttl_timestamp = extract(epoch from now())::bigint + 3600 WHERE id = 5")

    def call() -> None:
        with named(postgres, database, "procedure") as conn:
            conn.execute('CALL expiry."purge-attributes"()')

    thread, outcome = in_background(call)
    blocked_on_a_lock(postgres, database, "procedure")
    renewer.commit()
    renewer.close()
    thread.join(60)
    assert outcome == [None]
    with postgres.connect(database) as conn:
        assert count(conn, "id <= 30") == 1 and count(conn, "id = 5") == 1 and count(conn) == 41
        skipped = conn.execute('SELECT rows_deleted, rows_skipped FROM expiry."purge-attributes_log"').fetchone()
        assert skipped == (29, 1)  # counts are of effects: 29 deleted, the renewed row counted as skipped


@pytest.mark.parametrize("index", [True, False], ids=["index walk", "TID ranges"])
def test_client_purge_keeps_a_row_being_renewed(postgres, database, index):
    """The Lambda and CLI purge: the same wait and re-check as the procedure."""
    with postgres.connect(database) as conn:
        make_table(conn, "timestamptz", expired=12, live=20, permanent=0, index=index)
    renewer = postgres.connect(database, autocommit=False)
    renewer.execute("UPDATE attributes SET ttl_timestamp = now() + interval '1 day' WHERE id = 3")

    def run():
        with named(postgres, database, "client") as conn:
            return purge(conn, spec(batch_size=5))

    thread, outcome = in_background(run)
    blocked_on_a_lock(postgres, database, "client")
    renewer.commit()
    renewer.close()
    thread.join(60)
    result = outcome[0]
    assert (result.rows_deleted, result.rows_skipped) == (11, 1)
    with postgres.connect(database) as conn:
        assert [r[0] for r in conn.execute("SELECT id FROM attributes WHERE id <= 12").fetchall()] == [3]


def test_client_purge_rechecks_expiry_when_it_deletes(postgres, database):
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=20, live=30, permanent=0)
        provision(connector(postgres, database), spec())
    renewed = threading.Event()

    def renew_after_first_batch(deleted: int) -> None:
        if not renewed.is_set():
            with postgres.connect(database) as other:
                other.execute(
                    "UPDATE attributes SET ttl_timestamp = extract(epoch from now())::bigint + 60 WHERE id = 20"
                )
            renewed.set()

    with postgres.connect(database) as conn:
        result = purge(conn, spec(batch_size=5), on_batch=renew_after_first_batch)
        assert result.rows_deleted == 19 and count(conn, "id <= 20") == 1 and count(conn, "id = 20") == 1


def slow_deletes(conn) -> None:
    conn.execute(
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN PERFORM pg_sleep(0.01); RETURN OLD; END$$"
    )
    conn.execute("CREATE TRIGGER slow BEFORE DELETE ON attributes FOR EACH ROW EXECUTE FUNCTION slow()")


def test_runtime_limit_stops_the_procedure(postgres, database):
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=400, live=401, permanent=0)
        slow_deletes(conn)
        provision(connector(postgres, database), spec(batch_size=10, max_runtime_seconds=1))
        conn.execute('CALL expiry."purge-attributes"()')
        rows, batches, out_of_time = conn.execute(
            'SELECT rows_deleted, batches, out_of_time FROM expiry."purge-attributes_log"'
        ).fetchone()
        assert out_of_time is True
        assert rows == batches * 10 and 0 < rows < 400 and count(conn) == 801 - rows


def test_a_purge_killed_mid_run_leaves_its_committed_batches_in_the_log(postgres, database):
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=400, live=401, permanent=0)
        slow_deletes(conn)
    provision(connector(postgres, database), spec(batch_size=10))

    def call() -> None:
        with named(postgres, database, "doomed") as conn:
            conn.execute('CALL expiry."purge-attributes"()')

    thread, outcome = in_background(call)
    deadline = time.monotonic() + 30
    with postgres.connect(database) as conn:
        while conn.execute('SELECT count(*) FROM expiry."purge-attributes_batches"').fetchone()[0] < 3:
            assert time.monotonic() < deadline, "the purge committed no batch"
            time.sleep(0.05)
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'doomed'")
        thread.join(30)
        assert isinstance(outcome[0], psycopg.OperationalError)  # the backend was terminated
        deleted = 801 - count(conn)
        logged = conn.execute('SELECT sum(rows_deleted), count(*) FROM expiry."purge-attributes_batches"').fetchone()
        assert logged == (deleted, deleted // 10) and 0 < deleted < 400
        run = conn.execute('SELECT finished_at, expired_rows FROM expiry."purge-attributes_log"').fetchone()
        assert run == (None, 400)  # the run's row shows it never finished
        assert logged_since(conn, spec(batch_size=10), 3600)["rows_purged"] == deleted
        conn.execute("DROP TRIGGER slow ON attributes")
        conn.execute('CALL expiry."purge-attributes"()')  # the lock died with the backend: the next run goes on
        assert count(conn) == 401


def test_runs_never_overlap(postgres, database):
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=20, live=30, permanent=0)
    provision(connector(postgres, database), spec())
    renewer = postgres.connect(database, autocommit=False)
    renewer.execute("UPDATE attributes SET ttl_timestamp = extract(epoch from now())::bigint + 3600 WHERE id = 5")

    def call() -> None:
        with named(postgres, database, "first") as conn:
            conn.execute('CALL expiry."purge-attributes"()')

    thread, outcome = in_background(call)
    blocked_on_a_lock(postgres, database, "first")
    with postgres.connect(database) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="another run of purge-attributes is in progress"):
            conn.execute('CALL expiry."purge-attributes"()')
        with pytest.raises(CleanupError, match="another run of purge-attributes is in progress"):
            purge(conn, spec())
        assert conn.execute('SELECT count(*) FROM expiry."purge-attributes_log"').fetchone()[0] == 1
    renewer.commit()
    renewer.close()
    thread.join(60)
    assert outcome == [None]
    with postgres.connect(database) as conn:
        assert count(conn) == 31


def test_client_purge_batches_and_limits(postgres, database):
    with postgres.connect(database) as conn:
        make_table(conn, "timestamp", expired=23, live=30, permanent=1)
        sizes: list[int] = []
        result = purge(conn, spec(batch_size=10), on_batch=sizes.append)
        assert sizes == [10, 10, 3] and result.rows_deleted == 23 and count(conn) == 31
        make_table(conn, "bigint", expired=30, live=31, permanent=0, name="more")
        stopped = purge(conn, spec(table="more", batch_size=10), should_stop=lambda: True)
        assert stopped.stopped_early and stopped.rows_deleted == 10 and count(conn, table="more") == 51


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
        assert command == cron_command(name, sql.SQL("CALL {}()").format(sql.Identifier(name, name)).as_string(cron))
    unprovision(connector(postgres, database), weird)


def test_bad_specs_are_refused():
    with pytest.raises(CleanupError, match="schedule: pg_cron needs 5 fields"):
        spec(schedule="0 0 3 * * *")
    with pytest.raises(CleanupError, match="schedule: cron hour field '24': 24 is outside 0..23"):
        spec(schedule="0 24 * * *")
    with pytest.raises(CleanupError, match="schedule: cron minute field 'x'"):
        spec(schedule="x * * * *")
    with pytest.raises(CleanupError, match=r"schedule: cron minute field '\*/0': the step must be at least 1"):
        spec(schedule="*/0 * * * *")
    with pytest.raises(CleanupError, match="schedule: cron hour field '0/5': a /step needs \\* or a range"):
        spec(schedule="0 0/5 * * *")
    with pytest.raises(CleanupError, match="history_schedule: cron minute field '5-2': the range 5-2 runs backwards"):
        spec(history_schedule="5-2 * * * *")
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
        make_table(conn, "bigint", expired=3, live=3, permanent=1, index=False)
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
        make_table(conn, "bigint", expired=1, live=1, permanent=0, index=False)
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
        make_table(conn, "bigint", expired=40, live=50, permanent=1)
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
        assert count(conn) == 51
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


def keys(conn, where: str = "TRUE") -> set[str]:
    return {str(r[0]) for r in conn.execute(f"SELECT id FROM attributes WHERE {where}").fetchall()}


def test_the_breaker_refuses_a_mass_deletion_and_says_why(postgres, database):
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=60, live=40, permanent=0)
    provision(connector(postgres, database), spec())
    with postgres.connect(database) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="mass-deletion breaker: 60 of 100 rows examined"):
            conn.execute('CALL expiry."purge-attributes"()')
        assert count(conn) == 100  # nothing deleted
        refused = conn.execute('SELECT refused, rows_deleted FROM expiry."purge-attributes_log"').fetchone()
        assert "breaker_max_share 50%" in refused[0] and "allow_mass_deletion" in refused[0] and refused[1] == 0
        assert logged_since(conn, spec(), 3600) == {"rows_purged": 0, "refused_runs": 1}
        client = purge(conn, spec())
        assert client.plan.refused and client.rows_deleted == 0 and count(conn) == 100
    provision(connector(postgres, database), spec(breaker_max_share=0.7))  # a raised threshold lets it go on
    with postgres.connect(database) as conn:
        conn.execute('CALL expiry."purge-attributes"()')
        assert count(conn) == 40


def test_the_breaker_count_limit_and_the_explicit_override(postgres, database):
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=30, live=70, permanent=0)
        refused = purge(conn, spec(breaker_max_count=29)).plan.refused
        assert refused.startswith("mass-deletion breaker: 30 rows to delete, more than breaker_max_count 29")
        assert count(conn) == 100
        assert purge(conn, spec(breaker_max_count=30)).rows_deleted == 30
        make_table(conn, "bigint", expired=30, live=0, permanent=0, name="all_expired")
        assert purge(conn, spec(table="all_expired")).plan.refused is not None
        assert purge(conn, spec(table="all_expired", allow_mass_deletion=True)).rows_deleted == 30


def test_small_runs_and_the_scope_of_the_breaker(postgres, database):
    """A run of at most breaker_ignore_below rows is never refused; with extra_column the share is
    of the rows in scope."""
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=8, live=0, permanent=0)
        assert purge(conn, spec()).rows_deleted == 8
        make_table(conn, "bigint", expired=40, live=100, permanent=0, name="scoped")
        conn.execute("UPDATE scoped SET kind = 'b' WHERE id <= 30 OR id > 130")  # 30 expired, 10 live in scope
        scoped = spec(table="scoped", extra_column="kind", extra_value="b")
        result = purge(conn, scoped)
        assert result.plan.refused and "30 of 40 rows examined" in result.plan.refused
        assert count(conn, table="scoped") == 140


def test_the_dry_run_is_the_plan_row_by_row(postgres, database):
    with postgres.connect(database) as conn:
        make_table(conn, "timestamptz", expired=37, live=50, permanent=4)
        conn.execute("UPDATE attributes SET ttl_timestamp = ttl_timestamp - make_interval(secs => 2 * id)")
        before = keys(conn)
        dry = plan(conn, spec(), sample_size=1000)
        assert count(conn) == 91  # the dry run deleted nothing
        assert dry.refused is None and dry.expired_rows == 37 and dry.key_columns == ["id"]
        assert [k["id"] for k in dry.sample_keys] == [str(i) for i in range(37, 0, -1)]  # oldest first
        result = purge(conn, spec(batch_size=10))
        assert before - keys(conn) == {k["id"] for k in dry.sample_keys}  # deleted exactly what it listed
        assert result.rows_deleted == dry.expired_rows == 37
        capped = plan(conn, spec(), sample_size=3)
        assert capped.expired_rows == 0 and capped.sample_keys == []


def test_the_procedure_deletes_what_the_dry_run_listed(postgres, database):
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=25, live=30, permanent=2)
        provision(connector(postgres, database), spec())
        dry = plan(conn, spec(), sample_size=5)
        assert len(dry.sample_keys) == 5 and dry.expired_rows == 25  # a capped sample, the full count
        listed = {k["id"] for k in plan(conn, spec(), sample_size=100).sample_keys}
        before = keys(conn)
        conn.execute('CALL expiry."purge-attributes"()')
        assert before - keys(conn) == listed


CRON_EXPRESSIONS = [
    "*/0 * * * *",
    "0 0/5 * * *",
    "5/10 * * * *",
    "1-5/0 * * * *",
    "60 * * * *",
    "0 24 * * *",
    "0 0 0 * *",
    "0 0 * 0 *",
    "0 0 * * 8",
    "-1 * * * *",
    "0 0 L * *",
    "*/5 * * * *",
    "0-59/5 * * * *",
    "0 3 * * *",
    "1,2,3 * * * *",
    "*/5,10 * * * *",
    "0 0 1-31/2 * *",
    "0 0 * * 0-7",
    "*/60 * * * *",
]


def test_schedules_are_checked_the_way_pg_cron_parses_them(postgres):
    """Whatever the check lets through, pg_cron 1.4 itself accepts (tried in a rolled-back transaction)."""
    accepted = []
    for expression in CRON_EXPRESSIONS:
        try:
            check_cron(expression)
        except CleanupError:
            continue
        accepted.append(expression)
        with postgres.connect() as cron:
            cron.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
            with cron.transaction(force_rollback=True):
                cron.execute("SELECT cron.schedule('probe', %s, 'SELECT 1')", (expression,))
    assert "*/0 * * * *" not in accepted and "0 0/5 * * *" not in accepted and len(accepted) == 8


def test_bad_breaker_settings_name_the_field():
    with pytest.raises(CleanupError, match=r"breaker_max_share: must be a number in 0..1"):
        spec(breaker_max_share=1.5)
    with pytest.raises(CleanupError, match="breaker_max_count: must be a whole number of rows"):
        spec(breaker_max_count=-1)
    with pytest.raises(CleanupError, match="allow_mass_deletion: must be true or false"):
        spec(allow_mass_deletion="yes")
    with pytest.raises(CleanupError, match="breaker_ignore_below: must be an integer"):
        spec(breaker_ignore_below=-1)


ROLES = itertools.count()


def test_a_least_privilege_role_provisions_and_runs_the_purge(postgres, database):
    """No superuser: the README's grants only (pg_cron 1.4, the table outside pg_cron's database)."""
    role = f"expiry_{next(ROLES)}"
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=20, live=30, permanent=2)
    dsn = create_purge_role(postgres, role, database)
    least = Connector(dsn, database)
    lp = spec(schema=f"{role}_objects")
    state = provision(least, lp)
    provision(least, spec(schema=f"{role}_objects", schedule="5 4 * * *", batch_size=9))  # update in place
    with postgres.connect() as cron:
        job = cron.execute(
            "SELECT jobid, username, database, schedule FROM cron.job WHERE jobid = %s", (state["job_id"],)
        )
        assert job.fetchone() == (state["job_id"], role, database, "5 4 * * *")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert not conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
        conn.execute(spec(schema=f"{role}_objects").command)
        assert count(conn) == 32
    unprovision(least, lp)


@pytest.mark.parametrize(
    ("skip", "named"),
    [
        ("pg_read_all_settings", "GRANT pg_read_all_settings TO"),
        ("USAGE ON SCHEMA cron", "GRANT USAGE ON SCHEMA cron TO"),
        ("schedule_in_database", "GRANT EXECUTE ON FUNCTION cron.schedule_in_database("),
        ("alter_job", "GRANT EXECUTE ON FUNCTION cron.alter_job("),
        ("DATABASE postgres", 'GRANT CREATE ON DATABASE "postgres" TO'),
        ('CREATE ON DATABASE "app', "GRANT CREATE ON DATABASE"),
        ("SELECT, DELETE", 'GRANT DELETE ON "public"."attributes" TO'),
    ],
)
def test_a_missing_grant_is_named_before_anything_is_created(postgres, database, skip, named):
    role = f"expiry_{next(ROLES)}"
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=5, live=5, permanent=0)
    dsn = create_purge_role(postgres, role, database, skip=skip)
    if skip == "SELECT, DELETE":
        with postgres.connect(database) as conn:
            conn.execute(f'GRANT SELECT ON attributes TO "{role}"')  # SELECT alone: DELETE is what is missing
    with pytest.raises(CleanupError) as error:
        provision(Connector(dsn, database), spec(schema=f"{role}_objects"))
    assert named in str(error.value) and role in str(error.value)
    with postgres.connect(database) as conn:
        assert conn.execute("SELECT to_regnamespace(%s) IS NULL", (f"{role}_objects",)).fetchone()[0]
    with postgres.connect() as cron:
        assert cron.execute("SELECT count(*) FROM cron.job WHERE username = %s", (role,)).fetchone()[0] == 0


def test_a_failed_create_leaves_nothing_behind(postgres, database):
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=5, live=5, permanent=0)
    with postgres.connect() as cron:  # a type in the way of the runs view (its row type), in pg_cron's database
        cron.execute("CREATE SCHEMA IF NOT EXISTS in_the_way")
        cron.execute("CREATE TYPE in_the_way.\"in-the-way_runs\" AS ENUM ('x')")
    with pytest.raises(psycopg.errors.DuplicateObject):
        provision(connector(postgres, database), spec(job_name="in-the-way", schema="in_the_way"))
    with postgres.connect(database) as conn:
        assert conn.execute("SELECT to_regnamespace('in_the_way') IS NULL").fetchone()[0]
    with postgres.connect() as cron:
        assert cron.execute("SELECT count(*) FROM cron.job WHERE jobname LIKE 'in-the-way%'").fetchone()[0] == 0
        cron.execute("DROP SCHEMA in_the_way CASCADE")


def test_a_failed_update_changes_nothing(postgres, database):
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=5, live=5, permanent=0)
    provision(connector(postgres, database), spec())
    with postgres.connect(database) as conn:  # someone replaced the status view with a type of its name
        conn.execute('DROP VIEW expiry."purge-attributes_status"')
        conn.execute("CREATE TYPE expiry.\"purge-attributes_status\" AS ENUM ('x')")
    with pytest.raises(psycopg.errors.DuplicateObject):
        provision(connector(postgres, database), spec(schedule="30 4 * * *", batch_size=99))
    with postgres.connect() as cron:
        assert cron.execute("SELECT schedule FROM cron.job WHERE jobname = 'purge-attributes'").fetchone() == (
            "0 3 * * *",
        )
    with postgres.connect(database) as conn:
        arguments = conn.execute("SELECT pg_get_function_arguments('expiry.\"purge-attributes\"'::regproc)").fetchone()
        assert "DEFAULT 7" in arguments[0] and "DEFAULT 99" not in arguments[0]
        conn.execute('DROP TYPE expiry."purge-attributes_status"')
    unprovision(connector(postgres, database), spec())
