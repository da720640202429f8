"""A user's own unit tests: README's component examples under Pulumi's documented mocks (outputs =
inputs) and under expiry.testing.ExpiryMocks, README's example test file, outputs that resolve to
something wrong, and the psycopg layer given as a prebuilt ARN (nothing downloaded)."""

import json
import re
import subprocess
import sys
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest
from docs_pages import Location, location_id
from pulumi_harness import Harness, RecordingMonitor
from test_readme import blocks, program_blocks

from expiry.components import lambda_parts
from expiry.components.pg_cron_cleanup import PgCronCleanup
from expiry.components.scheduled_sweeper import ScheduledSweeper, table_target
from expiry.components.stream_cascade import TtlStreamCascade, stream_target
from expiry.components.ttl_table import TtlTable
from expiry.testing import ExpiryMocks

COMPONENT_CALL = re.compile(r"\b(TtlTable|ScheduledSweeper|TtlStreamCascade|PgCronCleanup|CleanupAlarms)\(")
LAYER = "arn:aws:lambda:us-east-1:123456789012:layer:psycopg:3"
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-XyZ"
FUNCTION = "aws:lambda/function:Function"


class DocumentedMocks(pulumi.runtime.Mocks):
    """The mocks of Pulumi's unit-testing guide: a resource's outputs are its inputs."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> Any:
        return [args.name + "_id", args.inputs]

    def call(self, args: pulumi.runtime.MockCallArgs) -> Any:
        return {}


def mocked(mocks: pulumi.runtime.Mocks) -> Harness:
    pulumi.runtime.set_all_config({})
    monitor = RecordingMonitor(mocks)  # type: ignore[arg-type]
    pulumi.runtime.set_mocks(monitor.mocks, project="expiry", stack="test", preview=False, monitor=monitor)
    return Harness(monitor)


def component_examples() -> list[tuple[Location, str]]:
    return [(where, code) for where, code in program_blocks() if COMPONENT_CALL.search(code)]


def readme_test_file() -> tuple[Location, str]:
    ((where, code),) = [(where, code) for where, code in blocks("python") if "pulumi.runtime.set_mocks" in code]
    return where, code


def test_the_readme_has_six_component_examples():
    assert len(component_examples()) >= 6


@pytest.mark.parametrize("mocks", [DocumentedMocks, ExpiryMocks])
@pytest.mark.parametrize(("where", "code"), component_examples(), ids=location_id)
def test_component_example_runs_under_a_users_mocks(mocks, where, code):
    harness = mocked(mocks())
    pulumi.runtime.set_config("expiry:dbPassword", "example-password")
    harness.run(lambda: exec(compile(code, where, "exec"), {"__name__": "readme"}))
    registered = {r.type for r in harness.resources}
    assert {f"expiry:index:{name}" for name in COMPONENT_CALL.findall(code)} <= registered
    if mocks is ExpiryMocks:  # every name a function's job names is known
        for function in harness.of_type(FUNCTION):
            job = json.loads(function.inputs.get("environment", {}).get("variables", {}).get("EXPIRY_JOB", "{}"))
            assert None not in (job.get("table_name", "-"), *job.get("postgres", {}).values()), (function.name, job)


def cascade_program() -> tuple[TtlTable, ScheduledSweeper]:
    table = TtlTable("sessions", {"hash_key": "sessionId", "stream_view_type": "OLD_IMAGE"})
    sweeper = ScheduledSweeper("sweeper", {"kind": "sweep", "schedule": "rate(1 hour)", **table_target(table)})
    TtlStreamCascade("cascade", {**stream_target(table), "archive_bucket": aws.s3.Bucket("archive").bucket})
    return table, sweeper


def job_of(harness: Harness, name: str) -> dict[str, Any]:
    return json.loads(harness.one(FUNCTION, name).inputs["environment"]["variables"]["EXPIRY_JOB"])


def test_expiry_mocks_resolve_names_arns_and_the_stream_as_aws_would():
    harness = mocked(ExpiryMocks())
    table, sweeper = harness.run(cascade_program)
    name = harness.value(table.table_name)
    assert re.fullmatch(r"sessions-table-[0-9a-f]{7}", name)
    arn = f"arn:aws:dynamodb:us-east-1:123456789012:table/{name}"
    assert harness.value(table.table_arn) == arn
    assert harness.value(sweeper.table_name) == name
    assert job_of(harness, "sweeper-function")["table_name"] == name
    assert job_of(harness, "cascade-function")["table_name"] == name
    assert re.fullmatch(r"archive-[0-9a-f]{7}", job_of(harness, "cascade-function")["archive_bucket"])
    mapping = harness.one("aws:lambda/eventSourceMapping:EventSourceMapping").inputs
    assert mapping["eventSourceArn"] == f"{arn}/stream/2026-01-01T00:00:00.000"
    policy = json.loads(harness.one("aws:iam/rolePolicy:RolePolicy", "cascade-policy").inputs["policy"])
    assert {s["Sid"]: s["Resource"] for s in policy["Statement"]}["Stream"] == [mapping["eventSourceArn"]]
    assert re.fullmatch(r"arn:aws:iam::123456789012:role/sweeper-role-[0-9a-f]{7}", harness.value(sweeper.role_arn))


def test_expiry_mocks_resolve_resources_read_by_id():
    harness = mocked(ExpiryMocks())
    db, secret = harness.run(
        lambda: (aws.rds.Instance.get("app-db", "app-db"), aws.secretsmanager.Secret.get("secret", "app-secret"))
    )
    assert harness.value(db.address) == "app-db.c0ffee123456.us-east-1.rds.amazonaws.com"
    assert harness.value(db.id) == "app-db"
    assert re.fullmatch(
        r"arn:aws:secretsmanager:us-east-1:123456789012:secret:app-secret-[0-9a-f]{6}", harness.value(secret.arn)
    )


def test_under_documented_mocks_unknown_names_are_left_null_not_guessed():
    harness = mocked(DocumentedMocks())
    harness.run(cascade_program)
    assert job_of(harness, "sweeper-function")["table_name"] is None
    assert job_of(harness, "cascade-function")["table_name"] is None
    assert job_of(harness, "cascade-function")["archive_bucket"] is None
    policy = json.loads(harness.one("aws:iam/rolePolicy:RolePolicy", "cascade-policy").inputs["policy"])
    assert "Stream" not in {s["Sid"] for s in policy["Statement"]}  # no statement names an unknown ARN


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: ScheduledSweeper(
                "sweeper",
                {
                    "kind": "ttl-monitor",
                    "schedule": "rate(1 hour)",
                    "table_name": pulumi.Output.from_input(""),
                    "table_arn": "arn:aws:dynamodb:us-east-1:123456789012:table/t",
                    "key_attributes": ["id"],
                },
            ),
            "ScheduledSweeper: table_name: must be a non-empty string",
        ),
        (
            lambda: TtlStreamCascade(
                "cascade",
                {
                    "table_name": pulumi.Output.from_input(""),
                    "table_arn": "arn:aws:dynamodb:us-east-1:123456789012:table/t",
                    "stream_arn": "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x",
                    "key_attributes": ["id"],
                    "archive_bucket": "archive",
                },
            ),
            "TtlStreamCascade: table_name: must be a non-empty string",
        ),
    ],
)
def test_an_output_that_resolves_to_something_wrong_still_fails_naming_the_field(build, message):
    harness = mocked(DocumentedMocks())
    with pytest.raises(ValueError, match=message):
        harness.run(build)


def test_the_readme_test_file_passes_under_expiry_mocks_and_fails_under_documented_ones():
    where, code = readme_test_file()
    for mocks, passes in (("ExpiryMocks()", True), ("DocumentedMocks()", False)):
        namespace: dict[str, Any] = {"__name__": "test_readme_example", "DocumentedMocks": DocumentedMocks}
        exec(compile(code.replace("ExpiryMocks()", mocks), where, "exec"), namespace)
        tests = [value for key, value in namespace.items() if key.startswith("test_")]
        assert tests
        for test in tests:
            if passes:
                test()
            else:
                with pytest.raises((AssertionError, AttributeError)):
                    test()


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("the psycopg layer was built (downloaded from PyPI)")

    monkeypatch.setattr(lambda_parts, "build_psycopg_layer", refuse)


def pg_monitor(**overrides: Any) -> dict[str, Any]:
    return {
        "kind": "pg-monitor",
        "schedule": "rate(1 hour)",
        "table_name": "attributes",
        "postgres": {"host": "db.internal", "database": "app", "secret_arn": SECRET},
        "purge": {"expiry_column": "ttl_timestamp", "job_name": "attributes-purge"},
        **overrides,
    }


def pg_vpc(**overrides: Any) -> dict[str, Any]:
    return {
        "table": "attributes",
        "expiry_column": "ttl_timestamp",
        "host": "db.internal",
        "database": "app",
        "secret_arn": SECRET,
        "subnet_ids": ["subnet-a"],
        "security_group_ids": ["sg-a"],
        **overrides,
    }


@pytest.mark.parametrize(
    ("build", "function"),
    [
        (lambda: ScheduledSweeper("monitor", pg_monitor(psycopg_layer_arn=LAYER)), "monitor-function"),
        (lambda: PgCronCleanup("purge", pg_vpc(psycopg_layer_arn=LAYER)), "purge-provisioner"),
    ],
)
def test_a_prebuilt_psycopg_layer_means_no_download(pulumi_mocks, no_download, build, function):
    pulumi_mocks.run(build)
    assert pulumi_mocks.of_type("aws:lambda/layerVersion:LayerVersion") == []
    assert pulumi_mocks.one(FUNCTION, function).inputs["layers"] == [LAYER]


def test_without_a_layer_arn_the_layer_is_built(pulumi_mocks, no_download):
    with pytest.raises(AssertionError, match="downloaded from PyPI"):
        pulumi_mocks.run(lambda: ScheduledSweeper("monitor", pg_monitor()))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: ScheduledSweeper("monitor", pg_monitor(psycopg_layer_arn="psycopg")),
            "ScheduledSweeper: psycopg_layer_arn: must be a layer version ARN",
        ),
        (
            lambda: ScheduledSweeper(
                "monitor",
                {
                    "kind": "ttl-monitor",
                    "schedule": "rate(1 hour)",
                    "table_name": "t",
                    "table_arn": "arn:aws:dynamodb:us-east-1:123456789012:table/t",
                    "key_attributes": ["id"],
                    "psycopg_layer_arn": LAYER,
                },
            ),
            "ScheduledSweeper: psycopg_layer_arn: only PostgreSQL jobs use psycopg",
        ),
        (
            lambda: PgCronCleanup("purge", pg_vpc(psycopg_layer_arn=f"{LAYER}:latest")),
            "PgCronCleanup: psycopg_layer_arn: must be a layer version ARN",
        ),
        (
            lambda: PgCronCleanup(
                "purge",
                {
                    "table": "attributes",
                    "expiry_column": "ttl_timestamp",
                    "host": "db.internal",
                    "database": "app",
                    "user": "expiry",
                    "password": "pw",
                    "psycopg_layer_arn": LAYER,
                },
            ),
            "PgCronCleanup: psycopg_layer_arn: is used in VPC mode only",
        ),
    ],
)
def test_a_bad_or_unused_layer_arn_is_refused(pulumi_mocks, no_download, build, message):
    with pytest.raises(ValueError, match=message):
        pulumi_mocks.run(build)


def test_nothing_in_expiry_imports_the_testing_module():
    program = (
        "import sys, expiry, expiry.components.scheduled_sweeper, expiry.components.stream_cascade, "
        "expiry.components.pg_cron_cleanup, expiry.components.cleanup_alarms, expiry.components.provider_host\n"
        "assert 'expiry.testing' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", program], check=True)
