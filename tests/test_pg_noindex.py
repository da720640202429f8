"""The purge without an expiry index (batches by TID range, one pass over the table) and with an expiry
expression, on a real PostgreSQL 15 with pg_cron: exactly the rows expired at the check go, the dry
run is the run, renewed rows stay, the procedure and the client agree, a stopped run is resumed, and
hostile expressions are refused before anything is created or deleted."""

import io
import json

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql
from test_pg_cleanup import connector

from expiry.runtime.cli import main as cli_main
from expiry.runtime.jobs.config import JobConfigError
from expiry.runtime.postgres.catalog import check_expiry_expression, has_index
from expiry.runtime.postgres.provision import provision, unprovision
from expiry.runtime.postgres.purge import plan, purge
from expiry.runtime.postgres.spec import CleanupError, PurgeSpec
from expiry.runtime.postgres.status import table_status

EXPRESSION = "created_at + interval '30 days'"


@pytest.fixture(scope="module")
def database(postgres):
    return postgres.new_database("noindex")


def spec(**overrides) -> PurgeSpec:
    fields = {"job_name": "sessions", "table": "sessions", "allow_mass_deletion": True, "target_batch_ms": 0}
    fields |= overrides
    if "expiry_expression" not in fields:
        fields.setdefault("expiry_column", "expires_at")
    return PurgeSpec(**fields)


def make_sessions(conn, name: str, states: list[str], width: int, index: bool) -> None:
    """``name`` (id, created_at, expires_at, payload of ``width`` characters): per state, a row
    expired an hour ago ('expired'), live for a day ('live') or without expiry ('null');
    created_at is 30 days before expires_at (the expression EXPRESSION gives expires_at again)."""
    table = sql.Identifier(name)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(table))
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (id integer PRIMARY KEY, created_at timestamptz, expires_at timestamptz, payload text)"
        ).format(table)
    )
    offsets = {"expired": "-1 hour", "live": "1 day", "null": None}
    with conn.cursor() as cursor:
        cursor.executemany(
            sql.SQL(
                "INSERT INTO {} SELECT %s, e - interval '30 days', e, repeat('x', %s) "
                "FROM (SELECT now() + %s::interval AS e) v"
            ).format(table),
            [(i, width, offsets[state]) for i, state in enumerate(states, start=1)],
        )
    if index:
        conn.execute(sql.SQL("CREATE INDEX ON {} (expires_at)").format(table))


def ids(conn, name: str) -> set[int]:
    return {row[0] for row in conn.execute(sql.SQL("SELECT id FROM {}").format(sql.Identifier(name)))}


def expired_ids(conn, name: str) -> set[int]:
    return {
        row[0]
        for row in conn.execute(sql.SQL("SELECT id FROM {} WHERE expires_at < now()").format(sql.Identifier(name)))
    }


WORLDS = st.fixed_dictionaries(
    {
        "states": st.lists(st.sampled_from(["expired", "live", "null"]), max_size=300),
        "width": st.sampled_from([10, 300, 1500]),  # about 150, 25 and 5 rows a page
        "index": st.booleans(),
        "expression": st.booleans(),
        "gone": st.sets(st.integers(1, 300), max_size=60),  # deleted before the purge: dead tuples, gaps
        "vacuum": st.booleans(),
        "renew": st.sets(st.integers(1, 300), max_size=20),  # renewed after the first batch
        "batch_size": st.integers(1, 400),
    }
)


@settings(max_examples=40)
@given(world=WORLDS)
def test_exactly_the_rows_expired_at_the_check_are_deleted(postgres, database, world):
    """Twin tables, one purged by the client (renewing rows after its first batch), one by the
    procedure: the dry run lists exactly the rows expired at the check, the client deletes them but
    the rows it renewed, the procedure deletes them all, and the counts are exact."""
    index = world["index"] and not world["expression"]
    with postgres.connect(database) as conn:
        for name in ("sessions", "twin"):
            make_sessions(conn, name, world["states"], world["width"], index)
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(sql.Identifier(name)), (list(world["gone"]),)
            )
            if world["vacuum"]:
                conn.execute(sql.SQL("VACUUM {}").format(sql.Identifier(name)))
        expression = {"expiry_expression": EXPRESSION} if world["expression"] else {}
        client = spec(batch_size=world["batch_size"], **expression)
        assert has_index(conn, client) is index
        expired = expired_ids(conn, "sessions")
        planned = plan(conn, client, sample_size=1000)
        assert planned.expired_rows == len(expired)
        assert {int(key["id"]) for key in planned.sample_keys} == expired
        renewed: set[int] = set()

        def renew_after_first_batch(_deleted: int) -> None:
            if not renewed and world["renew"]:
                rows = conn.execute(
                    "UPDATE sessions SET expires_at = now() + interval '1 day', created_at = now() "
                    "WHERE id = ANY(%s) RETURNING id",
                    (list(world["renew"]),),
                ).fetchall()
                renewed.update(row[0] for row in rows) or renewed.add(0)

        before = ids(conn, "sessions")
        result = purge(conn, client, on_batch=renew_after_first_batch)
        kept_expired = expired & renewed
        assert ids(conn, "sessions") == before - (expired - kept_expired)
        assert result.rows_deleted == len(expired - kept_expired) and result.walk == (
            "index" if index else "tid-ranges"
        )

        procedure = spec(job_name="twin", table="twin", batch_size=world["batch_size"], **expression)
        provision(connector(postgres, database), procedure)
        twin_expired, twin_before = expired_ids(conn, "twin"), ids(conn, "twin")
        assert twin_expired == expired and twin_before == before
        conn.execute(procedure.command)
        assert ids(conn, "twin") == before - expired
        logged = conn.execute('SELECT expired_rows, rows_deleted, rows_skipped FROM expiry."twin_log"').fetchone()
        assert logged == (len(expired), len(expired), 0)
        unprovision(connector(postgres, database), procedure)


def test_a_stopped_walk_resumes_where_it_stopped(postgres, database):
    """Each delete takes 10 ms: a run of 1 s stops early and logs the block to resume from; the next run
    starts there, goes round, and every expired row is gone after the runs. The client does the same
    with the next_block its result gives."""
    with postgres.connect(database) as conn:
        states = ["expired", "live"] * 300
        for name in ("sessions", "twin"):
            make_sessions(conn, name, states, 300, index=False)
        slow_deletes_on(conn, "sessions")
        cleanup = spec(batch_size=25, max_runtime_seconds=1)
        provision(connector(postgres, database), cleanup)
        conn.execute(cleanup.command)
        first = conn.execute('SELECT next_block, out_of_time, rows_deleted FROM expiry."sessions_log"').fetchone()
        assert first[1] is True and first[0] > 0 and 0 < first[2] < 300
        conn.execute("DROP TRIGGER slow ON sessions")
        conn.execute(cleanup.command)
        started = conn.execute(
            'SELECT first_block FROM expiry."sessions_batches" WHERE run_id = 2 ORDER BY batch LIMIT 1'
        ).fetchone()[0]
        assert started == first[0] and expired_ids(conn, "sessions") == set()
        assert conn.execute('SELECT sum(rows_deleted) FROM expiry."sessions_log"').fetchone()[0] == 300
        unprovision(connector(postgres, database), cleanup)

        twin = spec(job_name="twin", table="twin", batch_size=25)
        stops = iter([False, True])
        early = purge(conn, twin, should_stop=lambda: next(stops, True))
        assert early.stopped_early and early.batches == 2 and early.next_block
        rest = purge(conn, twin, start_block=early.next_block)
        assert early.rows_deleted + rest.rows_deleted == 300 and expired_ids(conn, "twin") == set()
        assert rest.next_block == early.next_block  # one whole pass, round to where it started


def slow_deletes_on(conn, table: str) -> None:
    conn.execute(
        "CREATE OR REPLACE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql "
        "AS $$BEGIN PERFORM pg_sleep(0.01); RETURN OLD; END$$"
    )
    conn.execute(
        sql.SQL("CREATE TRIGGER slow BEFORE DELETE ON {} FOR EACH ROW EXECUTE FUNCTION slow()").format(
            sql.Identifier(table)
        )
    )


def test_the_breaker_refuses_the_walk_and_nothing_is_deleted(postgres, database):
    with postgres.connect(database) as conn:
        make_sessions(conn, "sessions", ["expired"] * 80 + ["live"] * 20, 10, index=False)
        for cleanup in (spec(allow_mass_deletion=False), spec(allow_mass_deletion=False, expiry_expression=EXPRESSION)):
            result = purge(conn, cleanup)
            assert result.plan.refused and result.plan.refused.startswith("mass-deletion breaker: 80 of 100")
            assert result.rows_deleted == 0 and len(ids(conn, "sessions")) == 100
            provision(connector(postgres, database), cleanup)
            with pytest.raises(psycopg.errors.RaiseException, match="mass-deletion breaker"):
                conn.execute(cleanup.command)
            assert len(ids(conn, "sessions")) == 100
            unprovision(connector(postgres, database), cleanup)


def test_the_walk_takes_the_run_lock(postgres, database):
    with postgres.connect(database) as conn, postgres.connect(database) as other:
        make_sessions(conn, "sessions", ["expired"] * 5, 10, index=False)
        cleanup = spec()
        other.execute(sql.SQL("SELECT pg_advisory_lock({})").format(cleanup.lock_key))
        with pytest.raises(CleanupError, match="another run"):
            purge(conn, cleanup)
        assert len(ids(conn, "sessions")) == 5


def test_the_walk_covers_every_partition(postgres, database):
    """A TID range applies to each partition: the walk spans the largest, and every partition's expired
    rows go."""
    with postgres.connect(database) as conn:
        conn.execute("DROP TABLE IF EXISTS parted")
        conn.execute("CREATE TABLE parted (id int, expires_at timestamptz, payload text) PARTITION BY HASH (id)")
        for part in range(3):
            conn.execute(
                f"CREATE TABLE parted_{part} PARTITION OF parted FOR VALUES WITH (MODULUS 3, REMAINDER {part})"
            )
        conn.execute(
            "INSERT INTO parted SELECT g, now() + CASE WHEN g % 3 = 0 THEN interval '-1 hour' ELSE interval '1 hour' "
            "END, repeat('x', 200) FROM generate_series(1, 3000) g"
        )
        result = purge(conn, spec(table="parted", batch_size=100))
        assert result.walk == "tid-ranges" and result.rows_deleted == 1000
        assert conn.execute("SELECT count(*) FROM parted WHERE expires_at < now()").fetchone()[0] == 0


def test_status_says_when_an_index_would_help(postgres, database):
    with postgres.connect(database) as conn:
        make_sessions(conn, "sessions", ["expired", "live"], 10, index=False)
        advice = table_status(conn, spec(), None)["index_advice"]
        assert "expires_at" in advice and 'CREATE INDEX CONCURRENTLY ON "public"."sessions" ("expires_at")' in advice
        out, err = io.StringIO(), io.StringIO()
        target = ["--postgres", postgres.dsn(database), "--table", "sessions", "--expiry-column", "expires_at"]
        assert cli_main(["status", *target, "--json"], out, err) == 0, err.getvalue()
        assert json.loads(out.getvalue())["index_advice"] == advice
        conn.execute("CREATE INDEX ON sessions (expires_at)")
        assert "index_advice" not in table_status(conn, spec(), None)


@pytest.mark.parametrize(
    ("expression", "expired"),
    [
        (EXPRESSION, 2),  # timestamptz
        ("(created_at + interval '30 days')::date", 2),  # date: before today's midnight
        ("(created_at + interval '30 days') AT TIME ZONE 'UTC'", 2),  # timestamp, read as UTC
        ("extract(epoch from created_at)::bigint + 30 * 86400", 2),  # epoch seconds
        ("coalesce(expires_at, created_at + interval '30 days')", 3),  # NULL expiry: 30 days after creation
    ],
)
def test_an_expiry_expression_purges_by_each_rows_own_expiry(postgres, database, expression, expired):
    with postgres.connect(database) as conn:
        make_sessions(conn, "sessions", ["expired", "live", "null", "expired"], 10, index=True)
        conn.execute(
            "UPDATE sessions SET created_at = now() - interval '40 days', expires_at = NULL WHERE id IN (1, 3)"
        )
        conn.execute("UPDATE sessions SET created_at = now() - interval '1 day' WHERE id = 4")
        cleanup = spec(expiry_expression=expression)
        assert plan(conn, cleanup).expired_rows == expired
        state = provision(connector(postgres, database), cleanup)
        assert state["expiry_column_indexed"] is False  # an expression's batches always walk TID ranges
        conn.execute(cleanup.command)
        assert len(ids(conn, "sessions")) == 4 - expired
        status = conn.execute('SELECT expired_rows FROM expiry."sessions_status"').fetchone()[0]
        assert status == 0
        unprovision(connector(postgres, database), cleanup)


HOSTILE = [
    ("now()", "reads the clock"),
    ("random()", "volatile"),
    ("created_at + random() * interval '1 day'", "volatile"),
    ("clock_timestamp()", "volatile"),
    ("(select 1)", "subquery"),
    ("created_at + (SELECT max(created_at) FROM sessions)", "subquery"),
    ("1; drop table sessions", "';'"),
    ("created_at -- comment", "'--'"),
    ("created_at /* comment */", "'/*'"),
    ("created_at) FROM sessions WHERE (true", "closes more than it opened"),
    ("created_at + interval '1 day", "quote is not closed"),
    ("nosuch + interval '1 day'", "not an expression over the columns"),
    ("payload", "is text"),
    ("created_at, expires_at", "is record"),
    ("max(created_at)", "aggregate"),
    ("CURRENT_TIMESTAMP", "the current time"),
    ("'2020-01-01'::timestamptz", "uses no column"),
    ("$$x$$::timestamptz", "'$'"),
    ("E'\\\\' || created_at", "'\\\\'"),
    ("", "non-empty"),
]


@pytest.mark.parametrize(("expression", "why"), HOSTILE)
def test_a_hostile_expression_is_refused_naming_the_field_and_nothing_is_created(postgres, database, expression, why):
    """Refused by its text when the spec is made, or else by the server: by the check itself, by
    provisioning and by a purge alike; no schema, job, view or row is created or deleted."""
    with postgres.connect(database) as conn:
        make_sessions(conn, "sessions", ["expired", "live"], 10, index=False)
        conn.execute("DROP SCHEMA IF EXISTS expiry CASCADE")
        try:
            cleanup = spec(expiry_expression=expression)
        except CleanupError as error:
            messages = [str(error)]
        else:
            messages = []
            for attempt in (
                lambda: check_expiry_expression(conn, cleanup),
                lambda: provision(connector(postgres, database), cleanup),
                lambda: plan(conn, cleanup),
                lambda: purge(conn, cleanup),
            ):
                with pytest.raises(CleanupError) as refused:
                    attempt()
                messages.append(str(refused.value))
        for message in messages:
            assert message.startswith("expiry_expression: ") and why in message, message
        assert len(ids(conn, "sessions")) == 2
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'expiry'").fetchone()[0] == 0
        assert (
            conn.execute("SELECT count(*) FROM pg_class WHERE relname = 'expiry_expression_check'").fetchone()[0] == 0
        )
    with postgres.connect() as cron:  # pg_cron's database
        if cron.execute("SELECT to_regclass('cron.job')").fetchone()[0]:  # pg_cron created by another test
            assert cron.execute("SELECT count(*) FROM cron.job WHERE jobname = 'sessions'").fetchone()[0] == 0


def test_the_job_settings_name_the_expression_field(postgres):
    from expiry.runtime.handlers.postgres_work import purge_spec
    from expiry.runtime.jobs.config import parse_job

    base = {
        "kind": "pg-purge",
        "job_name": "sessions",
        "table_name": "sessions",
        "postgres": {"host": "db", "database": "app", "secret_arn": "arn:aws:secretsmanager:us-east-1:1:secret:x"},
    }
    job = parse_job({**base, "purge": {"expiry_expression": EXPRESSION}})
    assert purge_spec(job).expiry_expression == EXPRESSION
    with pytest.raises(JobConfigError, match=r"purge\.expiry_expression: .*';'"):
        purge_spec(parse_job({**base, "purge": {"expiry_expression": "1; drop table x"}}))
    with pytest.raises(JobConfigError, match=r"purge\.expiry_expression: give expiry_column or"):
        parse_job({**base, "purge": {"expiry_expression": EXPRESSION, "expiry_column": "expires_at"}})
