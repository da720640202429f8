"""PostgreSQL jobs run from Lambda (purge without pg_cron, and the pg_cron monitor) against the test
PostgreSQL, with the password from Secrets Manager in moto (in-process and moto_server)."""

import io
import json

import psycopg
import pytest
from uploads_world import run

from expiry.runtime.handlers.postgres_work import monitor_work, purge_work
from expiry.runtime.jobs import metrics
from expiry.runtime.jobs.config import parse_job
from expiry.runtime.jobs.runner import run_job
from expiry.runtime.postgres.connection import Connector
from expiry.runtime.postgres.provision import provision, unprovision
from expiry.runtime.postgres.spec import PurgeSpec


@pytest.fixture
def app(postgres):
    name = postgres.new_database("jobs")
    with postgres.connect(name) as conn:
        conn.execute("CREATE TABLE attributes (id serial, ttl_timestamp timestamptz)")
        conn.execute("CREATE INDEX ON attributes (ttl_timestamp)")  # the batches walk it
        conn.execute(
            "INSERT INTO attributes (ttl_timestamp) SELECT now() - interval '2 hours' FROM generate_series(1, 25)"
        )
        conn.execute("INSERT INTO attributes (ttl_timestamp) VALUES (NULL)")
        conn.execute(
            "INSERT INTO attributes (ttl_timestamp) SELECT now() + interval '1 day' FROM generate_series(1, 30)"
        )
    return name


def pg_job(kind: str, postgres, database: str, secret_arn: str, **extra) -> object:
    return parse_job(
        {
            "kind": kind,
            "job_name": "purge-attributes",
            "table_name": "attributes",
            "namespace": "Expiry",
            "postgres": {"host": "127.0.0.1", "port": postgres.port, "database": database, "secret_arn": secret_arn},
            "purge": {"expiry_column": "ttl_timestamp", "batch_size": 10, "target_batch_ms": 0},
            **extra,
        }
    )


@pytest.fixture
def secret(aws):
    arn = aws.client("secretsmanager").create_secret(
        Name="db", SecretString=json.dumps({"username": "postgres", "password": "unused-with-trust"})
    )["ARN"]
    return aws, arn


def clients(aws):
    return aws.client


def count(postgres, database: str) -> int:
    with postgres.connect(database) as conn:
        return conn.execute("SELECT count(*) FROM attributes").fetchone()[0]


def test_lambda_purge_deletes_expired_rows_in_batches(postgres, app, secret):
    aws, arn = secret
    result = run(pg_job("pg-purge", postgres, app, arn), purge_work(clients(aws)))
    assert result.summary["rows_deleted"] == 25 and result.summary["batches"] == 3
    assert count(postgres, app) == 31
    assert result.emf[metrics.ROWS_PURGED] == 25 and result.emf[metrics.SWEEP_SUCCEEDED] == 1
    assert result.emf[metrics.MASS_DELETION_REFUSED] == 0 and result.summary["plan"]["expired_rows"] == 25
    assert result.emf["Table"] == "attributes" and result.emf["Job"] == "purge-attributes"


def test_lambda_purge_dry_run_lists_what_the_real_run_deletes(postgres, app, secret):
    aws, arn = secret
    dry = run(pg_job("pg-purge", postgres, app, arn, dry_run=True, plan_sample_size=100), purge_work(clients(aws)))
    listed = {key["ctid"] for key in dry.summary["plan"]["sample_keys"]}
    assert dry.summary["plan"]["expired_rows"] == len(listed) == 25 and count(postgres, app) == 56
    assert dry.emf[metrics.ROWS_PURGED] == 0 and dry.summary["plan"]["key_columns"] == ["ctid"]
    with postgres.connect(app) as conn:
        before = {str(r[0]) for r in conn.execute("SELECT ctid FROM attributes").fetchall()}
    real = run(pg_job("pg-purge", postgres, app, arn), purge_work(clients(aws)))
    with postgres.connect(app) as conn:
        after = {str(r[0]) for r in conn.execute("SELECT ctid FROM attributes").fetchall()}
    assert before - after == listed and real.emf[metrics.ROWS_PURGED] == 25


def test_lambda_purge_breaker_refuses_and_says_why(postgres, app, secret):
    aws, arn = secret
    with postgres.connect(app) as conn:
        conn.execute("UPDATE attributes SET ttl_timestamp = now() - interval '1 hour' WHERE ttl_timestamp IS NOT NULL")
    refused = run(pg_job("pg-purge", postgres, app, arn), purge_work(clients(aws)))
    assert refused.emf[metrics.MASS_DELETION_REFUSED] == 1 and refused.emf[metrics.ROWS_PURGED] == 0
    assert "mass-deletion breaker: 55 of 56 rows examined" in refused.summary["plan"]["refused"]
    assert any(line.get("action") == "breaker" and "breaker_max_share" in line["error"] for line in refused.lines)
    assert count(postgres, app) == 56
    allowed = run(
        pg_job("pg-purge", postgres, app, arn, breaker={"allow_mass_deletion": True}), purge_work(clients(aws))
    )
    assert allowed.emf[metrics.ROWS_PURGED] == 55 and count(postgres, app) == 1


def test_lambda_purge_stops_at_the_deadline(postgres, app, secret):
    aws, arn = secret
    result = run(pg_job("pg-purge", postgres, app, arn), purge_work(clients(aws)), stop_after=1)
    assert result.summary["stopped_early"] is True and result.summary["rows_deleted"] == 10
    assert count(postgres, app) == 46


def test_secret_without_password_fails_visibly(postgres, app, aws):
    arn = aws.client("secretsmanager").create_secret(Name="bad", SecretString=json.dumps({"username": "x"}))["ARN"]
    stream = io.StringIO()
    with pytest.raises(ValueError, match="postgres.secret_arn: the secret needs a password"):
        run_job(pg_job("pg-purge", postgres, app, arn), purge_work(clients(aws)), None, stream=stream)
    assert json.loads(stream.getvalue().splitlines()[0])[metrics.SWEEP_FAILED] == 1
    assert count(postgres, app) == 56


def test_monitor_reports_backlog_purges_failures_and_last_success(postgres, app, secret):
    aws, arn = secret
    spec = PurgeSpec(job_name="purge-attributes", table="attributes", expiry_column="ttl_timestamp", batch_size=10)
    connector = Connector(postgres.dsn(app), app)
    state = provision(connector, spec)
    try:
        first = run(pg_job("pg-monitor", postgres, app, arn), monitor_work(clients(aws)))
        assert first.emf[metrics.EXPIRED_BACKLOG] == 25
        assert 7000 <= first.emf[metrics.OLDEST_EXPIRED_AGE_SECONDS] <= 7300
        assert first.emf[metrics.PG_CRON_FAILED_RUNS] == 0
        assert metrics.PG_CRON_LAST_SUCCESS_AGE_SECONDS not in first.emf  # never ran: no figure to report
        with postgres.connect(app) as conn:
            conn.execute('CALL expiry."purge-attributes"()')
        with postgres.connect() as cron:
            cron.execute(
                "INSERT INTO cron.job_run_details (jobid, runid, job_pid, database, username, command, "
                "status, return_message, start_time, end_time) VALUES "
                "(%(j)s, nextval('cron.runid_seq'), 1, 'x', 'postgres', 'c', 'succeeded', '', "
                "now() - interval '3 minutes', "
                "now() - interval '2 minutes'), "
                "(%(j)s, nextval('cron.runid_seq'), 1, 'x', 'postgres', 'c', 'failed', 'boom', "
                "now() - interval '1 minute', "
                "now() - interval '1 minute')",
                {"j": state["job_id"]},
            )
        second = run(pg_job("pg-monitor", postgres, app, arn), monitor_work(clients(aws)))
        assert second.emf[metrics.EXPIRED_BACKLOG] == 0 and second.emf[metrics.ROWS_PURGED] == 25
        assert second.emf[metrics.PG_CRON_FAILED_RUNS] == 1
        assert 110 <= second.emf[metrics.PG_CRON_LAST_SUCCESS_AGE_SECONDS] <= 200
        assert second.summary["job_scheduled"] is True
        assert second.emf[metrics.MASS_DELETION_REFUSED] == 0
        with postgres.connect(app) as conn:
            conn.execute(
                "UPDATE attributes SET ttl_timestamp = now() - interval '1 hour' WHERE ttl_timestamp IS NOT NULL"
            )
            with pytest.raises(psycopg.errors.RaiseException, match="mass-deletion breaker"):
                conn.execute('CALL expiry."purge-attributes"()')
        third = run(pg_job("pg-monitor", postgres, app, arn), monitor_work(clients(aws)))
        assert third.emf[metrics.MASS_DELETION_REFUSED] == 1 and third.emf[metrics.EXPIRED_BACKLOG] == 30
    finally:
        unprovision(connector, spec)


def test_monitor_counts_failed_runs_pg_cron_recorded_without_times(postgres, app, secret):
    """A run that cannot connect is recorded by pg_cron as 'starting', then 'failed' with
    'connection failed', with no job_pid, start_time or end_time: it is counted, until a run that
    started before the monitor's window has a higher run id; the history job prunes it."""
    aws, arn = secret
    spec = PurgeSpec(job_name="purge-attributes", table="attributes", expiry_column="ttl_timestamp")
    connector = Connector(postgres.dsn(app), app)
    state = provision(connector, spec)
    try:
        with postgres.connect() as cron:
            cron.execute("DELETE FROM cron.job_run_details")  # other tests' runs share pg_cron's database
            runid = cron.execute(
                "INSERT INTO cron.job_run_details (jobid, runid, database, username, command, status) "
                "VALUES (%s, nextval('cron.runid_seq'), %s, 'postgres', 'CALL x()', 'starting') RETURNING runid",
                (state["job_id"], app),
            ).fetchone()[0]
            cron.execute(
                "UPDATE cron.job_run_details SET status = 'failed', return_message = 'connection failed' "
                "WHERE runid = %s",
                (runid,),
            )
        failed = run(pg_job("pg-monitor", postgres, app, arn), monitor_work(clients(aws)))
        assert failed.emf[metrics.PG_CRON_FAILED_RUNS] == 1
        with postgres.connect() as cron:  # the next run (of any job) started more than a window ago
            cron.execute(
                "INSERT INTO cron.job_run_details (jobid, runid, job_pid, database, username, command, status, "
                "return_message, start_time, end_time) VALUES (%s, nextval('cron.runid_seq'), 1, 'x', 'postgres', "
                "'c', 'succeeded', '', now() - interval '2 hours', now() - interval '2 hours')",
                (state["history_job_id"],),
            )
        later = run(pg_job("pg-monitor", postgres, app, arn), monitor_work(clients(aws)))
        assert later.emf[metrics.PG_CRON_FAILED_RUNS] == 0
        with postgres.connect() as cron:
            command = cron.execute("SELECT command FROM cron.job WHERE jobid = %s", (state["history_job_id"],))
            history = command.fetchone()[0]
            cron.execute(history)  # 7 days of history: the failure is younger, kept
            kept = cron.execute("SELECT count(*) FROM cron.job_run_details WHERE runid = %s", (runid,))
            assert kept.fetchone()[0] == 1
            cron.execute(
                "INSERT INTO cron.job_run_details (jobid, runid, job_pid, database, username, command, status, "
                "return_message, start_time, end_time) VALUES (%s, nextval('cron.runid_seq'), 1, 'x', 'postgres', "
                "'c', 'succeeded', '', now() - interval '8 days', now() - interval '8 days')",
                (state["history_job_id"],),
            )
            cron.execute(history)  # a run that started 8 days ago came after it: pruned
            left = cron.execute("SELECT count(*) FROM cron.job_run_details WHERE runid = %s", (runid,))
            assert left.fetchone()[0] == 0
    finally:
        unprovision(connector, spec)


def test_lambda_drops_partitions_as_its_dry_run_listed(postgres, app, secret):
    from test_pg_purge_modes import partitioned

    aws, arn = secret
    with postgres.connect(app) as conn:
        partitioned(conn)
    settings = {"expiry_column": "expires_at", "mode": "drop-partitions"}
    breaker = {"max_share": 0.6, "ignore_below": 0}
    dry = run(
        pg_job("pg-purge", postgres, app, arn, table_name="events", purge=settings, breaker=breaker, dry_run=True),
        purge_work(clients(aws)),
    )
    listed = [p["partition"] for p in dry.summary["plan"]["partitions"]]
    assert listed == ["events_0", "events_1", "events_2", "events_3"] and dry.emf[metrics.ROWS_PURGED] == 0
    with postgres.connect(app) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 18
    done = run(
        pg_job("pg-purge", postgres, app, arn, table_name="events", purge=settings, breaker=breaker),
        purge_work(clients(aws)),
    )
    assert done.summary["partitions_dropped"] == listed and done.emf[metrics.ROWS_PURGED] == 9
