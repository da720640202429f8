"""ScheduledSweeper under Pulumi's mocks: children, IAM statement by statement, schedule, bad input."""

import json
from typing import Any

import pulumi
import pytest

from expiry.components.cleanup_alarms import CleanupAlarms, watched_job
from expiry.components.scheduled_sweeper import ScheduledSweeper, table_target
from expiry.components.ttl_table import TtlTable
from expiry.runtime.jobs.config import parse_job

FUNCTION = "aws:lambda/function:Function"
POLICY = "aws:iam/rolePolicy:RolePolicy"
SCHEDULE = "aws:scheduler/schedule:Schedule"
TABLE_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/upload-sessions"
S3 = {
    "bucket": "uploads-bucket",
    "key_attribute": "key",
    "upload_id_attribute": "s3UploadId",
    "status_attribute": "status",
    "keep_statuses": ["uploaded"],
    "object_prefix": "uploads/",
}


@pytest.fixture(autouse=True)
def build_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPIRY_BUILD_DIR", str(tmp_path / "build"))
    return tmp_path / "build"


def sweeper_args(**overrides: Any) -> dict[str, Any]:
    return {
        "kind": "sweep",
        "schedule": "rate(6 hours)",
        "table_name": "upload-sessions",
        "table_arn": TABLE_ARN,
        "key_attributes": ["uploadSessionId"],
        "ttl_attribute": "ttl",
        **overrides,
    }


def build(harness, args: dict[str, Any], name: str = "video") -> ScheduledSweeper:
    return harness.run(lambda: ScheduledSweeper(name, args))


def statements(harness, name: str) -> dict[str, dict[str, Any]]:
    policy = json.loads(harness.one(POLICY, name).inputs["policy"])
    assert policy["Version"] == "2012-10-17"
    return {s["Sid"]: s for s in policy["Statement"]}


def test_children_and_defaults(pulumi_mocks):
    sweeper = build(pulumi_mocks, sweeper_args())
    component = pulumi_mocks.one("expiry:index:ScheduledSweeper", "video")
    children = [r for r in pulumi_mocks.resources if r.parent == component.urn]
    assert sorted((r.type.split(":")[1], r.name) for r in children) == sorted(
        [
            ("cloudwatch/logGroup", "video-logs"),
            ("dynamodb/table", "video-budget"),
            ("iam/role", "video-role"),
            ("iam/rolePolicy", "video-policy"),
            ("lambda/function", "video-function"),
            ("lambda/functionEventInvokeConfig", "video-async"),
            ("sqs/queue", "video-dlq"),
            ("iam/role", "video-scheduler-role"),
            ("iam/rolePolicy", "video-scheduler-policy"),
            ("scheduler/schedule", "video-schedule"),
        ]
    )
    fn = pulumi_mocks.one(FUNCTION).inputs
    assert (fn["runtime"], fn["architectures"], fn["timeout"], fn["memorySize"]) == ("python3.13", ["arm64"], 300, 1769)
    assert fn["handler"] == "expiry.runtime.handlers.sweep.handler"
    assert fn["reservedConcurrentExecutions"] == 1
    assert fn["loggingConfig"]["logFormat"] == "JSON"
    log_group = pulumi_mocks.one("aws:cloudwatch/logGroup:LogGroup").inputs
    assert log_group["retentionInDays"] == 30 and log_group["name"] == "/expiry/expiry/test/video"
    assert fn["loggingConfig"]["logGroup"] == log_group["name"]
    invoke = pulumi_mocks.one("aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig").inputs
    assert (invoke["maximumRetryAttempts"], invoke["maximumEventAgeInSeconds"]) == (0, 60)
    assert pulumi_mocks.value(sweeper.job_name) == "video"


def test_environment_carries_the_job_the_handler_reads(pulumi_mocks):
    build(pulumi_mocks, sweeper_args(s3=S3, dry_run=True, workers=16, job_name="video-sweeper"))
    job = parse_job(json.loads(pulumi_mocks.one(FUNCTION).inputs["environment"]["variables"]["EXPIRY_JOB"]))
    assert (job.kind, job.name, job.table, job.ttl_attribute) == ("sweep", "video-sweeper", "upload-sessions", "ttl")
    assert job.dry_run is True and job.workers == 16
    assert job.s3 is not None and job.s3.bucket == "uploads-bucket" and job.s3.keep_statuses == ("uploaded",)


def test_schedule_with_retries_dead_letters_time_zone_and_window(pulumi_mocks):
    build(
        pulumi_mocks,
        sweeper_args(
            schedule="cron(0 3 * * ? *)",
            schedule_timezone="Europe/Oslo",
            flexible_window_minutes=15,
            schedule_retry_attempts=1,
            schedule_max_event_age_seconds=600,
        ),
    )
    schedule = pulumi_mocks.one(SCHEDULE).inputs
    assert schedule["scheduleExpression"] == "cron(0 3 * * ? *)"
    assert schedule["scheduleExpressionTimezone"] == "Europe/Oslo"
    assert schedule["flexibleTimeWindow"] == {"mode": "FLEXIBLE", "maximumWindowInMinutes": 15}
    target = schedule["target"]
    assert target["arn"].endswith("video-function-physical")
    assert target["retryPolicy"] == {"maximumRetryAttempts": 1, "maximumEventAgeInSeconds": 600}
    assert target["deadLetterConfig"]["arn"].endswith("video-dlq-physical")
    scheduler = statements(pulumi_mocks, "video-scheduler-policy")
    assert scheduler["Invoke"]["Action"] == ["lambda:InvokeFunction"]
    assert scheduler["Invoke"]["Resource"][0] == target["arn"]
    assert scheduler["DeadLetters"] == {
        "Sid": "DeadLetters",
        "Effect": "Allow",
        "Action": ["sqs:SendMessage"],
        "Resource": [target["deadLetterConfig"]["arn"]],
    }
    trust = json.loads(pulumi_mocks.one("aws:iam/role:Role", "video-scheduler-role").inputs["assumeRolePolicy"])
    assert trust["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "scheduler.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": "123456789012"}},
        }
    ]


def test_schedule_defaults(pulumi_mocks):
    build(pulumi_mocks, sweeper_args())
    schedule = pulumi_mocks.one(SCHEDULE).inputs
    assert schedule["scheduleExpressionTimezone"] == "UTC"
    assert schedule["flexibleTimeWindow"] == {"mode": "OFF"}
    assert schedule["target"]["retryPolicy"] == {"maximumRetryAttempts": 2, "maximumEventAgeInSeconds": 3600}


def test_sweep_policy_names_exact_arns(pulumi_mocks):
    build(
        pulumi_mocks,
        sweeper_args(
            s3=S3,
            stuck_uploads={"status": "created"},
            orphaned_objects={"prefix": "uploads/", "id_pattern": "^uploads/([^/]+)/"},
        ),
    )
    found = statements(pulumi_mocks, "video-policy")
    assert set(found) == {"Logs", "Metrics", "Table", "Objects", "ListPrefix", "ListUploads", "DeletionBudget"}
    assert found["Table"]["Resource"] == [TABLE_ARN]
    assert found["Table"]["Action"] == [
        "dynamodb:BatchGetItem",
        "dynamodb:DeleteItem",
        "dynamodb:DescribeTable",
        "dynamodb:GetItem",
        "dynamodb:Scan",
        "dynamodb:UpdateItem",
    ]
    assert found["Objects"]["Resource"] == ["arn:aws:s3:::uploads-bucket/uploads/*"]
    assert found["Objects"]["Action"] == [
        "s3:AbortMultipartUpload",
        "s3:DeleteObject",
        "s3:GetObject",
        "s3:GetObjectTagging",
        "s3:ListMultipartUploadParts",
        "s3:PutObjectTagging",
    ]
    assert found["ListPrefix"] == {
        "Sid": "ListPrefix",
        "Effect": "Allow",
        "Action": ["s3:ListBucket"],
        "Resource": ["arn:aws:s3:::uploads-bucket"],
        "Condition": {"StringLike": {"s3:prefix": ["uploads/*"]}},
    }
    # Orphaned uploads: ListBucketMultipartUploads has no s3:prefix condition key, so the whole bucket.
    assert (found["ListUploads"]["Action"], found["ListUploads"]["Resource"]) == (
        ["s3:ListBucketMultipartUploads"],
        ["arn:aws:s3:::uploads-bucket"],
    )
    assert found["Metrics"]["Condition"] == {"StringEquals": {"cloudwatch:namespace": "Expiry"}}
    log_group = pulumi_mocks.one("aws:cloudwatch/logGroup:LogGroup")
    assert found["Logs"]["Resource"][1] == found["Logs"]["Resource"][0] + ":*"
    assert log_group.inputs["name"] in found["Logs"]["Resource"][0]
    for sid, statement in found.items():
        assert statement["Effect"] == "Allow"
        if "*" in statement["Resource"]:
            assert sid == "Metrics" and "Condition" in statement  # the only wildcard, held by a condition


def test_expiry_index_is_queried_not_scanned(pulumi_mocks):
    def program():
        table = TtlTable("sessions", {"hash_key": "uploadSessionId", "ttl_attribute": "ttl", "expiry_index": True})
        args = {"kind": "sweep", "schedule": "rate(1 hour)", "unindexed_check_items": 0, **table_target(table)}
        return ScheduledSweeper("video", args)

    pulumi_mocks.run(program)
    found = statements(pulumi_mocks, "video-policy")
    table_arn = pulumi_mocks.one("aws:dynamodb/table:Table", "sessions-table").urn and found["Table"]["Resource"][0]
    assert found["ExpiryIndex"] == {
        "Sid": "ExpiryIndex",
        "Effect": "Allow",
        "Action": ["dynamodb:Query"],
        "Resource": [f"{table_arn}/index/expiry-index"],
    }
    assert "dynamodb:Scan" not in found["Table"]["Action"]
    job = parse_job(json.loads(pulumi_mocks.one(FUNCTION).inputs["environment"]["variables"]["EXPIRY_JOB"]))
    assert job.expiry_index is not None and job.expiry_index.shards == 10
    assert job.table == "sessions-table-physical"


def test_with_an_expiry_index_items_without_a_shard_are_checked_by_default(pulumi_mocks):
    """Issue 18, finding 10: with `expiry_index: true` as README shows it, items written without the
    shard attribute were neither swept nor reported."""

    def program():
        table = TtlTable("sessions", {"hash_key": "uploadSessionId", "ttl_attribute": "ttl", "expiry_index": True})
        sweeper = ScheduledSweeper("video", {"kind": "sweep", "schedule": "rate(1 hour)", **table_target(table)})
        CleanupAlarms("alarms", {"jobs": [watched_job(sweeper)]})

    pulumi_mocks.run(program)
    job = parse_job(json.loads(pulumi_mocks.one(FUNCTION).inputs["environment"]["variables"]["EXPIRY_JOB"]))
    assert job.unindexed_check_items == 10_000
    assert "dynamodb:Scan" in statements(pulumi_mocks, "video-policy")["Table"]["Action"]
    alarms = [r.name for r in pulumi_mocks.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")]
    assert any("unindexed-expired" in name for name in alarms), alarms


def test_monitor_is_read_only(pulumi_mocks):
    build(pulumi_mocks, sweeper_args(kind="ttl-monitor", schedule="rate(1 hour)", namespace="Chat/Cleanup"))
    found = statements(pulumi_mocks, "video-policy")
    assert found["Table"]["Action"] == ["dynamodb:DescribeTable", "dynamodb:DescribeTimeToLive", "dynamodb:Scan"]
    assert found["Metrics"]["Condition"]["StringEquals"]["cloudwatch:namespace"] == "Chat/Cleanup"
    assert pulumi_mocks.one(FUNCTION).inputs["handler"] == "expiry.runtime.handlers.ttl_monitor.handler"


def test_references_policy_reaches_the_target_table(pulumi_mocks):
    target = "arn:aws:dynamodb:us-east-1:123456789012:table/actors"
    build(
        pulumi_mocks,
        sweeper_args(
            kind="orphaned-references",
            key_attributes=["id", "bucket_name"],
            references={
                "hash_value": "_actingweb_oauth2",
                "owner_attribute": "data",
                "owner_format": "json",
                "indexes": [{"range_prefix": "_access_token_index:", "target": ["{owner}", "mcp_tokens:{token}"]}],
                "target_table_name": "actors",
                "target_table_arn": target,
            },
        ),
    )
    found = statements(pulumi_mocks, "video-policy")
    assert found["ReferenceTargets"]["Resource"] == [target]
    assert found["ReferenceTargets"]["Action"] == ["dynamodb:GetItem"]
    assert found["Table"]["Action"] == ["dynamodb:DeleteItem", "dynamodb:Query"]  # no Scan
    assert pulumi_mocks.one(FUNCTION).inputs["handler"] == "expiry.runtime.handlers.orphaned_references.handler"


def test_concurrency_reservation_can_be_turned_off_and_sizes_set(pulumi_mocks):
    build(
        pulumi_mocks,
        sweeper_args(
            reserve_concurrency=False,
            timeout_seconds=900,
            memory_mb=1024,
            architecture="x86_64",
            log_retention_days=365,
        ),
    )
    fn = pulumi_mocks.one(FUNCTION).inputs
    assert "reservedConcurrentExecutions" not in fn
    assert (fn["timeout"], fn["memorySize"], fn["architectures"]) == (900, 1024, ["x86_64"])
    assert pulumi_mocks.one("aws:cloudwatch/logGroup:LogGroup").inputs["retentionInDays"] == 365


BAD = [
    ({"schedule": "rate(0 hours)"}, "schedule: rate value must be at least 1"),
    ({"schedule": "rate(1 hours)"}, "schedule: AWS wants rate(1 hour)"),
    ({"schedule": "rate(5 minute)"}, "schedule: AWS wants rate(5 minutes)"),
    ({"schedule": "rate(5 weeks)"}, "schedule: must be rate(N unit), cron(6 fields) or at("),
    ({"schedule": "cron(0 3 * * *)"}, "schedule: cron needs 6 fields"),
    ({"schedule": "cron(0 3 * * * *)"}, "schedule: exactly one of day-of-month and day-of-week must be '?'"),
    ({"schedule": "cron(0 3 ? * ? *)"}, "schedule: exactly one of day-of-month and day-of-week must be '?'"),
    ({"schedule": "cron(61 3 * * ? *)"}, "schedule: cron minutes field '61': 61 is outside 0..59"),
    ({"schedule": "cron(0 25 * * ? *)"}, "schedule: cron hours field '25': 25 is outside 0..23"),
    ({"schedule": "cron(0 3 * FOO ? *)"}, "schedule: cron month field 'FOO'"),
    ({"schedule": "cron(0 3 ? * MON#6 *)"}, "'#' takes a week number 1..5"),
    ({"schedule": "cron(0;drop 3 * * ? *)"}, "has characters AWS does not accept"),
    ({"schedule": "at(2026-13-01T00:00:00)"}, "schedule: at() needs a real date and time"),
    ({"schedule": "every day"}, "schedule: must be rate(N unit)"),
    ({"schedule_timezone": "Mars/Olympus"}, "schedule_timezone: unknown IANA time zone 'Mars/Olympus'"),
    ({"timeout_seconds": 0}, "timeout_seconds: must be an integer in 1..900, got 0"),
    ({"timeout_seconds": 901}, "timeout_seconds: must be an integer in 1..900, got 901"),
    ({"memory_mb": 127}, "memory_mb: must be an integer in 128..10240, got 127"),
    ({"memory_mb": 10241}, "memory_mb: must be an integer in 128..10240"),
    ({"s3": {"key_attribute": "k"}}, "ScheduledSweeper: s3.bucket: must be a non-empty string"),
    ({"stuck_uploads": {"status": "created"}}, "ScheduledSweeper: stuck_uploads: needs the s3 section"),
    ({"kind": "ttl-monitor", "s3": S3}, "ScheduledSweeper: unknown settings ['s3']"),
    ({"kind": "purge"}, "ScheduledSweeper: kind: must be one of ttl-monitor, sweep, orphaned-references"),
    ({"kind": "stream-cascade", "s3": S3}, "ScheduledSweeper: kind: stream-cascade jobs run on the table's stream"),
    (
        {"s3": {**S3, "keep_statuses": [f"status-{i:04}-with-a-long-descriptive-name" for i in range(120)]}},
        "ScheduledSweeper: environment: the job's settings take",
    ),
    ({"log_retention_days": 10}, "log_retention_days: must be one of"),
    ({"flexible_window_minutes": 2000}, "flexible_window_minutes: must be an integer in 0..1440"),
    ({"safety_margin_seconds": 60, "timeout_seconds": 30}, "safety_margin_seconds: must be less than timeout_seconds"),
    ({"hooks_path": "/nonexistent/hooks.py"}, "hooks_path: must be a .py file or a package directory"),
    ({"table_arn": None}, "table_arn: is required"),
    ({"architecture": "sparc"}, "architecture: must be one of arm64, x86_64"),
    ({"schedulee": "rate(1 hour)"}, "args: unknown fields ['schedulee']"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[m.split(":")[0][:40] for _, m in BAD])
def test_bad_input_is_refused_before_anything_registers(pulumi_mocks, build_dir, overrides, message):
    with pytest.raises(ValueError) as error:
        build(pulumi_mocks, sweeper_args(**overrides))
    assert str(error.value).startswith("ScheduledSweeper: ")
    assert message in str(error.value)
    assert pulumi_mocks.resources == []
    assert not build_dir.exists() or not any(build_dir.iterdir())


@pytest.mark.parametrize(
    "expression",
    [
        "rate(1 minute)",
        "rate(15 minutes)",
        "rate(1 day)",
        "cron(0 3 * * ? *)",
        "cron(0/15 * ? * MON-FRI *)",
        "cron(0 12 L * ? 2026-2030)",
        "cron(30 9 ? * 2#1 *)",
        "cron(0 0 1,15 JAN,JUL ? *)",
        "at(2099-01-01T00:00:00)",
    ],
)
def test_valid_schedules(pulumi_mocks, expression):
    build(pulumi_mocks, sweeper_args(schedule=expression))
    assert pulumi_mocks.one(SCHEDULE).inputs["scheduleExpression"] == expression


def job_of(harness, name: str) -> dict[str, Any]:
    function = harness.one(FUNCTION, f"{name}-function")
    return json.loads(function.inputs["environment"]["variables"]["EXPIRY_JOB"])


def test_a_table_given_whole_is_what_its_fields_were(pulumi_mocks):
    """Issue 19: `table` takes a TtlTable's `target` in one input; table_target() gives the same job."""

    def program() -> None:
        table = TtlTable("sessions", {"hash_key": "uploadSessionId", "ttl_attribute": "ttl", "expiry_index": True})
        for name, args in (("whole", {"table": table.target}), ("fields", table_target(table))):
            ScheduledSweeper(name, {"kind": "sweep", "schedule": "rate(1 hour)", "job_name": "video", **args})

    pulumi_mocks.run(program)
    whole, fields = job_of(pulumi_mocks, "whole"), job_of(pulumi_mocks, "fields")
    assert {k: val for k, val in whole.items() if k != "budget_table_name"} == {
        k: val for k, val in fields.items() if k != "budget_table_name"
    }
    assert whole["key_attributes"] == ["uploadSessionId"] and whole["ttl_attribute"] == "ttl"
    index = ("expiry_index_name", "expiry_index_shards", "expiry_shard_attribute")
    assert [whole[key] for key in index] == ["expiry-index", 10, "expiry_shard"]
    assert whole["table_name"] == "sessions-table-physical"
    assert (
        statements(pulumi_mocks, "whole-policy")["ExpiryIndex"]
        == statements(pulumi_mocks, "fields-policy")["ExpiryIndex"]
    )


TARGET = {"table_name": "upload-sessions", "table_arn": TABLE_ARN, "key_attributes": ["id"], "ttl_attribute": "ttl"}
ALL_FIELDS = (
    "table_name, table_arn, key_attributes, ttl_attribute, expiry_index_name, expiry_index_shards, "
    "expiry_shard_attribute"
)
TABLE_BAD: list[tuple[Any, str]] = [
    (
        lambda: {"table": TARGET, "table_name": "other"},
        f"ScheduledSweeper: table: give either table or {ALL_FIELDS}, not both (also given: table_name)",
    ),
    (
        lambda: {"table": TARGET, "key_attributes": ["id"], "expiry_index_name": "by-expiry"},
        "not both (also given: key_attributes, expiry_index_name)",
    ),
    (lambda: {"table": {**TARGET, "tabel_name": "x"}}, "ScheduledSweeper: table.tabel_name: unknown key; a table"),
    (
        lambda: {"table": {k: val for k, val in TARGET.items() if k != "table_arn"}},
        "ScheduledSweeper: table.table_arn: is required",
    ),
    (
        lambda: {"table": pulumi.Output.from_input(TARGET)},
        "ScheduledSweeper: table: must be known at construction (a TtlTable's target)",
    ),
    (
        lambda: {"table": {**TARGET, "key_attributes": pulumi.Output.from_input(["id"])}},
        "ScheduledSweeper: table.key_attributes: must be a plain value known at construction",
    ),
    (
        lambda: {"table": {**TARGET, "key_attributes": ["a", "b", "c"]}},
        "ScheduledSweeper: table.key_attributes: must be the hash key and optional range key",
    ),
    (lambda: {"table": "upload-sessions"}, "ScheduledSweeper: table: must be a TtlTable's target (a mapping)"),
    (
        lambda: {"table": {**TARGET, "stream_view_type": "OLD"}},
        "ScheduledSweeper: table.stream_view_type: must be one of",
    ),
    (lambda: {}, "ScheduledSweeper: table_name: is required (or give table, a TtlTable's target)"),
    (
        lambda: {"kind": "pg-purge", "table": TARGET},
        "ScheduledSweeper: table: is a DynamoDB table; pg-purge jobs name their PostgreSQL table in table_name",
    ),
]


@pytest.mark.parametrize(("args", "message"), TABLE_BAD, ids=[m.split(": ", 1)[1][:40] for _, m in TABLE_BAD])
def test_a_bad_table_input_is_refused_by_name_before_anything_registers(pulumi_mocks, args, message):
    with pytest.raises(ValueError) as error:
        pulumi_mocks.run(lambda: ScheduledSweeper("video", {"kind": "sweep", "schedule": "rate(1 hour)", **args()}))
    assert message in str(error.value)
    assert pulumi_mocks.resources == []
