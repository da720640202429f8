"""TtlStreamCascade under Pulumi's mocks: the event source mapping, the function, IAM statement by
statement, its alarms (CleanupAlarms'), bad input; and the archive it builds, run on a stream batch
against moto_server."""

import json
from typing import Any

import pytest
from test_bundle import run_from_archive
from uploads_world import BUCKET, NOW, S3_SETTINGS, TABLE, create_table, object_keys, put_session

from expiry.components.cleanup_alarms import CleanupAlarms, watched_stream
from expiry.components.stream_cascade import TtlStreamCascade, stream_target
from expiry.components.ttl_table import TtlTable
from expiry.runtime.jobs.config import parse_job

MAPPING = "aws:lambda/eventSourceMapping:EventSourceMapping"
FUNCTION = "aws:lambda/function:Function"
POLICY = "aws:iam/rolePolicy:RolePolicy"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


@pytest.fixture(autouse=True)
def build_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPIRY_BUILD_DIR", str(tmp_path / "build"))


def sessions(view: str | None = "OLD_IMAGE") -> TtlTable:
    args: dict[str, Any] = {"hash_key": "uploadSessionId", "ttl_attribute": "ttl", "table_name": TABLE}
    if view:
        args["stream_view_type"] = view
    return TtlTable("sessions", args)


def build(harness, **args: Any) -> None:
    def program() -> None:
        TtlStreamCascade(
            "cascade",
            {
                **stream_target(sessions()),
                "s3": {**S3_SETTINGS, "object_prefix": "uploads/"},
                "archive_bucket": "archive-bucket",
                **args,
            },
        )

    harness.run(program)


def test_the_mapping_sees_only_ttl_deletions_and_reports_partial_failures(pulumi_mocks):
    build(pulumi_mocks)
    mapping = pulumi_mocks.one(MAPPING).inputs
    (criterion,) = mapping["filterCriteria"]["filters"]
    assert json.loads(criterion["pattern"]) == {
        "eventName": ["REMOVE"],
        "userIdentity": {"type": ["Service"], "principalId": ["dynamodb.amazonaws.com"]},
    }
    assert mapping["functionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["bisectBatchOnFunctionError"] is True and mapping["maximumRetryAttempts"] == 10
    assert mapping["startingPosition"] == "TRIM_HORIZON" and mapping["batchSize"] == 100
    assert mapping["destinationConfig"]["onFailure"]["destinationArn"].startswith("arn:aws:sqs:")
    assert mapping["eventSourceArn"].endswith("/stream/2026-01-01T00:00:00.000")
    function = pulumi_mocks.one(FUNCTION).inputs
    assert function["handler"] == "expiry.runtime.handlers.stream_cascade.handler"
    job = parse_job(json.loads(function["environment"]["variables"]["EXPIRY_JOB"]))
    assert job.kind == "stream-cascade" and job.s3.keep_statuses == ("uploaded",) and job.archive.prefix == "expired/"
    assert all(
        r.parent == pulumi_mocks.urn_of("expiry:index:TtlStreamCascade", "cascade")
        for r in [pulumi_mocks.one(MAPPING), pulumi_mocks.one(FUNCTION)]
    )


def test_policy_names_exact_resources(pulumi_mocks):
    build(pulumi_mocks, s3={**S3_SETTINGS, "object_prefix": "uploads/", "owner_index": "key-owner-index"})
    policy = json.loads(pulumi_mocks.one(POLICY).inputs["policy"])
    found = {s["Sid"]: s for s in policy["Statement"]}
    assert set(found) == {
        *("Logs", "Metrics", "Stream", "ListStreams", "FailedBatches", "Table", "OwnerIndex", "Objects"),
        *("ListPrefix", "Archive"),
    }
    assert found["Table"]["Action"] == ["dynamodb:GetItem"]  # with an owner index, it never scans
    assert found["OwnerIndex"]["Resource"] == [found["Table"]["Resource"][0] + "/index/key-owner-index"]
    assert found["ListPrefix"]["Condition"] == {"StringLike": {"s3:prefix": ["uploads/*"]}}  # HeadObject: 404
    assert found["Objects"]["Resource"] == [f"arn:aws:s3:::{BUCKET}/uploads/*"]
    assert "s3:PutObjectTagging" in found["Objects"]["Action"] and "s3:DeleteObject" in found["Objects"]["Action"]
    assert found["Archive"] == {
        "Sid": "Archive",
        "Effect": "Allow",
        "Action": ["s3:PutObject"],
        "Resource": ["arn:aws:s3:::archive-bucket/expired/*"],
    }
    for sid, statement in found.items():
        if "*" in statement["Resource"]:
            assert sid == "Metrics" and "Condition" in statement


def test_alone_it_makes_no_alarms_and_cleanup_alarms_makes_its_four(pulumi_mocks):
    build(pulumi_mocks, iterator_age_alarm_seconds=600)
    assert pulumi_mocks.of_type(ALARM) == []

    def program() -> TtlStreamCascade:
        cascade = TtlStreamCascade("cascade", {**stream_target(sessions()), "s3": S3_SETTINGS, "paused": True})
        CleanupAlarms("alarms", {"jobs": [watched_stream(cascade)]})
        return cascade

    pulumi_mocks.monitor.registered.clear()
    cascade = pulumi_mocks.run(program)
    # What other languages build the watched job from: the cascade's outputs.
    outputs = ("kind", "job_name", "table_name", "failure_queue_name", "timeout_seconds", "iterator_age_alarm_seconds")
    assert [pulumi_mocks.value(getattr(cascade, output)) for output in outputs] == [
        "stream-cascade",
        "cascade",
        TABLE,
        "cascade-failures-physical",
        120,
        3600,
    ]
    alarms = {r.name: r for r in pulumi_mocks.of_type(ALARM)}
    # The names a TtlStreamCascade gave its own alarms, physical names generated; CleanupAlarms' children.
    assert set(alarms) == {"cascade-iterator-age", "cascade-errors", "cascade-failed-batches", "cascade-cleanup-errors"}
    parent = pulumi_mocks.urn_of("expiry:index:CleanupAlarms", "alarms")
    assert all(r.parent == parent and "name" not in r.inputs for r in alarms.values())
    inputs = {name: r.inputs for name, r in alarms.items()}
    assert inputs["cascade-iterator-age"]["threshold"] == 3_600_000
    assert inputs["cascade-iterator-age"]["dimensions"] == {"FunctionName": "cascade-function-physical"}
    assert inputs["cascade-failed-batches"]["dimensions"] == {"QueueName": "cascade-failures-physical"}
    assert inputs["cascade-cleanup-errors"]["dimensions"] == {"Job": "cascade", "Table": TABLE}
    topic = pulumi_mocks.value(pulumi_mocks.one("aws:sns/topic:Topic").inputs["name"])
    assert all(
        a["alarmActions"] == [f"arn:aws:sns:us-east-1:123456789012:alarms-topic/{topic}"] for a in inputs.values()
    )
    body = json.loads(pulumi_mocks.one("aws:cloudwatch/dashboard:Dashboard").inputs["dashboardBody"])
    assert "`cascade`" in body["widgets"][0]["properties"]["markdown"]  # deployed paused


def test_an_alarm_topic_is_refused_naming_cleanup_alarms(pulumi_mocks):
    with pytest.raises(ValueError, match=r"TtlStreamCascade: alarm_topic_arn: .*watched_stream"):
        build(pulumi_mocks, alarm_topic_arn="arn:aws:sns:us-east-1:123456789012:alarms")
    assert pulumi_mocks.of_type(MAPPING) == [] and pulumi_mocks.of_type(FUNCTION) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"batch_size": 0}, "TtlStreamCascade: batch_size: must be an integer in 1..10000"),
        ({"starting_position": "AT_TIMESTAMP"}, "TtlStreamCascade: starting_position: must be one of"),
        ({"archive_prefix": "x/", "archive_bucket": None}, "TtlStreamCascade: archive_prefix: needs archive_bucket"),
        ({"s3": None, "archive_bucket": None}, "TtlStreamCascade: s3: a stream-cascade job needs s3"),
        ({"colour": "red"}, "TtlStreamCascade"),
    ],
)
def test_bad_input_names_the_field_and_registers_nothing(pulumi_mocks, args, message):
    def program() -> None:
        raw = {**stream_target(sessions()), "s3": S3_SETTINGS, "archive_bucket": "archive-bucket", **args}
        TtlStreamCascade("cascade", {k: val for k, val in raw.items() if val is not None})

    with pytest.raises(ValueError, match=message):
        pulumi_mocks.run(program)
    assert pulumi_mocks.of_type(MAPPING) == [] and pulumi_mocks.of_type(FUNCTION) == []


def test_a_table_without_old_images_is_refused(pulumi_mocks):
    def program() -> None:
        stream_target(sessions(view="NEW_IMAGE"))

    with pytest.raises(ValueError, match="TtlStreamCascade: stream_arn: the table's stream must carry old images"):
        pulumi_mocks.run(program)


def test_the_shipped_archive_handles_a_stream_batch(pulumi_mocks, tmp_path, moto_server):
    from aws import aws_backend

    build(pulumi_mocks)
    function = pulumi_mocks.one(FUNCTION).inputs
    job = json.loads(function["environment"]["variables"]["EXPIRY_JOB"]) | {"table_name": TABLE}
    job["s3"]["bucket"], job["archive_bucket"] = BUCKET, "archive-bucket"
    with aws_backend("moto_server", moto_server) as aws:
        create_table(aws.dynamodb)
        aws.s3.create_bucket(Bucket=BUCKET)
        aws.s3.create_bucket(Bucket="archive-bucket")
        aws.s3.put_object(Bucket=BUCKET, Key="uploads/2025-08-21/a.mp4", Body=b"x")
        put_session(aws.dynamodb, "a", NOW - 60, key="uploads/2025-08-21/a.mp4", status="created")
        old = aws.dynamodb.delete_item(TableName=TABLE, Key={"uploadSessionId": {"S": "a"}}, ReturnValues="ALL_OLD")[
            "Attributes"
        ]
        event = {
            "Records": [
                {
                    "eventID": "1",
                    "eventName": "REMOVE",
                    "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
                    "dynamodb": {"ApproximateCreationDateTime": NOW, "OldImage": old, "SequenceNumber": "7"},
                }
            ]
        }
        result = run_from_archive(function["code"].path, tmp_path, function["handler"], job, moto_server.url, event)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout.split("RESULT ", 1)[1]) == {"batchItemFailures": []}
        assert object_keys(aws.s3) == set()
        assert aws.s3.list_objects_v2(Bucket="archive-bucket")["KeyCount"] == 1


def test_a_table_given_whole_is_what_stream_target_gave(pulumi_mocks):
    """Issue 19: `table` takes a TtlTable's `target` in one input; stream_target() gives the same cascade."""

    def program() -> None:
        table = sessions()
        for name, args in (("whole", {"table": table.target}), ("fields", stream_target(table))):
            TtlStreamCascade(name, {"job_name": "cascade", "s3": S3_SETTINGS, **args})

    pulumi_mocks.run(program)
    functions = {r.name: r.inputs["environment"]["variables"]["EXPIRY_JOB"] for r in pulumi_mocks.of_type(FUNCTION)}
    assert functions["whole-function"] == functions["fields-function"]
    assert json.loads(functions["whole-function"])["key_attributes"] == ["uploadSessionId"]
    mappings = {r.name: r.inputs["eventSourceArn"] for r in pulumi_mocks.of_type(MAPPING)}
    assert mappings["whole-stream"] == mappings["fields-stream"] and "/stream/" in mappings["whole-stream"]


@pytest.mark.parametrize(
    ("view", "extra", "message"),
    [
        ("NEW_IMAGE", {}, "TtlStreamCascade: stream_arn: the table's stream must carry old images"),
        (None, {}, "TtlStreamCascade: stream_arn: the table's stream must carry old images"),
        ("OLD_IMAGE", {"stream_arn": "arn"}, "TtlStreamCascade: table: give either table or table_name, table_arn,"),
        ("OLD_IMAGE", {"key_attributes": ["id"]}, r"not both \(also given: key_attributes\)"),
    ],
)
def test_a_table_given_whole_without_old_images_or_with_its_fields_is_refused(pulumi_mocks, view, extra, message):
    def program() -> None:
        TtlStreamCascade("cascade", {"table": sessions(view).target, "s3": S3_SETTINGS, **extra})

    with pytest.raises(ValueError, match=message):
        pulumi_mocks.run(program)
    assert pulumi_mocks.of_type(MAPPING) == [] and pulumi_mocks.of_type(FUNCTION) == []
