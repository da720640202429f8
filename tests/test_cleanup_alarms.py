"""CleanupAlarms under the mocks: every alarm's definition, the topic, the dashboard, the saved
queries, bad input; and that each alarmed metric is one the runtime really emits."""

import json

import pytest
from uploads_world import BUCKET, NOW, TABLE, create_table, put_session, run, sweep_job

from expiry.components.alarm_rules import Job, check_period, job_alarms, settings
from expiry.components.cleanup_alarms import CleanupAlarms, watched_job, watched_jobs
from expiry.components.pg_cron_cleanup import PgCronCleanup
from expiry.components.scheduled_sweeper import ScheduledSweeper, table_target
from expiry.components.ttl_table import TtlTable
from expiry.runtime.handlers.postgres_work import monitor_work as pg_monitor
from expiry.runtime.handlers.work import monitor_work, references_work, sweep_work
from expiry.runtime.jobs import metrics
from expiry.runtime.jobs.config import parse_job
from expiry.runtime.postgres.connection import Connector
from expiry.runtime.postgres.provision import provision, unprovision
from expiry.runtime.postgres.spec import PurgeSpec

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


@pytest.fixture(autouse=True)
def build_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EXPIRY_BUILD_DIR", str(tmp_path_factory.getbasetemp() / "alarms-build"))


def jobs(**overrides):
    base = [
        {
            "job_name": "checkpoints-monitor",
            "kind": "ttl-monitor",
            "table_name": "checkpoints",
            "interval_seconds": 3600,
            "timeout_seconds": 300,
            "function_name": "fn-monitor",
            "dead_letter_queue_name": "dlq-monitor",
            "log_group_name": "/expiry/monitor",
        },
        {
            "job_name": "upload-sweeper",
            "kind": "sweep",
            "table_name": "uploads",
            "interval_seconds": 6 * 3600,
            "timeout_seconds": 600,
            "function_name": "fn-sweeper",
            "dead_letter_queue_name": "dlq-sweeper",
            "log_group_name": "/expiry/sweeper",
        },
        {
            "job_name": "attributes-pg-monitor",
            "kind": "pg-monitor",
            "table_name": "attributes",
            "interval_seconds": 3600,
            "timeout_seconds": 120,
            "function_name": "fn-pg",
            "pg_cron_interval_seconds": 86400,
        },
    ]
    return {"jobs": base, **overrides}


def alarms(harness) -> dict[str, dict]:
    return {r.name.removeprefix("alarms-"): r.inputs for r in harness.of_type(ALARM)}


def as_plain_alarm(queries: list[dict]) -> dict:
    (m,) = [q["metric"] for q in queries if q["id"] == "m"]
    return {
        "namespace": m["namespace"],
        "metricName": m["metricName"],
        "dimensions": m["dimensions"],
        "statistic": m["stat"],
        "period": m["period"],
    }


def test_every_alarm_is_defined_as_documented(pulumi_mocks):
    pulumi_mocks.run(lambda: CleanupAlarms("alarms", jobs(item_count_threshold=5_000_000)))
    found = alarms(pulumi_mocks)

    def check(key, namespace, metric, dimensions, statistic, period, periods, threshold, comparison, missing):
        alarm = found.pop(key)
        if "metricQueries" in alarm:  # metric math: the watched metric is `m`
            alarm = {**alarm, **as_plain_alarm(alarm["metricQueries"])}
        assert (alarm["namespace"], alarm["metricName"], alarm["dimensions"]) == (namespace, metric, dimensions), key
        assert (alarm["statistic"], alarm["period"], alarm["evaluationPeriods"]) == (statistic, period, periods), key
        assert (alarm["threshold"], alarm["comparisonOperator"], alarm["treatMissingData"]) == (
            threshold,
            comparison,
            missing,
        ), key
        assert alarm["name"] == f"alarms-test-{key}"

    gte, gt, lt = "GreaterThanOrEqualToThreshold", "GreaterThanThreshold", "LessThanThreshold"
    for job, fn, dlq, interval, timeout in (
        ("checkpoints-monitor", "fn-monitor", "dlq-monitor", 3600, 300),
        ("upload-sweeper", "fn-sweeper", "dlq-sweeper", 21600, 600),
    ):
        check(f"{job}-errors", "AWS/Lambda", "Errors", {"FunctionName": fn}, "Sum", interval, 1, 1, gte, "notBreaching")
        check(
            f"{job}-throttles",
            "AWS/Lambda",
            "Throttles",
            {"FunctionName": fn},
            "Sum",
            interval,
            1,
            1,
            gte,
            "notBreaching",
        )
        check(
            f"{job}-duration",
            "AWS/Lambda",
            "Duration",
            {"FunctionName": fn},
            "Maximum",
            interval,
            1,
            timeout * 800,
            gte,
            "notBreaching",
        )
        check(
            f"{job}-dead-letters",
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            {"QueueName": dlq},
            "Maximum",
            300,
            1,
            0,
            gt,
            "notBreaching",
        )
    monitor = {"Job": "checkpoints-monitor", "Table": "checkpoints"}
    assert found["checkpoints-monitor-heartbeat"]["metricQueries"][-1]["expression"] == "FILL(m, 0)"
    check("checkpoints-monitor-heartbeat", "Expiry", "SweepSucceeded", monitor, "Sum", 3600, 2, 1, lt, "breaching")
    stalled = found["checkpoints-monitor-ttl-stalled"]["metricQueries"]
    assert stalled[-1]["expression"] == "IF(FILL(m, 0) > 100 AND FILL(d, 0) == 0, 1, 0)"
    (deleted,) = [q["metric"] for q in stalled if q["id"] == "d"]
    assert (deleted["namespace"], deleted["metricName"], deleted["dimensions"]) == (
        "AWS/DynamoDB",
        "TimeToLiveDeletedItemCount",
        {"TableName": "checkpoints"},
    )
    check(
        "checkpoints-monitor-ttl-stalled",
        "Expiry",
        "ExpiredBacklog",
        monitor,
        "Maximum",
        3600,
        6,
        1,
        gte,
        "notBreaching",
    )
    check(
        "checkpoints-monitor-ttl-disabled", "Expiry", "TtlEnabled", monitor, "Minimum", 3600, 1, 1, lt, "notBreaching"
    )
    check(
        "checkpoints-monitor-oldest-expired",
        "Expiry",
        "OldestExpiredAgeSeconds",
        monitor,
        "Maximum",
        3600,
        1,
        259200,
        gt,
        "notBreaching",
    )
    check(
        "checkpoints-monitor-backlog",
        "Expiry",
        "ExpiredBacklog",
        monitor,
        "Maximum",
        3600,
        1,
        100000,
        gt,
        "notBreaching",
    )
    check(
        "checkpoints-monitor-item-count",
        "Expiry",
        "TableItemCount",
        monitor,
        "Maximum",
        3600,
        1,
        5_000_000,
        gt,
        "notBreaching",
    )
    sweeper = {"Job": "upload-sweeper", "Table": "uploads"}
    check("upload-sweeper-heartbeat", "Expiry", "SweepSucceeded", sweeper, "Sum", 21600, 2, 1, lt, "breaching")
    check("upload-sweeper-cleanup-errors", "Expiry", "CleanupErrors", sweeper, "Sum", 3600, 1, 5, gt, "notBreaching")
    for job, dimensions, period in (("upload-sweeper", sweeper, 21600), ("checkpoints-monitor", monitor, 3600)):
        check(
            f"{job}-unindexed-expired",
            "Expiry",
            "UnindexedExpired",
            dimensions,
            "Maximum",
            period,
            1,
            0,
            gt,
            "notBreaching",
        )
    check(
        "upload-sweeper-mass-deletion-refused",
        "Expiry",
        "MassDeletionRefused",
        sweeper,
        "Maximum",
        21600,
        1,
        1,
        gte,
        "notBreaching",
    )
    disabled = ("Expiry", "BreakerDisabled", sweeper, "Maximum", 21600, 1, 1, gte, "notBreaching")
    check("upload-sweeper-breaker-disabled", *disabled)
    pg = {"Job": "attributes-pg-monitor", "Table": "attributes"}
    check(
        "attributes-pg-monitor-errors",
        "AWS/Lambda",
        "Errors",
        {"FunctionName": "fn-pg"},
        "Sum",
        3600,
        1,
        1,
        gte,
        "notBreaching",
    )
    check(
        "attributes-pg-monitor-throttles",
        "AWS/Lambda",
        "Throttles",
        {"FunctionName": "fn-pg"},
        "Sum",
        3600,
        1,
        1,
        gte,
        "notBreaching",
    )
    check(
        "attributes-pg-monitor-duration",
        "AWS/Lambda",
        "Duration",
        {"FunctionName": "fn-pg"},
        "Maximum",
        3600,
        1,
        96000,
        gte,
        "notBreaching",
    )
    check("attributes-pg-monitor-heartbeat", "Expiry", "SweepSucceeded", pg, "Sum", 3600, 2, 1, lt, "breaching")
    check(
        "attributes-pg-monitor-mass-deletion-refused",
        "Expiry",
        "MassDeletionRefused",
        pg,
        "Maximum",
        3600,
        1,
        1,
        gte,
        "notBreaching",
    )
    check(
        "attributes-pg-monitor-pg-failed-runs",
        "Expiry",
        "PgCronFailedRuns",
        pg,
        "Maximum",
        3600,
        1,
        0,
        gt,
        "notBreaching",
    )
    check(
        "attributes-pg-monitor-pg-last-success",
        "Expiry",
        "PgCronLastSuccessAgeSeconds",
        pg,
        "Maximum",
        3600,
        1,
        172800,
        gt,
        "breaching",
    )
    check(
        "attributes-pg-monitor-pg-backlog",
        "Expiry",
        "ExpiredBacklog",
        pg,
        "Maximum",
        3600,
        1,
        100000,
        gt,
        "notBreaching",
    )
    assert found == {}  # nothing unaccounted for


def test_topic_subscriptions_and_notifications(pulumi_mocks):
    pulumi_mocks.run(lambda: CleanupAlarms("alarms", jobs(email_addresses=["oncall@example.com", "lead@example.com"])))
    topic = pulumi_mocks.one("aws:sns/topic:Topic")
    subscriptions = pulumi_mocks.of_type("aws:sns/topicSubscription:TopicSubscription")
    assert sorted(s.inputs["endpoint"] for s in subscriptions) == ["lead@example.com", "oncall@example.com"]
    assert {s.inputs["protocol"] for s in subscriptions} == {"email"}
    topic_arn = subscriptions[0].inputs["topic"]
    assert topic.inputs["name"] == "alarms-test"
    for alarm in alarms(pulumi_mocks).values():
        assert alarm["alarmActions"] == [topic_arn] and alarm["okActions"] == [topic_arn]


def test_existing_topic_and_no_ok_notifications(pulumi_mocks):
    arn = "arn:aws:sns:us-east-1:123456789012:oncall"
    pulumi_mocks.run(lambda: CleanupAlarms("alarms", jobs(topic_arn=arn, ok_notifications=False)))
    assert pulumi_mocks.of_type("aws:sns/topic:Topic") == []
    for alarm in alarms(pulumi_mocks).values():
        assert alarm["alarmActions"] == [arn] and alarm.get("okActions", []) == []


def test_alarms_can_be_turned_off_and_thresholds_changed(pulumi_mocks):
    pulumi_mocks.run(
        lambda: CleanupAlarms(
            "alarms",
            jobs(
                disabled_alarms=["throttles", "dead-letters", "ttl-disabled"],
                cleanup_errors_per_hour=20,
                oldest_expired_seconds=3600,
                duration_ratio=0.5,
                heartbeat_multiplier=3,
                error_period_seconds=300,
            ),
        )
    )
    found = alarms(pulumi_mocks)
    assert not any(key.endswith(("-throttles", "-dead-letters", "-ttl-disabled")) for key in found)
    assert found["upload-sweeper-cleanup-errors"]["threshold"] == 20
    assert found["checkpoints-monitor-oldest-expired"]["threshold"] == 3600
    assert found["upload-sweeper-duration"]["threshold"] == 300_000
    assert found["upload-sweeper-errors"]["period"] == 300
    assert found["upload-sweeper-heartbeat"]["evaluationPeriods"] == 3
    assert found["attributes-pg-monitor-pg-last-success"]["threshold"] == 3 * 86400


def test_dashboard_is_valid_json_naming_only_metrics_that_exist(pulumi_mocks):
    pulumi_mocks.run(lambda: CleanupAlarms("alarms", jobs(table_names=["checkpoints", "uploads"])))
    body = json.loads(pulumi_mocks.one("aws:cloudwatch/dashboard:Dashboard").inputs["dashboardBody"])
    paused, *graphs = body["widgets"]
    assert paused["type"] == "text" and "**Paused as deployed:** none." in paused["properties"]["markdown"]
    titles = [w["properties"]["title"] for w in graphs]
    assert titles == [
        "Expired backlog",
        "Deletions",
        "Errors",
        "Durations",
        "TTL deletions (DynamoDB)",
        "Oldest expired (s)",
    ]
    aws_metrics = {("AWS/Lambda", "Errors"), ("AWS/Lambda", "Duration"), ("AWS/DynamoDB", "TimeToLiveDeletedItemCount")}
    for widget in graphs:
        assert widget["properties"]["region"] == "us-east-1"
        for series in widget["properties"]["metrics"]:
            namespace, name = series[0], series[1]
            assert name in metrics.ALL_METRICS if namespace == "Expiry" else (namespace, name) in aws_metrics
    ttl = next(w for w in graphs if w["properties"]["title"].startswith("TTL"))
    assert ttl["properties"]["metrics"] == [
        ["AWS/DynamoDB", "TimeToLiveDeletedItemCount", "TableName", "checkpoints"],
        ["AWS/DynamoDB", "TimeToLiveDeletedItemCount", "TableName", "uploads"],
    ]


def test_the_dashboard_names_the_jobs_deployed_paused_and_says_the_cli_s_pause_is_not_shown(pulumi_mocks):
    paused = jobs()
    paused["jobs"][1]["paused"] = True
    pulumi_mocks.run(lambda: CleanupAlarms("alarms", paused))
    body = json.loads(pulumi_mocks.one("aws:cloudwatch/dashboard:Dashboard").inputs["dashboardBody"])
    text = body["widgets"][0]["properties"]["markdown"]
    assert text.startswith("**Paused as deployed:** `upload-sweeper`: they run nothing until resumed.")
    assert "`expiry pause`" in text and "until the next `pulumi up`" in text and "expiry status --function" in text
    assert all(w["y"] >= body["widgets"][0]["height"] for w in body["widgets"][1:])  # nothing hides under it


def test_a_sweeper_s_pause_as_deployed_reaches_the_dashboard(pulumi_mocks):
    def program() -> ScheduledSweeper:
        table = TtlTable("t", {"hash_key": "id", "ttl_attribute": "expires_at", "table_name": "paused-table"})
        sweeper = ScheduledSweeper(
            "s", {"kind": "ttl-monitor", "schedule": "rate(1 hour)", "paused": True, **table_target(table)}
        )
        CleanupAlarms("alarms", {"jobs": [watched_job(sweeper)]})
        return sweeper

    assert pulumi_mocks.run(program).paused is True
    body = json.loads(pulumi_mocks.one("aws:cloudwatch/dashboard:Dashboard").inputs["dashboardBody"])
    assert "`s`" in body["widgets"][0]["properties"]["markdown"]


STREAM = {
    "job_name": "upload-cascade",
    "kind": "stream-cascade",
    "table_name": "uploads",
    "timeout_seconds": 120,
    "function_name": "fn-cascade",
    "dead_letter_queue_name": "cascade-failures",
}


def test_a_stream_cascade_gets_the_alarms_its_kind_names_and_no_others():
    job = watched_jobs([{**STREAM, "iterator_age_alarm_seconds": 600}])[0]
    specs = {spec.alarm: spec for spec in job_alarms(job, settings({}))}
    assert list(specs) == ["iterator-age", "errors", "failed-batches", "cleanup-errors"]
    assert all(s.period == 300 and s.comparison == "GreaterThanThreshold" for s in specs.values())
    assert (specs["iterator-age"].namespace, specs["iterator-age"].metric) == ("AWS/Lambda", "IteratorAge")
    assert specs["iterator-age"].threshold == 600_000 and "over 600 s" in specs["iterator-age"].description
    assert specs["errors"].dimensions == {"FunctionName": "fn-cascade"} and specs["errors"].threshold == 0
    assert specs["failed-batches"].dimensions == {"QueueName": "cascade-failures"}
    assert specs["cleanup-errors"].dimensions == {"Job": "upload-cascade", "Table": "uploads"}
    assert [s.alarm for s in job_alarms(job, settings({"disabled_alarms": ["errors"]}))] == [
        "iterator-age",
        "failed-batches",
        "cleanup-errors",
    ]


def test_alarm_names_can_keep_another_component_s_names(pulumi_mocks):
    job = {**STREAM, "alarm_name_prefix": "upload-cascade", "alarm_alias_parent": "urn:pulumi:test::expiry::x::y"}

    def breaching(props, opts):
        props["treat_missing_data"] = "breaching"

    # The `alarms` transform reaches them too, whatever their names.
    pulumi_mocks.run(lambda: CleanupAlarms("alarms", {"jobs": [job]}, transforms={"alarms": breaching}))
    found = {r.name: r.inputs for r in pulumi_mocks.of_type(ALARM)}
    assert set(found) == {f"upload-cascade-{a}" for a in ("iterator-age", "errors", "failed-batches", "cleanup-errors")}
    assert all("name" not in inputs for inputs in found.values())  # physical names generated, as before
    assert {inputs["treatMissingData"] for inputs in found.values()} == {"breaching"}


BAD_STREAM = [
    ({"interval_seconds": 300}, "jobs[0].interval_seconds: a stream-cascade job runs per batch of records"),
    ({"function_name": None}, "jobs[0].function_name: is required for a stream-cascade job"),
    ({"dead_letter_queue_name": None}, "jobs[0].dead_letter_queue_name: is required for a stream-cascade job"),
    ({"iterator_age_alarm_seconds": 30}, "jobs[0].iterator_age_alarm_seconds: must be an integer in 60..604800"),
    ({"alarm_alias_parent": "urn:x"}, "jobs[0].alarm_alias_parent: needs alarm_name_prefix"),
    ({"paused": "yes"}, "jobs[0].paused: must be"),
    ({"kind": "sweep", "interval_seconds": 3600, "iterator_age_alarm_seconds": 600}, "only a stream-cascade job"),
]


@pytest.mark.parametrize(
    ("change", "message"), BAD_STREAM, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(BAD_STREAM)]
)
def test_a_bad_stream_job_is_refused_by_field(pulumi_mocks, change, message):
    job = {key: value for key, value in {**STREAM, **change}.items() if value is not None}
    with pytest.raises(ValueError) as error:
        pulumi_mocks.run(lambda: CleanupAlarms("alarms", {"jobs": [job]}))
    assert str(error.value).startswith("CleanupAlarms: ") and message in str(error.value)
    assert pulumi_mocks.resources == []


def test_two_jobs_with_one_alarm_name_prefix_are_refused(pulumi_mocks):
    twins = [{**STREAM, "alarm_name_prefix": "c"}, {**STREAM, "job_name": "other", "alarm_name_prefix": "c"}]
    with pytest.raises(ValueError, match=r"CleanupAlarms: jobs: duplicate alarm_name_prefix in \['c', 'c'\]"):
        pulumi_mocks.run(lambda: CleanupAlarms("alarms", {"jobs": twins}))
    assert pulumi_mocks.resources == []


def test_saved_queries_cover_every_log_group(pulumi_mocks):
    pulumi_mocks.run(lambda: CleanupAlarms("alarms", jobs()))
    queries = {
        q.inputs["name"]: q.inputs for q in pulumi_mocks.of_type("aws:cloudwatch/queryDefinition:QueryDefinition")
    }
    assert set(queries) == {
        "expiry/alarms-test/last-summaries",
        "expiry/alarms-test/cleanup-errors",
        "expiry/alarms-test/deleted-per-hour",
    }
    for query in queries.values():
        assert query["logGroupNames"] == ["/expiry/monitor", "/expiry/sweeper"]
    assert 'event = "cleanup_summary"' in queries["expiry/alarms-test/last-summaries"]["queryString"]
    assert "cleanup_error" in queries["expiry/alarms-test/cleanup-errors"]["queryString"]
    assert "bin(1h)" in queries["expiry/alarms-test/deleted-per-hour"]["queryString"]


BAD = [
    ({"error_period_seconds": 45}, "error_period_seconds: period must be 10, 30 or a multiple of 60"),
    ({"backlog_threshold": -1}, "backlog_threshold: must be a number >= 0, got -1"),
    ({"duration_ratio": 1.5}, "duration_ratio: must be in (0, 1]"),
    ({"disabled_alarms": ["errors", "everything"]}, "disabled_alarms: unknown alarms ['everything']"),
    ({"jobs": []}, "jobs: must be a non-empty list"),
    ({"topic_arn": "arn:aws:sns:us-east-1:1:t", "email_addresses": ["a@b.c"]}, "email_addresses: subscriptions"),
    ({"email_addresses": ["not-an-address"]}, "email_addresses[0]: must be an e-mail address"),
    ({"heartbeat_multiplier": 0}, "heartbeat_multiplier: must be an integer in 1..10"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_input(pulumi_mocks, overrides, message):
    with pytest.raises(ValueError) as error:
        pulumi_mocks.run(lambda: CleanupAlarms("alarms", jobs(**overrides)))
    assert str(error.value).startswith("CleanupAlarms: ") and message in str(error.value)
    assert pulumi_mocks.resources == []


def test_alarm_on_a_metric_no_job_publishes_is_refused(pulumi_mocks):
    only_sweeper = {"jobs": [jobs()["jobs"][1]]}
    for field in ("item_count_threshold", "oldest_expired_seconds", "pg_backlog_threshold"):
        with pytest.raises(ValueError, match=f"CleanupAlarms: {field}: no given job publishes this metric"):
            pulumi_mocks.run(lambda f=field: CleanupAlarms("alarms", {**only_sweeper, f: 10}))
    only_monitor = {"jobs": [jobs()["jobs"][0]]}
    with pytest.raises(ValueError, match="cleanup_errors_per_hour: no given job publishes CleanupErrors"):
        pulumi_mocks.run(lambda: CleanupAlarms("alarms", {**only_monitor, "cleanup_errors_per_hour": 3}))
    assert pulumi_mocks.resources == []


def test_a_window_over_seven_days_is_refused():
    weekly = Job("weekly", "sweep", "t", "Expiry", 7 * 86400, 60)
    with pytest.raises(ValueError, match=r"period x evaluation periods must be at most 7 days"):
        check_period("weekly.heartbeat", 86400, 8)
    specs = {s.alarm: s for s in job_alarms(weekly, settings({}))}
    assert specs["heartbeat"].period * specs["heartbeat"].evaluation_periods <= 7 * 86400


def test_watched_job_from_real_components(pulumi_mocks):
    def program():
        table = TtlTable("checkpoints", {"hash_key": "thread_id"})
        monitor = ScheduledSweeper(
            "monitor", {"kind": "ttl-monitor", "schedule": "cron(0 * * * ? *)", **table_target(table)}
        )
        cleanup = PgCronCleanup(
            "purge",
            {
                "table": "attributes",
                "expiry_column": "ttl_timestamp",
                "dsn": "host=db dbname=app user=u",
                "schedule": "0 3 * * *",
            },
        )
        pg_monitor = ScheduledSweeper(
            "pg-monitor",
            {
                "kind": "pg-monitor",
                "schedule": "rate(1 hour)",
                "table_name": "attributes",
                "postgres": {"host": "db", "database": "app", "secret_arn": "arn:aws:secretsmanager:us-east-1:1:s"},
                "purge": {"expiry_column": "ttl_timestamp", "job_name": "purge"},
            },
        )
        return CleanupAlarms("alarms", {"jobs": [watched_job(monitor), watched_job(pg_monitor, cleanup)]})

    pulumi_mocks.run(program)
    found = alarms(pulumi_mocks)
    assert as_plain_alarm(found["monitor-heartbeat"]["metricQueries"])["dimensions"] == {
        "Job": "monitor",
        "Table": "checkpoints-table-physical",
    }
    assert found["monitor-errors"]["dimensions"] == {"FunctionName": "monitor-function-physical"}
    assert found["pg-monitor-pg-last-success"]["threshold"] == 2 * 86400
    assert as_plain_alarm(found["monitor-heartbeat"]["metricQueries"])["period"] == 3600


def emitted(lines: list[dict]) -> set[tuple[str, str, tuple[str, ...], str]]:
    """(namespace, metric, dimension names, Job) of every metric in EMF lines."""
    found = set()
    for line in lines:
        for directive in line.get("_aws", {}).get("CloudWatchMetrics", []):
            for dimensions in directive["Dimensions"]:
                for metric in directive["Metrics"]:
                    found.add((directive["Namespace"], metric["Name"], tuple(dimensions), line["Job"]))
    return found


def test_every_alarmed_custom_metric_is_emitted_by_the_runtime(aws_in_process, postgres):
    aws = aws_in_process
    create_table(aws.dynamodb)
    aws.s3.create_bucket(Bucket=BUCKET)
    put_session(aws.dynamodb, "old", NOW - 10)
    create_table(aws.dynamodb, name="refs", range_key="ref")
    create_table(aws.dynamodb, name="owners", hash_key="id")
    clients = aws.client
    lines: list[dict] = []
    lines += run(sweep_job(job_name="upload-sweeper"), sweep_work(clients)).lines
    lines += run(
        parse_job(
            {
                "kind": "ttl-monitor",
                "job_name": "checkpoints-monitor",
                "table_name": TABLE,
                "key_attributes": ["uploadSessionId"],
                "ttl_attribute": "ttl",
            }
        ),
        monitor_work(clients),
    ).lines
    lines += run(
        parse_job(
            {
                "kind": "orphaned-references",
                "job_name": "refs",
                "table_name": "refs",
                "key_attributes": ["uploadSessionId", "ref"],
                "references": {
                    "hash_value": "idx",
                    "owner_attribute": "owner",
                    "indexes": [{"range_prefix": "r:", "target": ["{owner}"]}],
                    "target_table_name": "owners",
                    "target_key_attributes": ["id"],
                },
            }
        ),
        references_work(clients),
    ).lines
    lines += pg_monitor_lines(aws, postgres)
    published = emitted(lines)
    watched = [
        *jobs()["jobs"],
        {
            "job_name": "refs",
            "kind": "orphaned-references",
            "table_name": TABLE,
            "interval_seconds": 86400,
            "timeout_seconds": 60,
        },
    ]
    specs = [spec for job in watched_jobs(watched) for spec in job_alarms(job, settings({"item_count_threshold": 1}))]
    custom = [spec for spec in specs if spec.namespace == "Expiry"]
    assert len(custom) >= 12
    for spec in custom:
        key = (spec.namespace, spec.metric, tuple(spec.dimensions), spec.job)
        assert key in published, f"{spec.job}/{spec.alarm} watches {spec.metric}, which the runtime never emitted"


def pg_monitor_lines(aws, postgres) -> list[dict]:
    database = postgres.new_database("alarms")
    with postgres.connect(database) as conn:
        conn.execute("CREATE TABLE attributes (id serial, ttl_timestamp bigint)")
    spec = PurgeSpec(job_name="attributes-pg-monitor", table="attributes", expiry_column="ttl_timestamp")
    connector = Connector(postgres.dsn(database), database)
    state = provision(connector, spec)
    with postgres.connect() as cron:  # one successful run, so the last-success age exists
        cron.execute(
            "INSERT INTO cron.job_run_details (jobid, runid, job_pid, database, username, command, status, "
            "return_message, start_time, end_time) VALUES (%s, nextval('cron.runid_seq'), 1, 'x', "
            "'postgres', 'c', 'succeeded', '', now(), now())",
            (state["job_id"],),
        )
    arn = aws.client("secretsmanager").create_secret(
        Name="alarms-db", SecretString=json.dumps({"username": "postgres", "password": "x"})
    )["ARN"]
    job = parse_job(
        {
            "kind": "pg-monitor",
            "job_name": "attributes-pg-monitor",
            "table_name": "attributes",
            "postgres": {"host": "127.0.0.1", "port": postgres.port, "database": database, "secret_arn": arn},
            "purge": {"expiry_column": "ttl_timestamp"},
        }
    )
    try:
        return run(job, pg_monitor(aws.client)).lines
    finally:
        unprovision(connector, spec)
