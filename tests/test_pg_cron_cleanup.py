"""PgCronCleanup under the mocks, and its dynamic provider called the way the engine calls it:
unpickled from the inputs the mocks recorded, then create, diff, update and delete on a real
PostgreSQL with pg_cron."""

import itertools

import psycopg
import pytest
from pulumi_harness import engine_provider, is_secret, plain_inputs

from expiry.components.pg_cron_cleanup import PgCronCleanup, pg_cron_parameter_group, pg_cron_parameters
from expiry.runtime.postgres.spec import provisioning_code

JOB = "pulumi-python:dynamic/expiry:PgCronJob"
NUMBER = itertools.count()


@pytest.fixture
def app(postgres):
    name = postgres.new_database("pulumi")
    with postgres.connect(name) as conn:
        conn.execute("CREATE TABLE attributes (id serial, ttl_timestamp bigint)")
        conn.execute("CREATE INDEX ON attributes (ttl_timestamp)")  # the batches walk it
        conn.execute(
            "INSERT INTO attributes (ttl_timestamp) SELECT extract(epoch from now())::bigint - 60 "
            "FROM generate_series(1, 5)"
        )
        conn.execute("INSERT INTO attributes (ttl_timestamp) VALUES (NULL), (extract(epoch from now())::bigint + 600)")
    return name


def cleanup_args(postgres, database: str, **overrides):
    return {
        "table": "attributes",
        "expiry_column": "ttl_timestamp",
        "host": "127.0.0.1",
        "port": postgres.port,
        "database": database,
        "user": "postgres",
        "password": "not-used-with-trust-auth",
        **overrides,
    }


def recorded_job(harness, args, name: str = "purge-attributes") -> dict:
    harness.run(lambda: PgCronCleanup(name, args))
    return harness.one(JOB).inputs


def cron_job(postgres, name: str):
    with postgres.connect() as cron:
        return cron.execute(
            "SELECT jobid, schedule, database, command FROM cron.job WHERE jobname = %s", (name,)
        ).fetchone()


def test_provider_lifecycle_as_the_engine_runs_it(pulumi_mocks, postgres, app):
    inputs = plain_inputs(recorded_job(pulumi_mocks, cleanup_args(postgres, app)))
    provider = engine_provider(inputs)  # unpickles __provider exactly as `pulumi up` does
    created = provider.create(inputs)
    assert created.id == f"{app}/purge-attributes"
    assert created.outs["cron_database"] == "postgres" and created.outs["column_kind"] == "epoch"
    job_id, schedule, database, command = cron_job(postgres, "purge-attributes")
    assert (job_id, schedule, database) == (created.outs["job_id"], "0 3 * * *", app)
    assert command == '/* expiry:owned job=purge-attributes */ CALL "expiry"."purge-attributes"()'
    assert cron_job(postgres, "purge-attributes-history")[1] == "17 * * * *"

    news = plain_inputs(recorded_again(pulumi_mocks, postgres, app, schedule="*/5 * * * *", batch_size=100))
    diff = provider.diff(created.id, created.outs, news)
    assert diff.changes is True and diff.replaces == []
    updated = provider.update(created.id, created.outs, news)
    assert updated.outs["job_id"] == job_id  # the same job, changed in place
    assert cron_job(postgres, "purge-attributes")[1] == "*/5 * * * *"
    assert provider.diff(created.id, updated.outs, news).changes is False

    # A cleanup provisioned by an older Expiry (no digest, or another) is provisioned again, in place:
    # the database gets this version's procedure although no setting changed.
    assert news["provisioning"] == provisioning_code()
    for older in (
        {k: val for k, val in updated.outs.items() if k != "provisioning"},
        {**updated.outs, "provisioning": "0"},
    ):
        upgrade = provider.diff(created.id, older, news)
        assert upgrade.changes is True and upgrade.replaces == []

    moved = plain_inputs(recorded_again(pulumi_mocks, postgres, app, table="other", schedule="*/5 * * * *"))
    assert set(provider.diff(created.id, updated.outs, moved).replaces) == {"table"}

    provider.delete(created.id, updated.outs)
    assert cron_job(postgres, "purge-attributes") is None and cron_job(postgres, "purge-attributes-history") is None
    with postgres.connect(app) as conn:
        assert conn.execute("SELECT count(*) FROM attributes").fetchone()[0] == 7  # the table is left alone
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'expiry'").fetchone()[0] == 0


def test_archive_and_batch_sizing_reach_the_procedure(pulumi_mocks, postgres, app):
    args = cleanup_args(
        postgres, app, archive=True, archive_days=3, target_batch_ms=0, batch_size=2, allow_mass_deletion=True
    )
    inputs = plain_inputs(recorded_job(pulumi_mocks, args))
    provider = engine_provider(inputs)
    created = provider.create(inputs)
    with postgres.connect(app) as conn:
        images = conn.execute(
            "SELECT to_jsonb(a) FROM attributes a WHERE ttl_timestamp < extract(epoch from now()) ORDER BY id"
        ).fetchall()
        conn.execute('CALL expiry."purge-attributes"()')
        archived = conn.execute(
            "SELECT row_data FROM expiry.\"purge-attributes_archive\" ORDER BY (row_data->>'id')::int"
        ).fetchall()
        sizes = conn.execute('SELECT batch_rows, rows_deleted FROM expiry."purge-attributes_batches" ORDER BY batch')
        assert archived == images and len(images) == 5 and sizes.fetchall() == [(2, 2), (2, 2), (2, 1)]
    provider.delete(created.id, created.outs)


def recorded_again(harness, postgres, database, **overrides) -> dict:
    before = len(harness.of_type(JOB))
    harness.run(
        lambda: PgCronCleanup(
            f"again-{next(NUMBER)}", cleanup_args(postgres, database, job_name="purge-attributes", **overrides)
        )
    )
    return harness.of_type(JOB)[before].inputs


def test_dsn_connection(pulumi_mocks, postgres, app):
    inputs = plain_inputs(
        recorded_job(
            pulumi_mocks,
            {"table": "attributes", "expiry_column": "ttl_timestamp", "dsn": postgres.dsn(app), "create_index": True},
        )
    )
    with psycopg.connect(postgres.dsn(app), autocommit=True) as conn:
        conn.execute("DROP INDEX attributes_ttl_timestamp_idx")  # the one create_index is to create
    provider = engine_provider(inputs)
    created = provider.create(inputs)
    assert created.outs["created_index"] is True and created.outs["expiry_column_indexed"] is True
    provider.delete(created.id, created.outs)


def test_password_and_dsn_are_secrets_in_inputs_and_outputs(pulumi_mocks, postgres):
    recorded_job(pulumi_mocks, cleanup_args(postgres, "app"))
    registered = pulumi_mocks.one(JOB)
    assert is_secret(registered.inputs["password"])
    assert set(registered.additional_secret_outputs) >= {"password", "dsn"}
    assert "not-used-with-trust-auth" not in repr({k: v for k, v in registered.inputs.items() if k != "password"})
    pulumi_mocks.run(
        lambda: PgCronCleanup(
            "by-dsn", {"table": "t", "expiry_column": "e", "dsn": "host=db dbname=app user=u password=s3cret"}
        )
    )
    assert is_secret(pulumi_mocks.one(JOB, "by-dsn-job").inputs["dsn"])


def test_provider_error_without_pg_cron_names_the_setting(pulumi_mocks, postgres_without_cron):
    with postgres_without_cron.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS attributes (id int, ttl_timestamp bigint)")
    inputs = plain_inputs(
        recorded_job(
            pulumi_mocks, {"table": "attributes", "expiry_column": "ttl_timestamp", "dsn": postgres_without_cron.dsn()}
        )
    )
    with pytest.raises(ValueError, match="pg_cron is not loaded: add pg_cron to shared_preload_libraries"):
        engine_provider(inputs).create(inputs)


BAD = [
    ({"schedule": "0 0 3 * * ?"}, "PgCronCleanup: schedule: pg_cron needs 5 fields"),
    ({"schedule": "@daily"}, "PgCronCleanup: schedule: pg_cron needs 5 fields"),
    ({"schedule": "*/0 * * * *"}, "PgCronCleanup: schedule: cron minute field '*/0': the step must be at least 1"),
    ({"schedule": "0 0/5 * * *"}, "PgCronCleanup: schedule: cron hour field '0/5': a /step needs * or a range"),
    ({"breaker_max_share": 2}, "PgCronCleanup: breaker_max_share: must be a number in 0..1"),
    ({"breaker_max_count": -5}, "PgCronCleanup: breaker_max_count: must be a whole number of rows"),
    ({"allow_mass_deletion": "yes"}, "PgCronCleanup: allow_mass_deletion: must be true or false"),
    ({"batch_size": 0}, "PgCronCleanup: batch_size: must be an integer in 1..1000000"),
    ({"max_runtime_seconds": -1}, "PgCronCleanup: max_runtime_seconds: must be an integer"),
    ({"job_name": "x" * 60}, "PgCronCleanup: job_name: at most 48 bytes"),
    ({"extra_column": "kind"}, "PgCronCleanup: extra_column: extra_column and extra_value go together"),
    ({"dsn": "host=db"}, "PgCronCleanup: dsn: give either dsn or host, port, database, user, password, not both"),
    ({"host": None}, "PgCronCleanup: host: is required (or give dsn)"),
    ({"table": "bad\x00name"}, "PgCronCleanup: table: must be a name"),
    ({"tabel": "typo"}, "PgCronCleanup: args: unknown fields ['tabel']"),
    ({"mode": "truncate"}, "PgCronCleanup: mode: must be one of delete, drop-partitions"),
    ({"archive": "yes"}, "PgCronCleanup: archive: must be true or false"),
    ({"archive_days": 0}, "PgCronCleanup: archive_days: must be an integer in 1..3650"),
    ({"target_batch_ms": -1}, "PgCronCleanup: target_batch_ms: must be an integer in 0..60000"),
    ({"max_batch_size": 10}, "PgCronCleanup: max_batch_size: must be at least batch_size"),
    ({"mode": "drop-partitions", "archive": True}, "PgCronCleanup: archive: only with mode delete"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[m.split(": ")[1] for _, m in BAD])
def test_bad_input_is_refused_before_anything_registers(pulumi_mocks, postgres, overrides, message):
    with pytest.raises(ValueError) as error:
        pulumi_mocks.run(lambda: PgCronCleanup("bad", cleanup_args(postgres, "app", **overrides)))
    assert message in str(error.value)
    assert pulumi_mocks.resources == []


def test_rds_parameter_group_loads_pg_cron(pulumi_mocks):
    params = {p.name: p for p in pg_cron_parameters("app", ("pg_stat_statements",))}
    assert params["shared_preload_libraries"].value == "pg_stat_statements,pg_cron"
    assert params["cron.database_name"].value == "app"
    assert {p.apply_method for p in params.values()} == {"pending-reboot"}
    pulumi_mocks.run(lambda: pg_cron_parameter_group("pg", family="postgres16"))
    group = pulumi_mocks.one("aws:rds/parameterGroup:ParameterGroup").inputs
    assert group["family"] == "postgres16"
    assert {p["name"] for p in group["parameters"]} == {"shared_preload_libraries", "cron.database_name"}
    with pytest.raises(ValueError, match="family: must be a PostgreSQL family"):
        pg_cron_parameter_group("mysql", family="mysql8.0")


UNPICKLE_AND_CALL = """
import json, sys
sys.path[:0] = [sys.argv[1]]
from pulumi_harness import engine_provider
inputs = json.load(open(sys.argv[2]))
provider = engine_provider(inputs)
created = provider.create(dict(inputs))
print(json.dumps({"id": created.id, "job_id": created.outs["job_id"]}))
provider.delete(created.id, created.outs)
"""


def test_pickled_provider_runs_in_a_fresh_interpreter(pulumi_mocks, postgres, app, tmp_path):
    """As the engine's dynamic-provider process does: another process, outside the project directory."""
    import json
    import subprocess
    import sys

    inputs = recorded_job(pulumi_mocks, cleanup_args(postgres, app))
    (tmp_path / "inputs.json").write_text(json.dumps(inputs))
    tests_dir = str(__import__("pathlib").Path(__file__).parent)
    result = subprocess.run(
        [sys.executable, "-c", UNPICKLE_AND_CALL, tests_dir, str(tmp_path / "inputs.json")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["id"] == f"{app}/purge-attributes"
    assert cron_job(postgres, "purge-attributes") is None  # and deleted again
