"""PgCronCleanup owns only what it created (issue 18, finding 6), on a real PostgreSQL 15 with pg_cron:
a name that is taken by an object Expiry did not mark is refused at create with nothing written, and
destroy leaves such objects alone; the purge job can run as a role that may only read and delete."""

import itertools
import time

import psycopg
import pytest
from psycopg import sql

from expiry.components.pg_cron_provider import PgCronCleanupProvider
from expiry.runtime.postgres import status as pg_status
from expiry.runtime.postgres.connection import Connector
from expiry.runtime.postgres.provision import provision, unprovision
from expiry.runtime.postgres.purge import purge
from expiry.runtime.postgres.spec import CleanupError, PurgeSpec, owned_marker

ROLES = itertools.count()


@pytest.fixture
def database(postgres):
    """A fresh database holding public.events: 6 expired rows, 2 live, 1 without expiry."""
    name = postgres.new_database("owned")
    with postgres.connect(name) as conn:
        conn.execute("CREATE TABLE events (id serial PRIMARY KEY, expires_at bigint)")
        conn.execute(
            "INSERT INTO events (expires_at) SELECT extract(epoch from now())::bigint - 60 - g "
            "FROM generate_series(1, 6) g"
        )
        conn.execute("INSERT INTO events (expires_at) VALUES (NULL), (extract(epoch from now())::bigint + 3600)")
        conn.execute("INSERT INTO events (expires_at) VALUES (extract(epoch from now())::bigint + 7200)")
    return name


def audit(**overrides) -> PurgeSpec:
    """The issue's cleanup: job `audit` with its objects in the user's own schema, public."""
    return PurgeSpec(
        **{"job_name": "audit", "schema": "public", "table": "events", "expiry_column": "expires_at", **overrides}
    )


def connector(postgres, database: str) -> Connector:
    return Connector(postgres.dsn(database), database)


def user_audit_tables(conn) -> None:
    """The user's own audit_log and audit_batches, with rows."""
    conn.execute("CREATE TABLE audit_log (id serial PRIMARY KEY, actor text NOT NULL, at timestamptz DEFAULT now())")
    conn.execute("INSERT INTO audit_log (actor) VALUES ('alice'), ('bob')")
    conn.execute("CREATE TABLE audit_batches (batch_id int PRIMARY KEY, note text)")
    conn.execute("INSERT INTO audit_batches VALUES (1, 'first'), (2, 'second')")


def snapshot(conn, relation: str) -> tuple:
    """A relation's columns (name, type, NOT NULL, default), its rows as text and its comment."""
    oid = conn.execute("SELECT %s::regclass::oid", (relation,)).fetchone()[0]
    columns = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid) "
        "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (oid,),
    ).fetchall()
    rows = conn.execute(sql.SQL("SELECT t::text FROM {} t ORDER BY 1").format(sql.SQL(relation))).fetchall()
    comment = conn.execute("SELECT obj_description(%s, 'pg_class')", (oid,)).fetchone()[0]
    return columns, rows, comment


def cron_jobs(postgres, *names: str) -> list[tuple]:
    with postgres.connect() as cron:
        if cron.execute("SELECT to_regclass('cron.job') IS NULL").fetchone()[0]:
            return []  # pg_cron not created yet: no jobs
        return cron.execute(
            "SELECT jobname, username, schedule, command FROM cron.job WHERE jobname = ANY(%s) ORDER BY jobname",
            (list(names),),
        ).fetchall()


def routines(conn, schema: str, name: str) -> list[tuple]:
    return conn.execute(
        "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid) FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s AND p.proname = %s ORDER BY 1",
        (schema, name),
    ).fetchall()


def test_a_user_table_with_the_log_name_is_refused_and_left_as_it_was(postgres, database):
    """The issue's case: provisioning `audit` added 9 columns to the user's audit_log."""
    with postgres.connect(database) as conn:
        user_audit_tables(conn)
        before = [snapshot(conn, "audit_log"), snapshot(conn, "audit_batches")]
    with pytest.raises(CleanupError) as refused:
        provision(connector(postgres, database), audit())
    message = str(refused.value)
    assert "public.audit_log" in message and "public.audit_batches" in message and "'audit'" in message
    assert "nothing was changed" in message
    with postgres.connect(database) as conn:
        assert [snapshot(conn, "audit_log"), snapshot(conn, "audit_batches")] == before
        assert routines(conn, "public", "audit") == []
        assert conn.execute("SELECT to_regclass('public.audit_status')").fetchone()[0] is None
    assert cron_jobs(postgres, "audit", "audit-history") == []


def test_destroy_leaves_user_objects_of_the_same_names(postgres, database):
    """unprovision of a cleanup that never ran here: every object named like its own is the user's."""
    with postgres.connect(database) as conn:
        user_audit_tables(conn)
        conn.execute("CREATE VIEW audit_status AS SELECT actor FROM audit_log")
        conn.execute("CREATE PROCEDURE audit(a integer, b integer) LANGUAGE sql AS $$ SELECT a + b $$")
        before = [snapshot(conn, name) for name in ("audit_log", "audit_batches", "audit_status")]
        procedures = routines(conn, "public", "audit")
    with postgres.connect() as cron:
        cron.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        cron.execute("SELECT cron.schedule_in_database('audit', '*/7 * * * *', 'SELECT 1', %s)", (database,))
        cron.execute("SELECT cron.schedule('audit-history', '0 0 1 1 *', 'SELECT 2')")
        cron.execute("CREATE VIEW public.audit_runs AS SELECT 1 AS run")
    jobs = cron_jobs(postgres, "audit", "audit-history")
    try:
        unprovision(connector(postgres, database), audit())
        with postgres.connect(database) as conn:
            assert [snapshot(conn, name) for name in ("audit_log", "audit_batches", "audit_status")] == before
            assert routines(conn, "public", "audit") == procedures
        assert cron_jobs(postgres, "audit", "audit-history") == jobs
        with postgres.connect() as cron:
            assert cron.execute("SELECT count(*) FROM public.audit_runs").fetchone()[0] == 1
    finally:
        with postgres.connect() as cron:
            cron.execute("SELECT cron.unschedule(jobname) FROM cron.job WHERE jobname IN ('audit', 'audit-history')")
            cron.execute("DROP VIEW IF EXISTS public.audit_runs")


def test_destroy_drops_its_own_objects_and_keeps_a_user_table_put_in_the_place_of_one(postgres, database):
    provision(connector(postgres, database), audit())
    with postgres.connect(database) as conn:  # the user replaced the status view with a table of their own
        conn.execute("DROP VIEW audit_status")
        conn.execute("CREATE TABLE audit_status (note text)")
        conn.execute("INSERT INTO audit_status VALUES ('mine')")
    with pytest.raises(CleanupError, match=r"table public\.audit_status"):
        provision(connector(postgres, database), audit(schedule="5 5 * * *"))
    assert [job[2] for job in cron_jobs(postgres, "audit", "audit-history")] == ["0 3 * * *", "17 * * * *"]
    unprovision(connector(postgres, database), audit())
    with postgres.connect(database) as conn:
        assert conn.execute("SELECT note FROM audit_status").fetchall() == [("mine",)]
        assert [
            conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] for name in ("audit_log", "audit_batches")
        ] == [None, None]
        assert routines(conn, "public", "audit") == []
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 9
    assert cron_jobs(postgres, "audit", "audit-history") == []


def test_a_user_routine_with_the_job_name_is_refused(postgres, database):
    """An overload `audit(integer, integer)` would change what the user's `CALL audit()` resolves to."""
    with postgres.connect(database) as conn:
        conn.execute("CREATE TABLE calls (n int)")
        conn.execute("CREATE PROCEDURE audit() LANGUAGE sql AS $$ INSERT INTO calls VALUES (1) $$")
        before = routines(conn, "public", "audit")
    with pytest.raises(CleanupError, match=r"procedure public\.audit\(\)"):
        provision(connector(postgres, database), audit())
    with postgres.connect(database) as conn:
        assert routines(conn, "public", "audit") == before
        conn.execute("CALL audit()")
        assert conn.execute("SELECT count(*) FROM calls").fetchone()[0] == 1
    assert cron_jobs(postgres, "audit", "audit-history") == []


def test_a_pg_cron_job_of_the_same_name_is_neither_taken_over_nor_unscheduled(postgres, database):
    with postgres.connect() as cron:
        cron.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        cron.execute("SELECT cron.schedule_in_database('audit', '*/7 * * * *', 'SELECT 1', %s)", (database,))
    before = cron_jobs(postgres, "audit")
    try:
        with pytest.raises(CleanupError, match="pg_cron job 'audit'"):
            provision(connector(postgres, database), audit(schema="expiry"))
        assert cron_jobs(postgres, "audit") == before
        with postgres.connect(database) as conn:
            assert conn.execute("SELECT to_regnamespace('expiry')").fetchone()[0] is None
        unprovision(connector(postgres, database), audit(schema="expiry"))
        assert cron_jobs(postgres, "audit") == before
    finally:
        with postgres.connect() as cron:
            cron.execute("SELECT cron.unschedule('audit')")


def test_everything_provisioning_creates_carries_the_marker_and_a_second_run_is_idempotent(postgres, database):
    cleanup = audit(schema="expiry", archive=True, create_index=True)
    first = provision(connector(postgres, database), cleanup)
    second = provision(
        connector(postgres, database), audit(schema="expiry", archive=True, create_index=True, batch_size=9)
    )
    assert (second["job_id"], second["history_job_id"]) == (first["job_id"], first["history_job_id"])
    marker = owned_marker("audit")
    assert marker == "expiry:owned job=audit"
    with postgres.connect(database) as conn:
        comments = conn.execute(
            "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c "
            "WHERE c.relname IN ('audit_log', 'audit_batches', 'audit_status', 'audit_archive', 'audit_archive_at', "
            "'audit_expiry_idx') ORDER BY 1"
        ).fetchall()
        assert comments == [
            (name, marker)
            for name in sorted(
                ("audit_archive", "audit_archive_at", "audit_batches", "audit_expiry_idx", "audit_log", "audit_status")
            )
        ]
        procedure = conn.execute("SELECT obj_description('expiry.audit(integer, integer)'::regprocedure, 'pg_proc')")
        assert procedure.fetchone()[0] == marker
        assert "DEFAULT 9" in conn.execute("SELECT pg_get_function_arguments('expiry.audit'::regproc)").fetchone()[0]
    with postgres.connect() as cron:
        assert cron.execute("SELECT obj_description('expiry.audit_runs'::regclass, 'pg_class')").fetchone()[0] == marker
    commands = [job[3] for job in cron_jobs(postgres, "audit", "audit-history")]
    assert all(command.startswith(f"/* {marker} */ ") for command in commands), commands
    unprovision(connector(postgres, database), cleanup)
    assert cron_jobs(postgres, "audit", "audit-history") == []
    with postgres.connect(database) as conn:
        assert conn.execute("SELECT to_regclass('public.audit_expiry_idx')").fetchone()[0] is None
        assert conn.execute("SELECT to_regclass('expiry.audit_log')").fetchone()[0] is None


def test_a_marker_of_another_job_is_not_this_jobs(postgres, database):
    """Cleanup `a` owns `a-history`'s name as its history job; cleanup `a-history` may not take it."""
    provision(connector(postgres, database), audit(job_name="a"))
    try:
        with pytest.raises(CleanupError, match="pg_cron job 'a-history'"):
            provision(connector(postgres, database), audit(job_name="a-history"))
        assert [job[0] for job in cron_jobs(postgres, "a", "a-history", "a-history-history")] == ["a", "a-history"]
    finally:
        unprovision(connector(postgres, database), audit(job_name="a"))


def test_an_index_of_the_index_name_is_not_adopted(postgres, database):
    with postgres.connect(database) as conn:
        conn.execute("CREATE INDEX audit_expiry_idx ON events (id)")  # a user's index on another column
    with pytest.raises(CleanupError, match=r"index public\.audit_expiry_idx"):
        provision(connector(postgres, database), audit(schema="expiry", create_index=True))
    unprovision(connector(postgres, database), audit(schema="expiry", create_index=True))
    with postgres.connect(database) as conn:
        assert conn.execute("SELECT obj_description('audit_expiry_idx'::regclass, 'pg_class')").fetchone()[0] is None
    assert cron_jobs(postgres, "audit", "audit-history") == []


def test_a_client_purge_does_not_archive_into_a_user_table(postgres, database):
    """The Lambda / CLI purge creates <job>_archive itself: a user's table of that name is refused."""
    with postgres.connect(database) as conn:
        conn.execute("CREATE TABLE audit_archive (archived_at timestamptz, run_id bigint, row_data jsonb, note text)")
        conn.execute("INSERT INTO audit_archive (note) VALUES ('mine')")
        before = snapshot(conn, "audit_archive")
        with pytest.raises(CleanupError, match=r"table public\.audit_archive"):
            purge(conn, audit(archive=True, allow_mass_deletion=True))
        assert snapshot(conn, "audit_archive") == before
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'audit_archive'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 9


def test_changing_run_as_replaces_the_cleanup():
    """Another run_as is another pg_cron job (jobs are keyed by name and role): the old one must go."""
    olds = {"job_name": "audit", "table": "events", "expiry_column": "expires_at", "run_as": "a"}
    assert PgCronCleanupProvider().diff("x", olds, {**olds, "run_as": "b"}).replaces == ["run_as"]


def purge_role(postgres, database: str, *, member_of: str | None = None) -> str:
    """A LOGIN role that may read and delete the rows of public.events and nothing else of the user's,
    plus what pg_cron 1.4 asks of the role a job is scheduled for in another database."""
    role = f"purger_{next(ROLES)}"
    with postgres.connect() as cron:
        cron.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        cron.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER").format(sql.Identifier(role)))
        cron.execute(sql.SQL("GRANT USAGE ON SCHEMA cron TO {}").format(sql.Identifier(role)))
        for function in (
            "cron.schedule_in_database(text,text,text,text,text,boolean)",
            "cron.alter_job(bigint,text,text,text,text,boolean)",
        ):
            cron.execute(sql.SQL(f"GRANT EXECUTE ON FUNCTION {function} TO {{}}").format(sql.Identifier(role)))
        if member_of:
            cron.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(member_of)))
    with postgres.connect(database) as conn:
        conn.execute(sql.SQL("GRANT SELECT, DELETE ON events TO {}").format(sql.Identifier(role)))
    return role


def test_the_job_runs_as_the_purge_role_from_pg_cron(postgres, database):
    """Waits for one pg_cron tick (at most about 70 s): pg_cron runs the purge as `run_as`, which may
    only read and delete the table's rows; the provisioning role (here a superuser) stays apart."""
    role = purge_role(postgres, database)
    cleanup = audit(schema="expiry", run_as=role, schedule="* * * * *", archive=True, allow_mass_deletion=True)
    state = provision(connector(postgres, database), cleanup)
    try:
        assert [(job[0], job[1]) for job in cron_jobs(postgres, "audit", "audit-history")] == [
            ("audit", role),
            ("audit-history", role),
        ]
        with postgres.connect(database) as conn:
            privileges = conn.execute(
                "SELECT p, has_table_privilege(%s, 'events', p) FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', "
                "'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p",
                (role,),
            ).fetchall()
            assert [p for p, granted in privileges if granted] == ["SELECT", "DELETE"]
        deadline, row = time.monotonic() + 75, None
        with postgres.connect() as cron:
            while time.monotonic() < deadline and row is None:
                row = cron.execute(
                    "SELECT status, return_message, username FROM cron.job_run_details WHERE jobid = %s "
                    "AND status <> 'running' ORDER BY start_time DESC LIMIT 1",
                    (state["job_id"],),
                ).fetchone()
                time.sleep(1)
        assert row is not None, "pg_cron did not run the job within 75 s"
        assert row[0] == "succeeded" and row[2] == role, row
        with postgres.connect(database) as conn:
            assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 3
            assert conn.execute("SELECT count(*) FROM expiry.audit_archive").fetchone()[0] == 6
            assert conn.execute("SELECT rows_deleted FROM expiry.audit_log").fetchall() == [(6,)]
        with psycopg.connect(postgres.dsn().replace("user=postgres", f"user={role}"), autocommit=True) as cron:
            history = cron.execute("SELECT command FROM cron.job WHERE jobid = %s", (state["history_job_id"],))
            cron.execute(history.fetchone()[0])  # the history job as the role pg_cron runs it as
            health = pg_status.cron_health(cron, "audit", 3600)  # what pg-monitor reads, as the purge role
            assert health["job_scheduled"] and health["failed_runs"] == 0
        with psycopg.connect(postgres.dsn(database).replace("user=postgres", f"user={role}"), autocommit=True) as conn:
            assert pg_status.logged_since(conn, cleanup, 3600)["rows_purged"] == 6
            assert pg_status.status(conn, cleanup)["expired_rows"] == 0
    finally:
        unprovision(connector(postgres, database), cleanup)
    assert cron_jobs(postgres, "audit", "audit-history") == []


def test_a_provisioning_role_that_is_no_superuser_schedules_for_the_purge_role(postgres, database):
    """Without superuser, pg_cron 1.4 schedules only for the current role: the provisioner SETs ROLE
    to run_as (it must be a member) and needs no DELETE on the table itself."""
    provisioner = f"provisioner_{next(ROLES)}"
    with postgres.connect() as cron:
        cron.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER").format(sql.Identifier(provisioner)))
        for statement in (
            "GRANT pg_read_all_settings TO {}",
            "GRANT USAGE ON SCHEMA cron TO {}",
            "GRANT CREATE ON DATABASE postgres TO {}",
        ):
            cron.execute(sql.SQL(statement).format(sql.Identifier(provisioner)))
    with postgres.connect(database) as conn:
        conn.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(database), sql.Identifier(provisioner))
        )
        conn.execute(sql.SQL("GRANT SELECT ON events TO {}").format(sql.Identifier(provisioner)))
    dsn = postgres.dsn(database).replace("user=postgres", f"user={provisioner}")
    stranger = purge_role(postgres, database)
    with pytest.raises(CleanupError) as refused:
        provision(Connector(dsn, database), audit(schema=f"{provisioner}_objects", run_as=stranger))
    assert f'GRANT "{stranger}" TO "{provisioner}"' in str(refused.value)
    role = purge_role(postgres, database, member_of=provisioner)
    cleanup = audit(schema=f"{provisioner}_objects", run_as=role)
    provision(Connector(dsn, database), cleanup)
    assert [job[1] for job in cron_jobs(postgres, "audit", "audit-history")] == [role, role]
    with psycopg.connect(postgres.dsn(database).replace("user=postgres", f"user={role}"), autocommit=True) as conn:
        conn.execute(cleanup.command)
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 3
    unprovision(Connector(dsn, database), cleanup)
    assert cron_jobs(postgres, "audit", "audit-history") == []


def test_a_purge_role_without_delete_is_named_before_anything_is_created(postgres, database):
    role = purge_role(postgres, database)
    with postgres.connect(database) as conn:
        conn.execute(sql.SQL("REVOKE DELETE ON events FROM {}").format(sql.Identifier(role)))
    with pytest.raises(CleanupError) as refused:
        provision(connector(postgres, database), audit(schema="expiry", run_as=role))
    assert f'GRANT DELETE ON "public"."events" TO "{role}";' in str(refused.value)
    with postgres.connect(database) as conn:
        assert conn.execute("SELECT to_regnamespace('expiry')").fetchone()[0] is None
    assert cron_jobs(postgres, "audit", "audit-history") == []
