"""`expiry pause` / `expiry resume` (issue 21) against moto: a sweeper's schedule found by its target and
round-tripped whole by UpdateSchedule, a cascade's stream mapping disabled and enabled, `status --function`
showing it, and the errors (no schedule or mapping: exit 2; a denied call: exit 1 naming the permission).

moto 5 implements ListSchedules (target ARN in each summary), GetSchedule and UpdateSchedule with State, and
replaces the whole definition on UpdateSchedule as AWS documents (a field left out is reset, not kept), so the
round trip below is a real check that every field is passed back. moto keeps ActionAfterCompletion on an
update (AWS would reset it), so that field's round trip is checked on the UpdateSchedule input instead."""

import io
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from test_cli import DEPLOYED_JOB, cli, deploy
from uploads_world import TABLE, create_table

from expiry.runtime import cli as cli_module
from expiry.runtime.cli import FAILED, USAGE, main
from expiry.runtime.cli_pause import update_input

SWEEPER = "upload-sweeper-prod"
CASCADE = "upload-cascade-prod"
CASCADE_JOB = {
    "kind": "stream-cascade",
    "job_name": "upload-cascade",
    "table_name": TABLE,
    "key_attributes": ["uploadSessionId"],
    "ttl_attribute": "ttl",
}
VOLATILE = ("State", "LastModificationDate")


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), out, err, io.StringIO())
    return code, out.getvalue(), err.getvalue()


def schedule_of(aws: Any, function: str, group: str = "expiry", name: str = "upload-sweeper-schedule") -> None:
    """A schedule as ScheduledSweeper makes it, every optional field set, in a group of its own."""
    scheduler, functions = aws.client("scheduler"), aws.client("lambda")
    arn = functions.get_function_configuration(FunctionName=function)["FunctionArn"]
    if group != "default":
        scheduler.create_schedule_group(Name=group)
    scheduler.create_schedule(
        Name=name,
        GroupName=group,
        Description="expiry upload sweeper",
        ScheduleExpression="rate(6 hours)",
        ScheduleExpressionTimezone="Europe/Oslo",
        FlexibleTimeWindow={"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 15},
        KmsKeyArn="arn:aws:kms:us-east-1:123456789012:key/abc",
        Target={
            "Arn": arn,
            "RoleArn": "arn:aws:iam::123456789012:role/scheduler",
            "Input": json.dumps({"source": "expiry-schedule", "job": "upload-sweeper"}),
            "RetryPolicy": {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 3600},
            "DeadLetterConfig": {"Arn": "arn:aws:sqs:us-east-1:123456789012:dlq"},
        },
        State="ENABLED",
    )


@pytest.fixture
def sweeper(aws_in_process):
    aws = aws_in_process
    create_table(aws.dynamodb)
    aws.dynamodb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})
    deploy(aws, SWEEPER, {"EXPIRY_JOB": json.dumps(DEPLOYED_JOB)})
    deploy(aws, "other-function", {"EXPIRY_JOB": json.dumps({**DEPLOYED_JOB, "job_name": "other"})})
    schedule_of(aws, SWEEPER)
    schedule_of(aws, "other-function", group="default", name="other-schedule")  # not ours: left alone
    return aws


def definition(aws: Any, name: str = "upload-sweeper-schedule", group: str = "expiry") -> dict[str, Any]:
    got = aws.client("scheduler").get_schedule(Name=name, GroupName=group)
    return {key: value for key, value in got.items() if key != "ResponseMetadata"}


def test_pause_then_resume_round_trips_the_schedule_exactly(sweeper):
    before = definition(sweeper)
    other = definition(sweeper, "other-schedule", "default")
    code, out, err = run("pause", "--function", SWEEPER, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["paused"] == "yes"
    assert result["schedules_changed"] == [{"name": "expiry/upload-sweeper-schedule", "state": "ENABLED -> DISABLED"}]
    assert "expiry: warning: Pulumi does not know of this change: `pulumi up --refresh`" in err
    assert "for a lasting pause set that instead" in err
    paused = definition(sweeper)
    assert paused["State"] == "DISABLED"
    assert {k: v for k, v in paused.items() if k not in VOLATILE} == {
        k: v for k, v in before.items() if k not in VOLATILE
    }
    assert definition(sweeper, "other-schedule", "default") == other

    code, out, err = run("status", "--function", SWEEPER, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["paused"] == "yes"
    assert shown["schedules"] == [{"name": "expiry/upload-sweeper-schedule", "state": "DISABLED"}]

    again, out, err = run("pause", "--function", SWEEPER, "--json")  # already paused: nothing to change
    assert again == 0 and json.loads(out)["schedules_changed"] == [] and "warning" not in err

    code, out, err = run("resume", "--function", SWEEPER)
    assert code == 0, err
    assert "schedules_changed" in out and "DISABLED -> ENABLED" in out
    assert {k: v for k, v in definition(sweeper).items() if k != "LastModificationDate"} == {
        k: v for k, v in before.items() if k != "LastModificationDate"
    }
    code, out, _ = run("status", "--function", SWEEPER)
    assert code == 0 and any(line.split() == ["paused", "no"] for line in out.splitlines())


def test_every_field_get_schedule_returns_that_update_schedule_takes_is_passed_back(sweeper):
    scheduler = sweeper.client("scheduler")
    accepted = list(scheduler.meta.service_model.operation_model("UpdateSchedule").input_shape.members)
    got = definition(sweeper) | {"ActionAfterCompletion": "NONE", "StartDate": "2030-01-01T00:00:00Z"}
    sent = update_input(got, accepted, "DISABLED")
    assert sent == {k: v for k, v in got.items() if k in accepted} | {"State": "DISABLED"}
    assert {"Arn", "CreationDate", "LastModificationDate"}.isdisjoint(sent)  # not UpdateSchedule's
    assert {"ActionAfterCompletion", "StartDate", "KmsKeyArn", "Description", "Target"} <= set(sent)


@pytest.fixture
def cascade(aws_in_process):
    aws = aws_in_process
    create_table(aws.dynamodb)
    aws.dynamodb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})
    stream = aws.dynamodb.update_table(
        TableName=TABLE, StreamSpecification={"StreamEnabled": True, "StreamViewType": "OLD_IMAGE"}
    )["TableDescription"]["LatestStreamArn"]
    deploy(aws, CASCADE, {"EXPIRY_JOB": json.dumps(CASCADE_JOB)})
    aws.client("lambda").create_event_source_mapping(
        EventSourceArn=stream, FunctionName=CASCADE, StartingPosition="TRIM_HORIZON", BatchSize=100
    )
    return aws


def mapping_states(aws: Any) -> list[str]:
    listed = aws.client("lambda").list_event_source_mappings(FunctionName=CASCADE)["EventSourceMappings"]
    return [m["State"] for m in listed]


def test_pause_and_resume_a_cascade_disable_and_enable_its_stream_mapping(cascade):
    code, out, err = run("pause", "--function", CASCADE, "--json")
    assert code == 0, err
    (changed,) = json.loads(out)["event_source_mappings_changed"]
    assert changed["state"] == "Enabled -> Disabled" and ":dynamodb:" in changed["source"]
    assert "the next update of the event source mapping" in err
    assert mapping_states(cascade) == ["Disabled"]
    code, out, err = run("status", "--function", CASCADE, "--json")
    assert code == 0, err
    assert json.loads(out)["paused"] == "yes"
    code, out, err = run("resume", "--function", CASCADE, "--json")
    assert code == 0, err
    assert mapping_states(cascade) == ["Enabled"]


def test_a_function_with_no_schedule_or_mapping_is_a_usage_error(aws_in_process):
    deploy(aws_in_process, SWEEPER, {"EXPIRY_JOB": json.dumps(DEPLOYED_JOB)})
    deploy(aws_in_process, CASCADE, {"EXPIRY_JOB": json.dumps(CASCADE_JOB)})
    deploy(aws_in_process, "plain", {"OTHER": "1"})
    for function, message in (
        (SWEEPER, f"--function {SWEEPER}: no schedule invokes it (a sweep job): nothing to pause"),
        (
            CASCADE,
            f"--function {CASCADE}: no event source mapping on a DynamoDB stream invokes it (a stream-cascade job): "
            "nothing to pause",
        ),
        ("plain", "--function plain: has no EXPIRY_JOB in its environment: not an Expiry job"),
        ("no-such-function", "--function no-such-function: no such function"),
    ):
        code, _, err = run("pause", "--function", function)
        assert code == USAGE, err
        assert err == f"expiry: error: {message}\n"


def denying(service: str, operation: str) -> type:
    class Denying(cli_module.boto3.Session):  # type: ignore[misc,name-defined]
        """A session whose ``service`` calls of ``operation`` are denied, as IAM denies them."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.events.register(f"before-call.{service}.{operation}", self.deny)

        @staticmethod
        def deny(**_: Any) -> None:
            error = {"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}}
            raise ClientError(error, operation)  # type: ignore[arg-type]

    return Denying


@pytest.mark.parametrize(
    ("service", "operation", "permission"),
    [
        ("scheduler", "ListSchedules", "scheduler:ListSchedules"),
        ("scheduler", "UpdateSchedule", "scheduler:UpdateSchedule"),
        ("lambda", "GetFunctionConfiguration", "lambda:GetFunctionConfiguration"),
    ],
)
def test_a_denied_call_fails_naming_the_permission(sweeper, monkeypatch, service, operation, permission):
    before = definition(sweeper)
    monkeypatch.setattr(cli_module.boto3, "Session", denying(service, operation))
    code, _, err = run("pause", "--function", SWEEPER)
    assert code == FAILED
    assert err == f"expiry: error: AWS: {permission} was denied (AccessDeniedException): pause and resume need it\n"
    assert definition(sweeper) == before


def test_a_denied_mapping_update_fails_naming_the_permission(cascade, monkeypatch):
    monkeypatch.setattr(cli_module.boto3, "Session", denying("lambda", "UpdateEventSourceMapping"))
    code, _, err = run("pause", "--function", CASCADE)
    assert code == FAILED and "lambda:UpdateEventSourceMapping was denied" in err
    assert mapping_states(cascade) == ["Enabled"]


def test_status_shows_paused_unknown_when_the_schedule_cannot_be_read(sweeper, monkeypatch):
    monkeypatch.setattr(cli_module.boto3, "Session", denying("scheduler", "ListSchedules"))
    code, out, err = run("status", "--function", SWEEPER, "--json")
    assert code == 0, err
    assert json.loads(out)["paused"] == "unknown"
    assert "expiry: warning: paused unknown: scheduler:ListSchedules was denied" in err


def test_pause_over_http_as_an_operator_runs_it(moto_server):
    from aws import aws_backend

    with aws_backend("moto_server", moto_server) as aws:
        deploy(aws, SWEEPER, {"EXPIRY_JOB": json.dumps(DEPLOYED_JOB)})
        schedule_of(aws, SWEEPER)
        paused = cli("pause", "--function", SWEEPER, endpoint=moto_server.url)
        assert paused.returncode == 0, paused.stderr
        assert definition(aws)["State"] == "DISABLED"
        resumed = cli("resume", "--function", SWEEPER, endpoint=moto_server.url)
        assert resumed.returncode == 0, resumed.stderr
        assert definition(aws)["State"] == "ENABLED"
        missing = cli("resume", "--function", "nope", endpoint=moto_server.url)
        assert (missing.returncode, missing.stderr) == (USAGE, "expiry: error: --function nope: no such function\n")
