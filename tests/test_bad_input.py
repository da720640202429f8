"""Issue 13's bad inputs: each stops early with one line naming the field, and nothing is registered
(components, stack config) or deleted (handlers, CLI)."""

import json
import runpy
import subprocess
import sys

import pulumi
import pytest
from stack_config import ROOT, stack_config

from expiry.components.cleanup_alarms import CleanupAlarms
from expiry.components.pg_cron_cleanup import PgCronCleanup
from expiry.components.scheduled_sweeper import ScheduledSweeper
from expiry.components.ttl_table import TtlTable
from expiry.runtime.jobs.config import JobConfigError, job_from_environment
from stack.settings import SettingError

TABLE_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/upload-sessions"
SWEEP = {
    "kind": "sweep",
    "schedule": "rate(6 hours)",
    "table_name": "upload-sessions",
    "table_arn": TABLE_ARN,
    "key_attributes": ["uploadSessionId"],
    "ttl_attribute": "ttl",
}
PG_MONITOR = {
    "kind": "pg-monitor",
    "schedule": "rate(1 hour)",
    "table_name": "attributes",
    "purge": {"expiry_column": "ttl_timestamp"},
}
ORPHANS = {
    "s3": {"bucket": "uploads", "key_attribute": "key", "object_prefix": "uploads/"},
    "orphaned_objects": {"id_pattern": r"^other/(?P<id>[^/.]+)", "prefix": "other/"},
}
PG = {"table": "attributes", "expiry_column": "ttl_timestamp", "host": "db", "database": "app", "user": "ops"}
TABLE = {"hash_key": "id"}
WATCHED = [
    {
        "job_name": "checkpoints-monitor",
        "kind": "ttl-monitor",
        "table_name": "checkpoints",
        "interval_seconds": 3600,
        "timeout_seconds": 300,
        "function_name": "fn-monitor",
        "dead_letter_queue_name": "dlq-monitor",
        "log_group_name": "/expiry/monitor",
    }
]


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text, text
    return text


@pytest.fixture(autouse=True)
def build_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPIRY_BUILD_DIR", str(tmp_path / "build"))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: ScheduledSweeper("monitor", PG_MONITOR),
            "ScheduledSweeper: postgres: is required for a pg-monitor job",
        ),
        (
            lambda: PgCronCleanup("purge", {k: v for k, v in PG.items() if k != "table"}),
            "PgCronCleanup: table: is required",
        ),
        (lambda: TtlTable("t", {**TABLE, "tags": ["team=platform"]}), "TtlTable: tags: must be a mapping"),
        (lambda: TtlTable("t", {**TABLE, "tags": {"": "x"}}), "TtlTable: tags: tag keys must be 1..128 characters"),
        (
            lambda: CleanupAlarms("alarms", {"jobs": WATCHED, "email_addresses": ["a@"]}),
            "CleanupAlarms: email_addresses[0]: must be an e-mail address",
        ),
        (
            lambda: CleanupAlarms("alarms", {"jobs": WATCHED, "email_addresses": ["@example.com"]}),
            "CleanupAlarms: email_addresses[0]: must be an e-mail address",
        ),
        (
            lambda: CleanupAlarms("alarms", {"jobs": WATCHED, "email_addresses": ["a@x.com,b@x.com"]}),
            "CleanupAlarms: email_addresses[0]: must be an e-mail address (one, name@example.com)",
        ),
        (
            lambda: ScheduledSweeper("video", {**SWEEP, "schedule": "at(2020-01-01T00:00:00)"}),
            "ScheduledSweeper: schedule: at(2020-01-01T00:00:00) (UTC) is past",
        ),
        (lambda: PgCronCleanup("purge", {**PG, "port": "abc"}), "PgCronCleanup: port: must be an integer in 1..65535"),
        (lambda: PgCronCleanup("purge", {**PG, "port": 0}), "PgCronCleanup: port: must be an integer in 1..65535"),
        (
            lambda: PgCronCleanup("purge", {**PG, "create_index": "no"}),
            "PgCronCleanup: create_index: must be true or false, got 'no'",
        ),
        (
            lambda: ScheduledSweeper("video", {**SWEEP, "job_name": "j" * 300}),
            "ScheduledSweeper: job_name: must be 1..128 characters",
        ),
        (
            lambda: ScheduledSweeper("video", {**SWEEP, "namespace": "AWS/Lambda"}),
            "ScheduledSweeper: namespace: AWS/ is reserved for AWS's own metrics",
        ),
        (
            lambda: ScheduledSweeper("video", {**SWEEP, **ORPHANS}),
            "ScheduledSweeper: s3.object_prefix: 'uploads/' does not cover orphaned_objects.prefix 'other/'",
        ),
    ],
    ids=[
        "pg-monitor-without-postgres",
        "pg-cron-without-table",
        "tags-as-list",
        "tag-with-empty-key",
        "email-a@",
        "email-@example.com",
        "email-two-addresses",
        "past-at-schedule",
        "port-abc",
        "port-0",
        "create-index-no",
        "job-name-300",
        "namespace-aws",
        "object-prefix-not-covering-orphans",
    ],
)
def test_component_input_is_refused_by_field_before_anything_registers(pulumi_mocks, build, message):
    with pytest.raises(ValueError) as raised:
        pulumi_mocks.run(build)
    assert message in one_line(raised.value)
    assert pulumi_mocks.resources == []


def run_program(harness, config: dict[str, str]) -> None:
    pulumi.runtime.set_all_config(config, secret_keys=["expiry:postgresPassword"])
    harness.run(lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__"))


POSTGRES = {"postgresHost": "db.example.com", "postgresPassword": "pw"}


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"alertEmail": "a@"}, SettingError, "expiry:alertEmail: must be an e-mail address"),
        ({"alertEmail": "@example.com"}, SettingError, "expiry:alertEmail: must be an e-mail address"),
        ({"alertEmail": "a@x.com,b@x.com"}, SettingError, "expiry:alertEmail: must be an e-mail address (one"),
        ({"tags": ["=platform"]}, SettingError, "expiry:tags: '=platform' has an empty key"),
        ({"tags": ["project=other"]}, SettingError, "expiry:tags: 'project=other' sets the reserved tag"),
        ({"tags": ["environment=prod"]}, SettingError, "expiry:tags: 'environment=prod' sets the reserved tag"),
        ({"dryrun": False}, SettingError, "expiry:dryrun: is not a setting of this project"),
        ({**POSTGRES, "postgresPort": "abc"}, pulumi.ConfigTypeError, "expiry:postgresPort"),
        ({**POSTGRES, "postgresPort": 0}, SettingError, "expiry:postgresPort: must be in 1..65535, got 0"),
    ],
    ids=[
        "email-a@",
        "email-@example.com",
        "email-two",
        "tag-empty-key",
        "tag-project",
        "tag-env",
        "dryrun",
        "abc",
        "0",
    ],
)
def test_stack_config_is_refused_by_key_before_anything_registers(pulumi_mocks, overrides, error, message):
    with pytest.raises(error) as raised:
        run_program(pulumi_mocks, stack_config("dev", **overrides))
    assert message in one_line(raised.value)
    assert pulumi_mocks.resources == []


def test_a_misspelled_key_names_the_declared_one(pulumi_mocks):
    with pytest.raises(SettingError) as raised:
        run_program(pulumi_mocks, stack_config("dev", dryrun=False, alertemail="x@example.com"))
    assert str(raised.value) == (
        "expiry:alertemail: is not a setting of this project (Pulumi.yaml declares none such); "
        "did you mean expiry:alertEmail?"
    )
    assert pulumi_mocks.resources == []


def test_duplicate_keys_in_the_job_settings_are_refused():
    text = (
        '{"kind": "sweep", "job_name": "j", "table_name": "t", "key_attributes": ["id"], '
        '"dry_run": true, "dry_run": false}'
    )
    with pytest.raises(JobConfigError) as raised:
        job_from_environment({"EXPIRY_JOB": text})
    assert one_line(raised.value) == "EXPIRY_JOB: dry_run: given more than once"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "expiry", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_cli_refuses_a_bad_dsn_as_a_wrong_setting():
    result = cli("status", "--postgres", "host=db port", "--table", "t", "--expiry-column", "e")
    assert result.returncode == 2
    assert result.stderr.startswith("expiry: error: --postgres: not a libpq connection string or URL")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("job", "message"),
    [
        (
            {"kind": "ttl-monitor", "job_name": "m", "table_name": "t", "key_attributes": ["id"]},
            "expiry: error: --job: kind: sweep runs sweep and orphaned-references jobs, got 'ttl-monitor'",
        ),
        (
            {"kind": "pg-purge", "job_name": "p", "table_name": "t"},
            "expiry: error: --job: kind: sweep runs sweep and orphaned-references jobs, got 'pg-purge'",
        ),
        ('{"kind": "sweep", "kind": "sweep"}', "expiry: error: --job: kind: given more than once"),
    ],
    ids=["ttl-monitor", "pg-purge", "duplicate-key"],
)
def test_cli_sweep_refuses_a_job_it_cannot_sweep(job, message):
    # No endpoint is reachable here: the refusal comes before any AWS call, so nothing can be deleted.
    text = job if isinstance(job, str) else json.dumps(job)
    result = cli("sweep", "--job", text, "--yes", "--endpoint-url", "http://127.0.0.1:9", "--region", "us-east-1")
    assert result.returncode == 2
    assert result.stderr.strip() == message or result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
