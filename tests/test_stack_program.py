"""__main__.py under the mocks with the config the Pulumi CLI would hand it: dev and prod."""

import json
import runpy
from collections import Counter

import pulumi
import pytest
from stack_config import ROOT, declared_settings, stack_config

from expiry.runtime.jobs.config import parse_job
from stack.settings import SettingError

TABLE = "aws:dynamodb/table:Table"
FUNCTION = "aws:lambda/function:Function"


@pytest.fixture(autouse=True)
def build_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EXPIRY_BUILD_DIR", str(tmp_path_factory.getbasetemp() / "stack-build"))


def run_program(harness, config: dict[str, str]) -> None:
    pulumi.runtime.set_all_config(config, secret_keys=["expiry:postgresPassword"])
    harness.run(lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__"))


def counts(harness) -> Counter:
    return Counter(r.type for r in harness.resources)


def jobs(harness) -> dict[str, object]:
    return {
        r.name.removesuffix("-function"): parse_job(json.loads(r.inputs["environment"]["variables"]["EXPIRY_JOB"]))
        for r in harness.of_type(FUNCTION)
        if "environment" in r.inputs
    }


def test_every_declared_setting_has_type_description_and_default():
    for key, spec in declared_settings().items():
        assert spec.get("type") in {"string", "integer", "boolean", "array"}, key
        assert spec.get("description"), key
        assert "default" in spec, key  # a declared key without one would be demanded of every stack


def test_prod_as_shipped_asks_for_the_database_password_by_name(pulumi_mocks):
    with pytest.raises(pulumi.ConfigMissingError) as raised:
        run_program(pulumi_mocks, stack_config("prod"))
    assert "expiry:postgresPassword" in str(raised.value)
    assert pulumi_mocks.of_type(TABLE) == []


def test_dev_stack(pulumi_mocks):
    run_program(pulumi_mocks, stack_config("dev"))
    found = counts(pulumi_mocks)
    assert found["expiry:index:TtlTable"] == 5 and found[TABLE] == 6  # and the sweepers' budget ledger
    assert found["expiry:index:ScheduledSweeper"] == 3 and found["expiry:index:TtlStreamCascade"] == 1
    assert found[FUNCTION] == 4
    assert found["expiry:index:CleanupAlarms"] == 1 and found["aws:s3/bucket:Bucket"] == 1
    assert found["expiry:index:PgCronCleanup"] == 0
    tables = {r.inputs["name"]: r.inputs for r in pulumi_mocks.of_type(TABLE)}
    assert set(tables) == {
        "collections-checkpoints-dev",
        "upload-sessions-dev",
        "active-jobs-dev",
        "interruptions-dev",
        "actingweb_dev_attributes",
        "expiry-deletion-budget-dev",
    }
    deleting = [job for job in jobs(pulumi_mocks).values() if job.kind in ("sweep", "orphaned-references")]
    assert len(deleting) == 2 and {job.breaker.budget_table for job in deleting} == {"expiry-deletion-budget-dev"}
    checkpoints = tables["collections-checkpoints-dev"]
    assert (checkpoints["hashKey"], checkpoints["rangeKey"]) == ("thread_id", "checkpoint_id")
    # No seed application writes the expiry shard, so by default no table has an expiry index.
    assert {g["name"] for g in checkpoints["globalSecondaryIndexes"]} == {"user_id-last_activity-index"}
    assert tables["upload-sessions-dev"]["ttl"]["attributeName"] == "ttl"
    assert tables["upload-sessions-dev"]["hashKey"] == "uploadSessionId"
    # The ownership rule's index on the object key: the only index of the upload sessions.
    (owner_index,) = tables["upload-sessions-dev"]["globalSecondaryIndexes"]
    assert owner_index["name"] == "key-owner-index" and owner_index["projectionType"] == "KEYS_ONLY"
    assert owner_index["keySchemas"] == [{"keyType": "HASH", "attributeName": "key"}]
    assert tables["active-jobs-dev"]["ttl"]["attributeName"] == "expiresAt"
    assert tables["actingweb_dev_attributes"]["ttl"]["attributeName"] == "ttl_timestamp"
    assert all(t["deletionProtectionEnabled"] is False for t in tables.values())
    assert all(t["tags"] == {"project": "expiry", "environment": "dev", "team": "platform"} for t in tables.values())
    found_jobs = jobs(pulumi_mocks)
    assert {name: job.kind for name, job in found_jobs.items()} == {
        "checkpoints-monitor": "ttl-monitor",
        "upload-sweeper": "sweep",
        "upload-cascade": "stream-cascade",
        "attribute-index-cleanup": "orphaned-references",
    }
    assert all(job.dry_run for job in found_jobs.values())
    sweeper = found_jobs["upload-sweeper"]
    assert sweeper.orphaned_objects.prefix == "uploads/"
    # The default cascade: TTL deletes sessions, the stream cascade cleans after it, the sweeper
    # marks finished videos ahead of TTL and removes orphans.
    assert sweeper.delete_expired is False and sweeper.stuck_uploads is None
    cascade = found_jobs["upload-cascade"]
    assert cascade.kind == "stream-cascade" and cascade.s3.keep_statuses == ("uploaded",)
    mapping = pulumi_mocks.one("aws:lambda/eventSourceMapping:EventSourceMapping").inputs
    assert mapping["eventSourceArn"].startswith("arn:aws:dynamodb:") and "/stream/" in mapping["eventSourceArn"]
    topic = pulumi_mocks.stack_outputs()["alarm_topic_arn"]
    cascade_alarms = [
        r
        for r in pulumi_mocks.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
        if r.name.startswith("upload-cascade-")
    ]
    assert len(cascade_alarms) == 4 and all(a.inputs["alarmActions"] == [topic] for a in cascade_alarms)
    # The upload document's own names, statuses and key layout.
    assert sweeper.key_attributes == ("uploadSessionId",) and sweeper.ttl_attribute == "ttl"
    assert (sweeper.s3.key_attribute, sweeper.s3.upload_id_attribute, sweeper.s3.status_attribute) == (
        "key",
        "s3UploadId",
        "status",
    )
    assert sweeper.s3.keep_statuses == ("uploaded",) and sweeper.s3.keep_marker == "tag"
    assert sweeper.s3.mark_ahead_seconds == 2 * 6 * 3600
    match = sweeper.orphaned_objects.id_pattern.search("uploads/2025-08-21/3f2a9c.mp4")
    assert match and match.group("id") == "3f2a9c"
    assert sweeper.expiry_index is None  # the application writes no shard: the sweeper Scans
    assert sweeper.breaker.max_share == 0.5 and not sweeper.breaker.allow_mass_deletion
    lifecycle = pulumi_mocks.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs
    assert lifecycle["rules"][0]["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 1}
    schedules = {
        r.name: r.inputs["scheduleExpression"] for r in pulumi_mocks.of_type("aws:scheduler/schedule:Schedule")
    }
    assert schedules == {
        "checkpoints-monitor-schedule": "rate(1 hour)",
        "upload-sweeper-schedule": "rate(6 hours)",
        "attribute-index-cleanup-schedule": "cron(0 3 * * ? *)",
    }
    logs = {r.inputs["retentionInDays"] for r in pulumi_mocks.of_type("aws:cloudwatch/logGroup:LogGroup")}
    assert logs == {14}
    email = pulumi_mocks.one("aws:sns/topicSubscription:TopicSubscription").inputs
    assert email["endpoint"] == "dev-alerts@example.com"
    outputs = pulumi_mocks.stack_outputs()
    assert outputs["checkpoints_table_name"] == "collections-checkpoints-dev"
    assert outputs["upload_sessions_table_arn"].startswith("arn:aws:dynamodb:")
    assert outputs["upload_sweeper_function_name"] == "upload-sweeper-function-physical"
    assert outputs["alarm_topic_arn"].startswith("arn:aws:sns:")
    assert outputs["dashboard_url"] == (
        "https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#dashboards:name=cleanup-alarms-test"
    )


def test_the_sweep_cascade_deletes_expired_sessions_with_the_documents_stuck_rule(pulumi_mocks):
    run_program(pulumi_mocks, stack_config("dev", uploadsCascade="sweep"))
    sweeper = jobs(pulumi_mocks)["upload-sweeper"]
    assert sweeper.delete_expired is True and sweeper.stuck_uploads.older_than_seconds == 3600
    assert (sweeper.stuck_uploads.status, sweeper.stuck_uploads.since_attribute) == ("created", "ttl")
    assert sweeper.stuck_uploads.partial_status == "partial"
    assert pulumi_mocks.of_type("expiry:index:TtlStreamCascade") == []
    table = next(r.inputs for r in pulumi_mocks.of_type(TABLE) if r.inputs["name"] == "upload-sessions-dev")
    assert not table.get("streamEnabled")


def test_expired_sessions_can_be_archived(pulumi_mocks):
    run_program(pulumi_mocks, stack_config("dev", uploadsArchiveExpired=True))
    cascade = jobs(pulumi_mocks)["upload-cascade"]
    assert cascade.archive is not None and cascade.archive.prefix == "expired/"
    assert pulumi_mocks.stack_outputs()["expired_archive_bucket_name"] == "expired-archive-physical"


def test_prod_differs_where_it_should(pulumi_mocks):
    # What the README asks of a prod operator: pulumi config set --secret expiry:postgresPassword ...
    run_program(pulumi_mocks, stack_config("prod", postgresPassword="s3cret-set-by-the-operator"))
    found = counts(pulumi_mocks)
    assert found["expiry:index:PgCronCleanup"] == 1 and found["expiry:index:ScheduledSweeper"] == 4
    tables = {r.inputs["name"]: r.inputs for r in pulumi_mocks.of_type(TABLE)}
    assert "collections-checkpoints-prod" in tables
    assert all(t["deletionProtectionEnabled"] is True for t in tables.values())
    assert not any(job.dry_run for job in jobs(pulumi_mocks).values())  # real deletes
    assert {r.inputs["retentionInDays"] for r in pulumi_mocks.of_type("aws:cloudwatch/logGroup:LogGroup")} == {365}
    cleanup = pulumi_mocks.one("pulumi-python:dynamic/expiry:PgCronJob").inputs
    assert (cleanup["table"], cleanup["expiry_column"], cleanup["schedule"]) == (
        "attributes",
        "ttl_timestamp",
        "0 3 * * *",
    )
    assert cleanup["host"] == "actingweb-db.internal.example.com"
    monitor = jobs(pulumi_mocks)["attributes-pg-monitor"]
    assert monitor.kind == "pg-monitor" and monitor.purge["job_name"] == "attributes-purge"
    pg_function = next(r.inputs for r in pulumi_mocks.of_type(FUNCTION) if r.name == "attributes-pg-monitor-function")
    assert pg_function["vpcConfig"]["subnetIds"] == ["subnet-0aaa1111bbbb2222c", "subnet-0ddd3333eeee4444f"]
    assert "s3cret" not in json.dumps(pg_function["environment"])
    alarms = {r.name for r in pulumi_mocks.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    assert "cleanup-alarms-attributes-pg-monitor-pg-last-success" in alarms


def test_systems_can_be_turned_off(pulumi_mocks):
    run_program(pulumi_mocks, stack_config("dev", uploadsEnabled=False, jobClaimsEnabled=False, actingwebEnabled=False))
    assert {r.inputs["name"] for r in pulumi_mocks.of_type(TABLE)} == {"collections-checkpoints-dev"}
    assert pulumi_mocks.of_type("aws:s3/bucket:Bucket") == []
    before = len(pulumi_mocks.resources)
    run_program(
        pulumi_mocks, stack_config("dev", checkpointsEnabled=False, uploadsEnabled=False, actingwebEnabled=False)
    )
    second = pulumi_mocks.resources[before:]
    assert {r.type for r in second} == {"expiry:index:TtlTable", TABLE}  # job claims: tables, nothing to watch


@pytest.mark.parametrize(
    ("overrides", "drop", "error", "message"),
    [
        ({}, ("environment",), pulumi.ConfigMissingError, "expiry:environment"),
        ({"expiryIndexShards": "ten"}, (), pulumi.ConfigTypeError, "expiry:expiryIndexShards"),
        ({"dryRun": "maybe"}, (), pulumi.ConfigTypeError, "expiry:dryRun"),
        ({"expiryIndexShards": 500}, (), SettingError, "expiry:expiryIndexShards: must be in 0..100, got 500"),
        ({"tags": ["team"]}, (), SettingError, 'expiry:tags: must be a list of "key=value" strings'),
        ({"alertEmail": "nobody"}, (), SettingError, "expiry:alertEmail: must be an e-mail address"),
        ({"environment": "dev env"}, (), SettingError, "expiry:environment: letters, digits and '-' only"),
        ({"postgresHost": "db"}, (), pulumi.ConfigMissingError, "expiry:postgresPassword"),
        (
            {"postgresHost": "db", "postgresSubnetIds": ["subnet-1"], "postgresPassword": "set-as-a-secret"},
            (),
            SettingError,
            "expiry:postgresSubnetIds: give postgresSubnetIds and postgresSecurityGroupIds together",
        ),
        (
            {"uploadsSweepSchedule": "every 6 hours"},
            (),
            SettingError,
            "expiry:uploadsSweepSchedule: must be rate(N unit), cron(6 fields) or at(",
        ),
        ({"actingwebSchedule": "cron(0 3 * * *)"}, (), SettingError, "expiry:actingwebSchedule: cron needs 6 fields"),
        (
            {"postgresHost": "db", "pgCronSchedule": "0 0 3 * * ?", "postgresPassword": "set-as-a-secret"},
            (),
            SettingError,
            "expiry:pgCronSchedule: pg_cron needs 5 fields",
        ),
        ({"logRetentionDays": 10}, (), SettingError, "expiry:logRetentionDays: must be a CloudWatch retention"),
        (
            {"uploadsKeyPattern": "^uploads/(.+)"},
            (),
            SettingError,
            "expiry:uploadsKeyPattern: needs a group named id",
        ),
        (
            {"uploadsKeyPattern": "(?P<id>[^/]+)"},
            (),
            SettingError,
            "expiry:uploadsKeyPattern: must start with ^ and the object prefix 'uploads/'",
        ),
        ({"uploadsKeyPattern": "^uploads/(?P<id>"}, (), SettingError, "expiry:uploadsKeyPattern: is not a regular"),
        ({"uploadsKeepMarker": "none"}, (), SettingError, "expiry:uploadsKeepMarker: must be tag while"),
        ({"uploadsKeepMarker": "label"}, (), SettingError, "expiry:uploadsKeepMarker: must be one of tag, none"),
        ({"uploadsStuckStatus": "uploaded"}, (), SettingError, "expiry:uploadsStuckStatus: must differ"),
        ({"breakerMaxSharePercent": 150}, (), SettingError, "expiry:breakerMaxSharePercent: must be in 0..100"),
        ({"actingwebDbPrefix": "my prefix"}, (), SettingError, "expiry:actingwebDbPrefix: letters, digits"),
    ],
)
def test_config_errors_name_the_key(pulumi_mocks, overrides, drop, error, message):
    with pytest.raises(error) as raised:
        run_program(pulumi_mocks, stack_config("dev", drop=drop, **overrides))
    assert message in str(raised.value)
    assert pulumi_mocks.of_type(TABLE) == []
