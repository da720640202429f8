"""CleanupAlarms: the alarms, the dashboard and the saved queries that show cleanup is working."""

import json
from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict

import pulumi
import pulumi_aws as aws

from expiry.components import alarm_rules as rules
from expiry.components import validation as v
from expiry.components.pg_cron_cleanup import PgCronCleanup
from expiry.components.schedule import interval_seconds
from expiry.components.scheduled_sweeper import ScheduledSweeper
from expiry.components.stream_cascade import TtlStreamCascade
from expiry.components.transforms import Child, ChildTransform, with_transforms
from expiry.components.ttl_table import TtlTable
from expiry.runtime import kinds
from expiry.runtime.jobs import metrics as m

COMPONENT = rules.COMPONENT
# The children `transforms` reaches: key -> resource type and logical name after the component's name.
CHILDREN = {
    "topic": Child(aws.sns.Topic, "-topic"),
    "subscriptions": Child(aws.sns.TopicSubscription, "-email-*"),
    "alarms": Child(aws.cloudwatch.MetricAlarm, "*"),  # a stream cascade's are named after it
    "dashboard": Child(aws.cloudwatch.Dashboard, "-dashboard"),
    "query_definitions": Child(aws.cloudwatch.QueryDefinition, "-query-*"),
}


class WatchedJobArgs(TypedDict):
    """A cleanup job to watch (`watched_job(sweeper)` fills this from a ScheduledSweeper,
    `watched_stream(cascade)` from a TtlStreamCascade)."""

    job_name: str
    """The job's name: the Job dimension of its metrics."""
    kind: str
    """ttl-monitor, sweep, orphaned-references, pg-purge, pg-monitor or stream-cascade."""
    table_name: pulumi.Input[str]
    """The Table dimension of its metrics."""
    interval_seconds: NotRequired[int]
    """Longest gap between scheduled runs (required, except of a stream-cascade: it runs per batch)."""
    timeout_seconds: int
    """The function's timeout."""
    namespace: NotRequired[str]
    """Metric namespace (default Expiry)."""
    function_name: NotRequired[pulumi.Input[str]]
    """The Lambda function (Errors, Throttles, Duration alarms)."""
    dead_letter_queue_name: NotRequired[pulumi.Input[str]]
    """The schedule's dead-letter queue; a stream-cascade's on-failure queue (required for it)."""
    log_group_name: NotRequired[pulumi.Input[str]]
    """The function's log group (saved queries)."""
    pg_cron_interval_seconds: NotRequired[int]
    """pg-monitor: the watched pg_cron job's interval."""
    iterator_age_alarm_seconds: NotRequired[int]
    """stream-cascade: alarm when the oldest stream record waited longer than this, 60..604800
    (default 3600; records leave the stream after 24 hours)."""
    paused: NotRequired[bool]
    """The job is deployed paused (its component's paused arg): the dashboard says so."""
    alarm_name_prefix: NotRequired[str]
    """Name the job's alarms `<alarm_name_prefix>-<alarm>`, their physical names generated, as a
    TtlStreamCascade named its own (`watched_stream` gives its name); default `<name>-<job_name>-<alarm>`,
    physical name `<name>-<stack>-<job_name>-<alarm>`."""
    alarm_alias_parent: NotRequired[pulumi.Input[str]]
    """URN of the resource the job's alarms were children of (a TtlStreamCascade's, which made them
    itself before 0.4; `watched_stream` gives it): the alarms keep that old URN as an alias, so they
    move under CleanupAlarms without being replaced. Needs alarm_name_prefix."""


class CleanupAlarmsArgs(TypedDict):
    """Inputs of CleanupAlarms."""

    jobs: list[WatchedJobArgs]
    """The jobs to watch."""
    table_names: NotRequired[list[pulumi.Input[str]]]
    """DynamoDB tables whose TTL deletions the dashboard shows."""
    topic_arn: NotRequired[pulumi.Input[str]]
    """An existing SNS topic; default: one is created."""
    email_addresses: NotRequired[list[str]]
    """E-mail subscriptions of the created topic (each must confirm)."""
    ok_notifications: NotRequired[bool]
    """Notify when an alarm returns to OK too (default true)."""
    disabled_alarms: NotRequired[list[str]]
    """Alarms to leave out, by name (errors, throttles, duration, dead-letters, heartbeat, ...)."""
    duration_ratio: NotRequired[float]
    """Duration alarm at this share of the timeout (default 0.8)."""
    oldest_expired_seconds: NotRequired[float]
    """Oldest expired-but-present item older than this (default 259200: 72 h)."""
    backlog_threshold: NotRequired[float]
    """Expired items waiting (ttl-monitor; default 100000)."""
    ttl_stalled_backlog: NotRequired[float]
    """Alarm when more expired items than this wait for 6 hours while DynamoDB's
    TimeToLiveDeletedItemCount stays 0 (ttl-monitor; default 100)."""
    item_count_threshold: NotRequired[float]
    """Table item count (ttl-monitor; off unless given)."""
    cleanup_errors_per_hour: NotRequired[float]
    """Cleanup errors per hour (default 5)."""
    pg_backlog_threshold: NotRequired[float]
    """Expired rows waiting (pg-monitor; default 100000)."""
    heartbeat_multiplier: NotRequired[int]
    """A job 'did not run' after this many schedule intervals without success (default 2)."""
    error_period_seconds: NotRequired[int]
    """Period of the Errors, Throttles and Duration alarms (default: the schedule interval)."""
    tags: NotRequired[pulumi.Input[dict[str, pulumi.Input[str]]]]
    """Tags of the topic and alarms."""


def watched_job(sweeper: ScheduledSweeper, pg_cleanup: PgCronCleanup | None = None) -> dict[str, Any]:
    """The WatchedJobArgs of a ScheduledSweeper (and, for a pg-monitor, of the cleanup it watches)."""
    job = sweeper.job
    watched: dict[str, Any] = {
        "job_name": job.name,
        "kind": job.kind,
        "table_name": sweeper.table_name,
        "interval_seconds": interval_seconds(sweeper.schedule_expression),
        "timeout_seconds": sweeper.timeout,
        "namespace": job.namespace,
        "function_name": sweeper.function_name,
        "dead_letter_queue_name": sweeper.dead_letter_queue.name,
        "log_group_name": sweeper.log_group_name,
        "paused": sweeper.paused,
    }
    if pg_cleanup is not None:
        watched["pg_cron_interval_seconds"] = interval_seconds(pg_cleanup.spec.schedule)
    return watched


def watched_stream(cascade: TtlStreamCascade) -> dict[str, Any]:
    """The WatchedJobArgs of a TtlStreamCascade: its alarms keep the names and, by an alias, the
    identity they had when the cascade made them itself."""
    job = cascade.job
    return {
        "job_name": job.name,
        "kind": job.kind,
        "table_name": cascade.table_name,
        "timeout_seconds": cascade.timeout,
        "namespace": job.namespace,
        "function_name": cascade.function_name,
        "dead_letter_queue_name": cascade.failure_queue_name,
        "log_group_name": cascade.log_group_name,
        "iterator_age_alarm_seconds": cascade.iterator_age_seconds,
        "paused": cascade.paused,
        "alarm_name_prefix": cascade.resource_name,
        "alarm_alias_parent": cascade.urn,
    }


def table_names(*tables: TtlTable) -> list[pulumi.Output[str]]:
    return [table.table_name for table in tables]


def watched_jobs(raw: Any) -> list[rules.Job]:
    """Validated jobs from the `jobs` input."""
    if not isinstance(raw, list) or not raw:
        v.fail(COMPONENT, "jobs", "must be a non-empty list of jobs to watch")
    jobs = []
    for i, item in enumerate(raw):
        field = f"jobs[{i}]"
        if not isinstance(item, dict):
            v.fail(COMPONENT, field, "must be a mapping (see watched_job)")
        name = v.text(COMPONENT, f"{field}.job_name", item.get("job_name"))
        kind = v.one_of(COMPONENT, f"{field}.kind", item.get("kind"), tuple(kinds.KINDS))
        if item.get("table_name") is None:
            v.fail(COMPONENT, f"{field}.table_name", "is required")
        jobs.append(
            rules.Job(
                job_name=name,
                kind=kind,
                table_name=item["table_name"],
                namespace=item.get("namespace", m.DEFAULT_NAMESPACE),
                interval_seconds=_interval(field, kind, item),
                timeout_seconds=v.integer(COMPONENT, f"{field}.timeout_seconds", item.get("timeout_seconds"), 1, 900),
                function_name=item.get("function_name"),
                dead_letter_queue_name=item.get("dead_letter_queue_name"),
                pg_cron_interval_seconds=item.get("pg_cron_interval_seconds"),
                **_stream_fields(field, kind, item),
                paused=v.boolean(COMPONENT, f"{field}.paused", item.get("paused", False)),
                alarm_name_prefix=_alarm_name_prefix(field, item),
                alarm_alias_parent=item.get("alarm_alias_parent"),
            )
        )
    names = [job.job_name for job in jobs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        v.fail(COMPONENT, "jobs", f"duplicate job names {duplicates}: alarm names would collide")
    prefixes = [job.alarm_name_prefix for job in jobs if job.alarm_name_prefix is not None]
    if len(set(prefixes)) < len(prefixes):
        v.fail(COMPONENT, "jobs", f"duplicate alarm_name_prefix in {sorted(prefixes)}: alarm names would collide")
    return jobs


def _interval(field: str, kind: str, item: dict[str, Any]) -> int:
    """A scheduled job's interval; a job of another kind (a stream cascade) has none."""
    if kinds.kind(kind).scheduled:
        return v.integer(COMPONENT, f"{field}.interval_seconds", item.get("interval_seconds"), 60, 366 * 86400)
    if item.get("interval_seconds") is not None:
        v.fail(COMPONENT, f"{field}.interval_seconds", f"a {kind} job runs per batch of records, not on a schedule")
    return 0


def _stream_fields(field: str, kind: str, item: dict[str, Any]) -> dict[str, Any]:
    """A stream cascade's alarm inputs: its function and on-failure queue (required), its lag threshold."""
    age = item.get("iterator_age_alarm_seconds")
    if "iterator-age" not in kinds.kind(kind).alarms:
        if age is not None:
            v.fail(COMPONENT, f"{field}.iterator_age_alarm_seconds", "only a stream-cascade job has an iterator age")
        return {}
    for key in ("function_name", "dead_letter_queue_name"):
        if item.get(key) is None:
            v.fail(COMPONENT, f"{field}.{key}", f"is required for a {kind} job (its alarms watch it)")
    seconds = 3600 if age is None else age
    return {"iterator_age_seconds": v.integer(COMPONENT, f"{field}.iterator_age_alarm_seconds", seconds, 60, 7 * 86400)}


def _alarm_name_prefix(field: str, item: dict[str, Any]) -> str | None:
    if item.get("alarm_name_prefix") is None:
        if item.get("alarm_alias_parent") is not None:
            v.fail(COMPONENT, f"{field}.alarm_alias_parent", "needs alarm_name_prefix (the alarms' names there)")
        return None
    return v.text(COMPONENT, f"{field}.alarm_name_prefix", item["alarm_name_prefix"])


class CleanupAlarms(pulumi.ComponentResource):
    """Alarms on one SNS topic, a dashboard and Logs Insights queries for a set of cleanup jobs."""

    topic_arn: pulumi.Output[str]
    """The topic every alarm notifies."""
    dashboard_name: pulumi.Output[str]
    """The CloudWatch dashboard."""
    alarm_names: pulumi.Output[list[str]]
    """Names of every alarm."""
    dashboard_url: pulumi.Output[str]
    """The dashboard in the CloudWatch console."""

    def __init__(
        self,
        name: str,
        args: CleanupAlarmsArgs,
        opts: pulumi.ResourceOptions | None = None,
        *,
        transforms: Mapping[str, ChildTransform] | None = None,
    ) -> None:
        """``transforms``: a transform per child (keys: CHILDREN), for what the args do not cover."""
        raw = v.known_fields(COMPONENT, args, CleanupAlarmsArgs)
        jobs = watched_jobs(raw.get("jobs"))
        settings = rules.settings(raw)
        rules.check_coverage(jobs, settings, raw)
        specs = [spec for job in jobs for spec in rules.job_alarms(job, settings)]
        emails = raw.get("email_addresses") or []
        if raw.get("topic_arn") is not None and emails:
            v.fail(
                COMPONENT,
                "email_addresses",
                "subscriptions are made on the topic this component creates; "
                "subscribe them to your own topic_arn yourself",
            )
        for i, address in enumerate(emails):
            v.email(COMPONENT, f"email_addresses[{i}]", address)
        v.tags(COMPONENT, "tags", raw.get("tags"))
        ok = v.boolean(COMPONENT, "ok_notifications", raw.get("ok_notifications", True))
        own_topic = raw.get("topic_arn") is None
        absent = {
            "topic": not own_topic and "it conflicts with topic_arn (the alarms notify that topic)",
            "subscriptions": (not own_topic and "it conflicts with topic_arn (subscribe to your topic yourself)")
            or (not emails and "only email_addresses make subscriptions"),
            "query_definitions": not any(
                isinstance(job, dict) and job.get("log_group_name") is not None for job in raw.get("jobs") or []
            )
            and "only jobs with a log_group_name have saved queries",
        }
        opts = with_transforms(
            COMPONENT, name, CHILDREN, transforms, opts, {key: why for key, why in absent.items() if why}
        )
        super().__init__(f"expiry:index:{COMPONENT}", name, {}, opts)

        child = pulumi.ResourceOptions(parent=self)
        tags = raw.get("tags")
        prefix = f"{name}-{pulumi.get_stack()}"
        if raw.get("topic_arn") is not None:
            topic_arn = pulumi.Output.from_input(raw["topic_arn"])
        else:
            self.topic = aws.sns.Topic(f"{name}-topic", name=prefix, tags=tags, opts=child)
            topic_arn = self.topic.arn
            self.subscriptions = [
                aws.sns.TopicSubscription(
                    f"{name}-email-{i}", topic=topic_arn, protocol="email", endpoint=address, opts=child
                )
                for i, address in enumerate(emails)
            ]
        by_name = {job.job_name: job for job in jobs}
        self.alarms = [self._alarm(name, prefix, by_name[spec.job], spec, topic_arn, ok, tags) for spec in specs]
        region = aws.get_region_output(opts=pulumi.InvokeOptions(parent=self)).region
        body = pulumi.Output.all(
            region, [job.table_name for job in jobs], [job.function_name for job in jobs], raw.get("table_names") or []
        ).apply(lambda a: json.dumps(dashboard_body(a[0], jobs, a[1], a[2], a[3])))
        self.dashboard = aws.cloudwatch.Dashboard(
            f"{name}-dashboard", dashboard_name=prefix, dashboard_body=body, opts=child
        )
        log_groups = [item["log_group_name"] for item in raw["jobs"] if item.get("log_group_name") is not None]
        self.queries = (
            [
                aws.cloudwatch.QueryDefinition(
                    f"{name}-query-{key}",
                    name=f"expiry/{prefix}/{key}",
                    log_group_names=log_groups,
                    query_string=query,
                    opts=child,
                )
                for key, query in QUERIES.items()
            ]
            if log_groups
            else []
        )
        self.specs = specs
        self.topic_arn = topic_arn
        self.dashboard_name = self.dashboard.dashboard_name
        self.alarm_names = pulumi.Output.all(*[alarm.name for alarm in self.alarms])
        self.dashboard_url = pulumi.Output.all(region, self.dashboard_name).apply(
            lambda a: f"https://{a[0]}.console.aws.amazon.com/cloudwatch/home?region={a[0]}#dashboards:name={a[1]}"
        )
        self.register_outputs(
            {
                "topic_arn": self.topic_arn,
                "dashboard_name": self.dashboard_name,
                "alarm_names": self.alarm_names,
                "dashboard_url": self.dashboard_url,
            }
        )

    def _alarm(
        self, name: str, prefix: str, job: rules.Job, spec: rules.AlarmSpec, topic: Any, ok: bool, tags: Any
    ) -> aws.cloudwatch.MetricAlarm:
        """One alarm, named `<name>-<job>-<alarm>` (physical `<prefix>-<job>-<alarm>`), or
        `<job.alarm_name_prefix>-<alarm>` with a generated physical name, aliased from its old parent."""
        opts = pulumi.ResourceOptions(parent=self)
        if job.alarm_name_prefix is None:
            resource, physical = f"{name}-{job.job_name}-{spec.alarm}", f"{prefix}-{job.job_name}-{spec.alarm}"
        else:
            resource, physical = f"{job.alarm_name_prefix}-{spec.alarm}", None
        if job.alarm_alias_parent is not None:
            opts.aliases = [pulumi.Alias(parent=job.alarm_alias_parent)]
        return aws.cloudwatch.MetricAlarm(
            resource,
            name=physical,
            alarm_description=f"{spec.job}: {spec.description}",
            **_metric_args(spec),
            evaluation_periods=spec.evaluation_periods,
            threshold=spec.threshold,
            comparison_operator=spec.comparison,
            treat_missing_data=spec.missing_data,
            alarm_actions=[topic],
            ok_actions=[topic] if ok else [],
            tags=tags,
            opts=opts,
        )


QUERIES = {
    "last-summaries": "fields @timestamp, job, kind, table, dry_run, stopped_early, duration_ms, counts\n"
    '| filter event = "cleanup_summary"\n| sort @timestamp desc\n| limit 50',
    "cleanup-errors": "fields @timestamp, job, table, action, error\n"
    '| filter event = "cleanup_error" or event = "cleanup_failed"\n| sort @timestamp desc\n'
    "| limit 100",
    "deleted-per-hour": 'filter event = "cleanup_summary"\n'
    "| stats sum(counts.items_deleted) as items, sum(counts.objects_deleted) as objects, "
    "sum(counts.orphans_deleted) as orphans, sum(rows_deleted) as rows by bin(1h), job",
}


def _widget(title: str, metrics: list[list[Any]], region: str, stat: str, x: int, y: int) -> dict[str, Any]:
    return {
        "type": "metric",
        "x": x,
        "y": y,
        "width": 12,
        "height": 6,
        "properties": {
            "title": title,
            "metrics": metrics,
            "region": region,
            "stat": stat,
            "period": 300,
            "view": "timeSeries",
        },
    }


def _metric_args(spec: rules.AlarmSpec) -> dict[str, Any]:
    """The alarm's metric, or its metric math: `m` is the spec's metric, `extra` the others."""
    if spec.expression is None:
        return {
            "namespace": spec.namespace,
            "metric_name": spec.metric,
            "dimensions": spec.dimensions,
            "statistic": spec.statistic,
            "period": spec.period,
        }
    metrics = [("m", spec.namespace, spec.metric, spec.dimensions, spec.statistic), *spec.extra]
    queries = [
        aws.cloudwatch.MetricAlarmMetricQueryArgs(
            id=query_id,
            metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
                namespace=namespace, metric_name=metric, dimensions=dimensions, stat=stat, period=spec.period
            ),
            return_data=False,
        )
        for query_id, namespace, metric, dimensions, stat in metrics
    ]
    expression = aws.cloudwatch.MetricAlarmMetricQueryArgs(
        id="e", expression=spec.expression, label=spec.alarm, return_data=True
    )
    return {"metric_queries": [*queries, expression]}


def dashboard_body(
    region: str, jobs: list[rules.Job], tables: list[str], functions: list[str | None], ttl_tables: list[str]
) -> dict[str, Any]:
    """Which jobs are paused, backlog, deletions, errors, durations and TTL deletions: what on-call
    opens first."""

    def series(metric: str, kinds: tuple[str, ...] | None = None) -> list[list[Any]]:
        return [
            [job.namespace, metric, "Job", job.job_name, "Table", table]
            for job, table in zip(jobs, tables, strict=True)
            if metric in rules.published_metrics(job.kind) and (kinds is None or job.kind in kinds)
        ]

    deletions = [
        *series(m.ITEMS_DELETED),
        *series(m.OBJECTS_DELETED),
        *series(m.ORPHANS_DELETED),
        *series(m.UPLOADS_ABORTED),
        *series(m.ROWS_PURGED),
    ]
    errors = [
        *series(m.CLEANUP_ERRORS),
        *series(m.SWEEP_FAILED),
        *[["AWS/Lambda", "Errors", "FunctionName", fn] for fn in functions if fn],
    ]
    durations = [
        *series(m.SWEEP_DURATION_MS),
        *[["AWS/Lambda", "Duration", "FunctionName", fn] for fn in functions if fn],
    ]
    ttl = [["AWS/DynamoDB", "TimeToLiveDeletedItemCount", "TableName", table] for table in ttl_tables]
    top = PAUSED_HEIGHT
    widgets = [
        _widget("Expired backlog", series(m.EXPIRED_BACKLOG), region, "Maximum", 0, top),
        _widget("Deletions", deletions, region, "Sum", 12, top),
        _widget("Errors", errors, region, "Sum", 0, top + 6),
        _widget("Durations", durations, region, "Maximum", 12, top + 6),
        _widget("TTL deletions (DynamoDB)", ttl, region, "Sum", 0, top + 12),
        _widget("Oldest expired (s)", series(m.OLDEST_EXPIRED_AGE_SECONDS), region, "Maximum", 12, top + 12),
    ]
    return {"widgets": [paused_widget(jobs), *[w for w in widgets if w["properties"]["metrics"]]]}


PAUSED_HEIGHT = 3


def paused_widget(jobs: list[rules.Job]) -> dict[str, Any]:
    """A text widget naming the jobs deployed paused; the CLI's pause does not show here."""
    paused = [job.job_name for job in jobs if job.paused]
    state = (
        f"**Paused as deployed:** {', '.join(f'`{n}`' for n in paused)}: they run nothing until resumed."
        if paused
        else "**Paused as deployed:** none."
    )
    note = (
        "`expiry pause` / `expiry resume` from the CLI change a deployed job until the next `pulumi up`, which "
        "sets it back to this; they do not show here. The live state: `expiry status --function NAME`."
    )
    return {
        "type": "text",
        "x": 0,
        "y": 0,
        "width": 24,
        "height": PAUSED_HEIGHT,
        "properties": {"markdown": f"{state}\n\n{note}"},
    }
