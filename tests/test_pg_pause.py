"""Pausing a PgCronCleanup (issue 21): `paused` sets its pg_cron jobs inactive in place (cron.alter_job) and
active again, through the dynamic provider, the VPC provisioner and `expiry pause|resume --postgres DSN
--job-name NAME`; only jobs carrying Expiry's marker are touched; pg_cron runs no paused job. Against the test
PostgreSQL 15 with pg_cron, and under Pulumi's mocks."""

import io
import json
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pulumi_harness import engine_provider, plain_inputs
from stack_config import stack_config
from test_stack_program import run_program

from expiry.components.pg_cron_cleanup import PgCronCleanup
from expiry.runtime.cli import USAGE, main
from expiry.runtime.postgres.connection import Connector
from expiry.runtime.postgres.provision import handle, provision, unprovision
from expiry.runtime.postgres.spec import CleanupError, PurgeSpec

JOB = "pulumi-python:dynamic/expiry:PgCronJob"
INVOCATION = "aws:lambda/invocation:Invocation"
NAME = "purge-attributes"
HISTORY = f"{NAME}-history"


def make_app(postgres, expired: int = 5) -> str:
    """A fresh database with `attributes`: ``expired`` expired rows, one permanent, one live (and the index)."""
    name = postgres.new_database("paused")
    with postgres.connect(name) as conn:
        conn.execute("CREATE TABLE attributes (id serial, ttl_timestamp bigint)")
        conn.execute("CREATE INDEX ON attributes (ttl_timestamp)")
        conn.execute(
            "INSERT INTO attributes (ttl_timestamp) SELECT extract(epoch from now())::bigint - 60 "
            "FROM generate_series(1, %s)",
            (expired,),
        )
        conn.execute("INSERT INTO attributes (ttl_timestamp) VALUES (NULL), (extract(epoch from now())::bigint + 600)")
    return name


@pytest.fixture
def app(postgres):
    return make_app(postgres)


def spec(job_name: str = NAME, **overrides) -> PurgeSpec:
    return PurgeSpec(
        job_name=job_name, table="attributes", expiry_column="ttl_timestamp", allow_mass_deletion=True, **overrides
    )


def rows(postgres, database: str) -> int:
    with postgres.connect(database) as conn:
        return conn.execute("SELECT count(*) FROM attributes").fetchone()[0]


def jobs(postgres, *names: str) -> list[tuple]:
    """(jobname, jobid, active, schedule, command) of the jobs named ``names``."""
    with postgres.connect() as cron:
        return cron.execute(
            "SELECT jobname, jobid, active, schedule, command FROM cron.job WHERE jobname = ANY(%s) ORDER BY jobname",
            (list(names),),
        ).fetchall()


def active(postgres, *names: str) -> dict[str, bool]:
    return {name: is_active for name, _, is_active, _, _ in jobs(postgres, *names)}


def ids(postgres, *names: str) -> dict[str, int]:
    return {name: job_id for name, job_id, _, _, _ in jobs(postgres, *names)}


def cron_tick(postgres, *names: str) -> None:
    """What pg_cron does when the schedules of ``names`` fire: run the command of each active job, in its
    database, as its role. (test_pauses_hold_across_real_pg_cron_ticks waits for pg_cron itself.)"""
    with postgres.connect() as cron:
        due = cron.execute(
            "SELECT database, username, command FROM cron.job WHERE jobname = ANY(%s) AND active", (list(names),)
        ).fetchall()
    for database, role, command in due:
        with postgres.connect(database) as conn:
            conn.execute(f'SET ROLE "{role}"')
            conn.execute(command)


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), out, err, io.StringIO())
    return code, out.getvalue(), err.getvalue()


def objects(postgres, database: str) -> dict[str, int]:
    """The oids of what provisioning created in the table's database: the same oids mean nothing was re-created."""
    with postgres.connect(database) as conn:
        return dict(
            conn.execute(
                "SELECT c.relname, c.oid::bigint FROM pg_class c WHERE c.relnamespace = 'expiry'::regnamespace "
                "UNION ALL SELECT p.proname, p.oid::bigint FROM pg_proc p WHERE p.pronamespace = 'expiry'::regnamespace"
            ).fetchall()
        )


# --- provisioning -------------------------------------------------------------------------------------------


def test_a_paused_cleanup_is_provisioned_inactive_and_purges_nothing_until_resumed_in_place(postgres, app):
    connector = Connector(postgres.dsn(app), app)
    state = provision(connector, spec(paused=True))
    try:
        assert active(postgres, NAME, HISTORY) == {NAME: False, HISTORY: False}
        first_ids, first_objects = ids(postgres, NAME, HISTORY), objects(postgres, app)
        cron_tick(postgres, NAME, HISTORY)
        assert rows(postgres, app) == 7  # nothing purged: pg_cron runs no inactive job

        resumed = provision(connector, spec(paused=False))
        assert resumed["job_id"] == state["job_id"] and resumed["history_job_id"] == state["history_job_id"]
        assert active(postgres, NAME, HISTORY) == {NAME: True, HISTORY: True}
        assert ids(postgres, NAME, HISTORY) == first_ids and objects(postgres, app) == first_objects
        cron_tick(postgres, NAME)
        assert rows(postgres, app) == 2  # the five expired rows purged; the permanent and the live row left

        provision(connector, spec(paused=True, schedule="*/5 * * * *"))  # paused again, with another change
        (purge, history) = jobs(postgres, NAME, HISTORY)
        assert (purge[1], purge[2], purge[3]) == (state["job_id"], False, "*/5 * * * *") and history[2] is False
    finally:
        unprovision(connector, spec())
    assert jobs(postgres, NAME, HISTORY) == []


def test_provisioning_paused_refuses_a_job_of_the_name_without_the_marker_and_leaves_it_alone(postgres, app):
    with postgres.connect() as cron:
        cron.execute("SELECT cron.schedule(%s, '0 4 * * *', 'SELECT 1')", (NAME,))
    try:
        before = jobs(postgres, NAME)
        with pytest.raises(CleanupError, match=f"pg_cron job '{NAME}' of role 'postgres'"):
            provision(Connector(postgres.dsn(app), app), spec(paused=True))
        assert jobs(postgres, NAME) == before and before[0][2] is True
    finally:
        with postgres.connect() as cron:
            cron.execute("SELECT cron.unschedule(%s)", (NAME,))


def test_paused_is_checked_by_name(postgres):
    for value in ("yes", 1, None):
        with pytest.raises(CleanupError, match=rf"^paused: must be true or false, got {value!r}"):
            spec(paused=value)


def test_a_non_superuser_needs_alter_job_to_pause_and_is_told_so(postgres):
    """In pg_cron's own database cron.schedule needs no grant, but pausing calls cron.alter_job (revoked from
    PUBLIC in pg_cron 1.4): provisioning paused names the grant before it writes anything."""
    with postgres.connect() as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        conn.execute("CREATE ROLE pauser LOGIN")
        for statement in (
            "GRANT pg_read_all_settings TO pauser",
            "GRANT USAGE ON SCHEMA cron TO pauser",
            "GRANT CREATE ON DATABASE postgres TO pauser",
            "CREATE TABLE pauser_events (id serial, ttl_timestamp bigint)",
            "GRANT SELECT, DELETE ON pauser_events TO pauser",
        ):
            conn.execute(statement)
    dsn = postgres.dsn().replace("user=postgres", "user=pauser")
    cleanup = PurgeSpec(
        job_name="pauser", table="pauser_events", expiry_column="ttl_timestamp", schema="pauser_expiry", paused=True
    )
    alter_job = "cron.alter_job(bigint,text,text,text,text,boolean)"
    missing = f"missing grants for role 'pauser': GRANT EXECUTE ON FUNCTION {alter_job} TO \"pauser\";"
    with pytest.raises(CleanupError, match=f"^{re.escape(missing)}$"):
        provision(Connector(dsn, "postgres"), cleanup)
    assert jobs(postgres, "pauser", "pauser-history") == []
    with postgres.connect() as conn:
        conn.execute(f"GRANT EXECUTE ON FUNCTION {alter_job} TO pauser")
    provision(Connector(dsn, "postgres"), cleanup)
    try:
        assert active(postgres, "pauser", "pauser-history") == {"pauser": False, "pauser-history": False}
    finally:
        unprovision(Connector(dsn, "postgres"), cleanup)
        with postgres.connect() as conn:
            conn.execute("DROP TABLE pauser_events")
    assert jobs(postgres, "pauser", "pauser-history") == []


@settings(max_examples=12, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["provision", "cli"]), st.booleans()), min_size=1, max_size=6))
def test_the_last_pause_or_resume_wins_and_nothing_is_re_created(postgres, steps):
    """Any sequence of provisioning with `paused` and `expiry pause|resume`: the jobs are active exactly when
    the last step resumed, keep their ids and objects, and nothing is purged while paused."""
    database = make_app(postgres)
    connector = Connector(postgres.dsn(database), database)
    state = provision(connector, spec(job_name="prop", paused=True))
    first = objects(postgres, database)
    try:
        for how, paused in steps:
            if how == "provision":
                provision(connector, spec(job_name="prop", paused=paused))
            else:
                code, _, err = cli(
                    "pause" if paused else "resume", "--postgres", postgres.dsn(database), "--job-name", "prop"
                )
                assert code == 0, err
        last = steps[-1][1]
        assert active(postgres, "prop", "prop-history") == {"prop": not last, "prop-history": not last}
        assert ids(postgres, "prop") == {"prop": state["job_id"]} and objects(postgres, database) == first
        cron_tick(postgres, "prop")
        assert rows(postgres, database) == (7 if last else 2)
    finally:
        unprovision(connector, spec(job_name="prop"))


# --- the CLI ------------------------------------------------------------------------------------------------


def status(postgres, database: str) -> dict:
    code, out, err = cli(
        "status",
        "--postgres",
        postgres.dsn(database),
        "--table",
        "attributes",
        "--expiry-column",
        "ttl_timestamp",
        "--job-name",
        NAME,
        "--json",
    )
    assert code == 0, err
    return json.loads(out)


def test_cli_pause_status_resume_round_trip(postgres, app):
    connector = Connector(postgres.dsn(app), app)
    provision(connector, spec())
    target = ("--postgres", postgres.dsn(app), "--job-name", NAME, "--json")
    try:
        assert status(postgres, app)["paused"] == "no"
        code, out, err = cli("pause", *target)
        assert code == 0, err
        paused = json.loads(out)
        assert paused["paused"] == "yes" and paused["target"]["database"] == "postgres"  # pg_cron's database
        assert [(j["name"], j["active"]) for j in paused["pg_cron_jobs_changed"]] == [
            (NAME, "True -> False"),
            (HISTORY, "True -> False"),
        ]
        assert "Pulumi does not know of this change" in err
        assert active(postgres, NAME, HISTORY) == {NAME: False, HISTORY: False}
        shown = status(postgres, app)
        assert shown["paused"] == "yes" and {j["name"] for j in shown["pg_cron_jobs"]} == {NAME, HISTORY}
        cron_tick(postgres, NAME, HISTORY)
        assert rows(postgres, app) == 7

        code, out, err = cli("pause", *target)  # already paused: nothing changes, no warning
        assert code == 0 and json.loads(out)["pg_cron_jobs_changed"] == [] and err == ""

        code, out, err = cli("resume", *target)
        assert code == 0 and json.loads(out)["paused"] == "no", err
        assert (
            active(postgres, NAME, HISTORY) == {NAME: True, HISTORY: True} and status(postgres, app)["paused"] == "no"
        )
        with postgres.connect() as cron:  # one job paused by hand: partly
            cron.execute("SELECT cron.alter_job(jobid, active => false) FROM cron.job WHERE jobname = %s", (HISTORY,))
        assert status(postgres, app)["paused"] == "partly"
    finally:
        unprovision(connector, spec())
    gone = status(postgres, app)
    assert gone["paused"] == "unknown" and NAME in gone["paused_note"]


def test_cli_refuses_a_job_without_the_marker_and_names_it(postgres, app):
    with postgres.connect() as cron:
        cron.execute("SELECT cron.schedule(%s, '0 4 * * *', 'SELECT 1')", (NAME,))
    try:
        before = jobs(postgres, NAME)
        for command in ("pause", "resume"):
            code, out, err = cli(command, "--postgres", postgres.dsn(app), "--job-name", NAME)
            assert code == USAGE and out == ""
            assert err.startswith(f"expiry: error: job_name: pg_cron job '{NAME}' of role 'postgres' was not created")
            assert "nothing was changed" in err and len(err.strip().splitlines()) == 1
        assert jobs(postgres, NAME) == before  # still active, same schedule and command
        assert status(postgres, app)["paused"] == "unknown"
    finally:
        with postgres.connect() as cron:
            cron.execute("SELECT cron.unschedule(%s)", (NAME,))


def test_cli_refuses_the_whole_cleanup_when_one_job_of_its_names_is_not_expiry_s(postgres, app):
    """Expiry's purge job with a stranger's `<name>-history` beside it (another role): neither is touched."""
    connector = Connector(postgres.dsn(app), app)
    provision(connector, spec())
    with postgres.connect() as cron:
        cron.execute("CREATE ROLE stranger LOGIN")
        cron.execute("GRANT USAGE ON SCHEMA cron TO stranger")
        cron.execute("SET ROLE stranger")
        cron.execute("SELECT cron.schedule(%s, '0 5 * * *', 'SELECT 2')", (HISTORY,))
        cron.execute("RESET ROLE")
    try:
        code, _, err = cli("pause", "--postgres", postgres.dsn(app), "--job-name", NAME)
        assert code == USAGE and f"pg_cron job '{HISTORY}' of role 'stranger'" in err and "nothing was changed" in err
        with postgres.connect() as cron:
            assert cron.execute(
                "SELECT bool_and(active) FROM cron.job WHERE jobname = ANY(%s)", ([NAME, HISTORY],)
            ).fetchone()[0]
    finally:
        with postgres.connect() as cron:
            cron.execute("DELETE FROM cron.job WHERE username = 'stranger'")
            cron.execute("REVOKE USAGE ON SCHEMA cron FROM stranger")
            cron.execute("DROP ROLE stranger")
        unprovision(connector, spec())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("pause",), "give --function NAME (a sweeper or cascade), or --postgres DSN with --job-name NAME"),
        (("pause", "--postgres", "host=127.0.0.1"), "a PgCronCleanup is paused with --postgres DSN and --job-name"),
        (("resume", "--job-name", NAME), "a PgCronCleanup is paused with --postgres DSN and --job-name"),
        (("pause", "--postgres", "x=", "--job-name", NAME), "--postgres: not a libpq connection string"),
        (
            ("pause", "--function", "f", "--postgres", "host=127.0.0.1", "--job-name", NAME),
            "a PgCronCleanup is paused with --postgres DSN and --job-name NAME (and no --function)",
        ),
    ],
)
def test_cli_usage_errors(args, message):
    code, _, err = cli(*args)
    assert code == USAGE and message in err and len(err.strip().splitlines()) == 1


def test_cli_names_a_job_that_does_not_exist(postgres, app):
    code, _, err = cli("pause", "--postgres", postgres.dsn(app), "--job-name", "no-such-job")
    assert code == USAGE
    assert err.strip() == (
        "expiry: error: job_name: no pg_cron job 'no-such-job' in pg_cron's database 'postgres' "
        "(that the connected role may see); nothing was changed"
    )


# --- the component, its provider and the VPC provisioner ----------------------------------------------------


def cleanup_args(postgres, database: str, **overrides):
    return {
        "table": "attributes",
        "expiry_column": "ttl_timestamp",
        "dsn": postgres.dsn(database),
        "allow_mass_deletion": True,
        **overrides,
    }


def recorded(harness, args, name: str = NAME) -> dict:
    before = len(harness.of_type(JOB))
    harness.run(lambda: PgCronCleanup(name, args))
    return plain_inputs(harness.of_type(JOB)[before].inputs)


def test_the_component_passes_paused_and_the_provider_updates_in_place(pulumi_mocks, postgres, app):
    running = recorded(pulumi_mocks, cleanup_args(postgres, app))
    paused = recorded(pulumi_mocks, cleanup_args(postgres, app, paused=True))
    assert running["paused"] is False and paused["paused"] is True
    assert {k for k in paused if paused[k] != running[k]} == {"paused"}  # only the switch differs

    provider = engine_provider(running)
    created = provider.create(running)
    try:
        diff = provider.diff(created.id, created.outs, paused)
        assert diff.changes is True and diff.replaces == []  # an update in place, not a replacement
        first = objects(postgres, app)
        updated = provider.update(created.id, created.outs, paused)
        assert (
            updated.outs["job_id"] == created.outs["job_id"]
            and updated.outs["history_job_id"] == created.outs["history_job_id"]
        )
        assert active(postgres, NAME, HISTORY) == {NAME: False, HISTORY: False} and objects(postgres, app) == first
        assert provider.diff(created.id, updated.outs, paused).changes is False
        cron_tick(postgres, NAME, HISTORY)
        assert rows(postgres, app) == 7
        resumed = provider.update(created.id, updated.outs, running)
        assert resumed.outs["job_id"] == created.outs["job_id"] and active(postgres, NAME) == {NAME: True}
    finally:
        provider.delete(created.id, created.outs)


@pytest.mark.parametrize("value", ["yes", 1, "true"])
def test_a_paused_that_is_not_a_boolean_is_refused_by_name_before_anything_registers(pulumi_mocks, postgres, value):
    with pytest.raises(ValueError, match=rf"^PgCronCleanup: paused: must be true or false, got {value!r}"):
        pulumi_mocks.run(lambda: PgCronCleanup("bad", cleanup_args(postgres, "app", paused=value)))
    assert pulumi_mocks.resources == []


def test_vpc_mode_passes_paused_and_its_provisioner_pauses_in_place(
    pulumi_mocks, aws_in_process, postgres, app, tmp_path, monkeypatch
):
    monkeypatch.setenv("EXPIRY_BUILD_DIR", str(tmp_path / "vpc-build"))
    vpc = {
        "table": "attributes",
        "expiry_column": "ttl_timestamp",
        "host": "127.0.0.1",
        "port": postgres.port,
        "database": app,
        "secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-XyZ",
        "subnet_ids": ["subnet-a"],
        "security_group_ids": ["sg-a"],
        "psycopg_layer_arn": "arn:aws:lambda:us-east-1:123456789012:layer:psycopg:1",
    }
    pulumi_mocks.run(lambda: PgCronCleanup(NAME, vpc))
    pulumi_mocks.run(lambda: PgCronCleanup(NAME, {**vpc, "paused": True}))
    running, paused = (json.loads(r.inputs["input"]) for r in pulumi_mocks.of_type(INVOCATION))
    assert running["cleanup"]["paused"] is False and paused["cleanup"]["paused"] is True
    assert {**paused, "cleanup": {**paused["cleanup"], "paused": False}} == running  # nothing else differs

    secrets = aws_in_process.client("secretsmanager")
    arn = secrets.create_secret(Name="db", SecretString=json.dumps({"username": "postgres", "password": "x"}))["ARN"]
    for payload in (running, paused):
        payload["connection"]["secret_arn"] = arn
    created = handle({**running, "tf": {"action": "create", "prev_input": None}}, lambda: secrets)
    try:
        first = objects(postgres, app)
        updated = handle({**paused, "tf": {"action": "update", "prev_input": running}}, lambda: secrets)
        assert updated["job_id"] == created["job_id"] and objects(postgres, app) == first
        assert active(postgres, NAME, HISTORY) == {NAME: False, HISTORY: False}
        handle({**running, "tf": {"action": "update", "prev_input": paused}}, lambda: secrets)
        assert active(postgres, NAME, HISTORY) == {NAME: True, HISTORY: True}
    finally:
        handle({**running, "tf": {"action": "delete", "prev_input": running}}, lambda: secrets)


def test_the_stack_s_paused_pauses_its_pg_cron_cleanup(pulumi_mocks):
    postgres = {"postgresHost": "db.example.com", "postgresPassword": "pw"}
    run_program(pulumi_mocks, stack_config("dev", **postgres))
    assert pulumi_mocks.one(JOB).inputs["paused"] is False
    pulumi_mocks.monitor.registered.clear()
    run_program(pulumi_mocks, stack_config("dev", paused=True, **postgres))
    assert pulumi_mocks.one(JOB).inputs["paused"] is True


# --- pg_cron itself -----------------------------------------------------------------------------------------


def test_pauses_hold_across_real_pg_cron_ticks(postgres):
    """Waits for pg_cron (one or two ticks, at most about 150 s). A paused cleanup and a running one, both every
    minute: once pg_cron has run the running one, the paused one has no run and all its rows; resumed by the
    CLI, pg_cron runs it at its next tick."""
    paused_db, running_db = make_app(postgres), make_app(postgres)
    paused = Connector(postgres.dsn(paused_db), paused_db)
    running = Connector(postgres.dsn(running_db), running_db)
    state = provision(paused, spec("tick-paused", schedule="* * * * *", paused=True))
    control = provision(running, spec("tick-running", schedule="* * * * *"))
    try:
        assert wait_for_run(postgres, control["job_id"]) == "succeeded"
        assert runs(postgres, state["job_id"]) == [] and rows(postgres, paused_db) == 7
        assert rows(postgres, running_db) == 2
        code, _, err = cli("resume", "--postgres", postgres.dsn(paused_db), "--job-name", "tick-paused")
        assert code == 0, err
        assert wait_for_run(postgres, state["job_id"]) == "succeeded"
        assert rows(postgres, paused_db) == 2
    finally:
        unprovision(paused, spec("tick-paused"))
        unprovision(running, spec("tick-running"))


def runs(postgres, job_id: int) -> list[tuple]:
    with postgres.connect() as cron:
        return cron.execute(
            "SELECT status FROM cron.job_run_details WHERE jobid = %s AND status <> 'running'", (job_id,)
        ).fetchall()


def wait_for_run(postgres, job_id: int) -> str:
    deadline = time.monotonic() + 80
    while time.monotonic() < deadline:
        done = runs(postgres, job_id)
        if done:
            return done[0][0]
        time.sleep(1)
    raise AssertionError(f"pg_cron did not run job {job_id} within 80 s")
