"""Which alarms a cleanup job needs: pure rules from a job's kind, schedule and timeout to alarm
specifications. Metric names come from runtime/jobs/metrics.py; which job publishes which metric from
runtime/jobs/runner.py. CleanupAlarms turns the specifications into CloudWatch alarms."""

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from expiry.components import validation as v
from expiry.runtime import kinds
from expiry.runtime.jobs import metrics as m
from expiry.runtime.jobs.runner import published_metrics

COMPONENT = "CleanupAlarms"
MAX_WINDOW_SECONDS = 7 * 86400
MAX_PERIOD = 86400
ALARMS = (
    "errors",
    "throttles",
    "duration",
    "dead-letters",
    "heartbeat",
    "cleanup-errors",
    "mass-deletion-refused",
    "breaker-disabled",
    "unindexed-expired",
    "ttl-disabled",
    "ttl-stalled",
    "oldest-expired",
    "backlog",
    "item-count",
    "pg-failed-runs",
    "pg-last-success",
    "pg-backlog",
    "iterator-age",
    "failed-batches",
)


@dataclass(frozen=True)
class Job:
    """One job to watch, as plain values (names may be Outputs)."""

    job_name: str
    kind: str
    table_name: Any
    namespace: str
    interval_seconds: int
    timeout_seconds: int
    function_name: Any = None
    dead_letter_queue_name: Any = None  # a stream cascade's: its on-failure queue
    pg_cron_interval_seconds: int | None = None
    iterator_age_seconds: int = 3600  # a stream cascade's
    paused: bool = False  # as deployed
    alarm_name_prefix: str | None = None  # alarms `<prefix>-<alarm>`, physical names generated
    alarm_alias_parent: Any = None  # the URN the alarms were children of


@dataclass(frozen=True)
class Settings:
    """Thresholds and periods; every field has a default and is checked by `settings`."""

    duration_ratio: float = 0.8
    oldest_expired_seconds: float = 72 * 3600
    backlog_threshold: float = 100_000
    ttl_stalled_backlog: float = 100
    item_count_threshold: float | None = None
    cleanup_errors_per_hour: float = 5
    pg_backlog_threshold: float = 100_000
    heartbeat_multiplier: int = 2
    error_period_seconds: int | None = None
    disabled: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class AlarmSpec:
    """One CloudWatch alarm, before it is a resource."""

    job: str
    alarm: str
    namespace: str
    metric: str
    dimensions: dict[str, Any]
    statistic: str
    period: int
    evaluation_periods: int
    threshold: float
    comparison: str
    missing_data: str
    description: str
    # Metric math: the metric above is `m`; `extra` adds (id, namespace, metric, dimensions, statistic).
    expression: str | None = None
    extra: tuple[tuple[str, str, str, dict[str, Any], str], ...] = ()


def check_period(name: str, period: int, evaluation_periods: int = 1) -> int:
    """CloudWatch takes periods of 10, 30 or a multiple of 60 s, and a window of at most 7 days."""
    if (
        isinstance(period, bool)
        or not isinstance(period, int)
        or not (period in (10, 30) or (period > 0 and period % 60 == 0))
    ):
        v.fail(COMPONENT, name, f"period must be 10, 30 or a multiple of 60 seconds, got {period!r}")
    if period * evaluation_periods > MAX_WINDOW_SECONDS:
        v.fail(
            COMPONENT,
            name,
            f"period x evaluation periods must be at most 7 days "
            f"({MAX_WINDOW_SECONDS} s), got {period} x {evaluation_periods}",
        )
    return period


def period_for(interval: int) -> int:
    """A period of at least a minute and at most a day, a multiple of 60, covering one interval."""
    return min(MAX_PERIOD, max(60, math.ceil(interval / 60) * 60))


def settings(raw: dict[str, Any]) -> Settings:
    """Validated thresholds; ValueError naming the field for a negative or wrong value."""
    values: dict[str, Any] = {}
    for name in (
        "duration_ratio",
        "oldest_expired_seconds",
        "backlog_threshold",
        "ttl_stalled_backlog",
        "item_count_threshold",
        "cleanup_errors_per_hour",
        "pg_backlog_threshold",
    ):
        if raw.get(name) is None:
            continue
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            v.fail(COMPONENT, name, f"must be a number >= 0, got {value!r}")
        values[name] = value
    if "duration_ratio" in values and not 0 < values["duration_ratio"] <= 1:
        v.fail(COMPONENT, "duration_ratio", f"must be in (0, 1], got {values['duration_ratio']!r}")
    if raw.get("heartbeat_multiplier") is not None:
        values["heartbeat_multiplier"] = v.integer(
            COMPONENT, "heartbeat_multiplier", raw["heartbeat_multiplier"], 1, 10
        )
    if raw.get("error_period_seconds") is not None:
        values["error_period_seconds"] = check_period("error_period_seconds", raw["error_period_seconds"])
    disabled = raw.get("disabled_alarms") or []
    unknown = sorted(set(disabled) - set(ALARMS))
    if unknown:
        v.fail(COMPONENT, "disabled_alarms", f"unknown alarms {unknown}; allowed: {', '.join(ALARMS)}")
    return Settings(**values, disabled=frozenset(disabled))


@dataclass(frozen=True)
class Rule:
    """An alarm on a metric the job publishes, as data. ``threshold`` is a number, the name of the
    Settings field holding it, or a function of the job and the settings; ``period`` is "run" (one
    schedule interval), "stalled" (one interval, at least an hour) or seconds; ``extra`` gives the
    alarm's metric math (the rule's metric is ``m``). ``source`` says whose metric it is: the job's
    (namespace and Job + Table), or AWS's of the job's function or queue."""

    alarm: str
    metric: str
    statistic: str
    threshold: float | str | Callable[[Job, Settings], float]
    comparison: str
    description: str  # formatted with s (the settings)
    missing: str = "notBreaching"
    period: int | str = "run"
    window_seconds: Callable[[Job, Settings], float] | None = None  # evaluation periods cover this, if given
    extra: Callable[[Job, Settings], tuple[str, tuple[Any, ...]]] | None = None
    source: str = "job"

    def spec(self, job: Job, s: Settings) -> AlarmSpec | None:
        """The alarm for ``job``, or None when its threshold is unset."""
        if isinstance(self.threshold, str):
            threshold = getattr(s, self.threshold)
        elif callable(self.threshold):
            threshold = self.threshold(job, s)
        else:
            threshold = self.threshold
        if threshold is None:
            return None
        run = period_for(job.interval_seconds)
        period = {"run": run, "stalled": max(3600, run)}.get(str(self.period)) or int(self.period)
        periods = 1
        if self.window_seconds is not None:
            periods = max(1, min(MAX_WINDOW_SECONDS // period, math.ceil(self.window_seconds(job, s) / period)))
        expression, extra = self.extra(job, s) if self.extra else (None, ())
        namespace, dimensions = {
            "job": (job.namespace, {"Job": job.job_name, "Table": job.table_name}),
            "function": ("AWS/Lambda", {"FunctionName": job.function_name}),
            "queue": ("AWS/SQS", {"QueueName": job.dead_letter_queue_name}),
        }[self.source]
        return AlarmSpec(
            job=job.job_name,
            alarm=self.alarm,
            namespace=namespace,
            metric=self.metric,
            dimensions=dimensions,
            statistic=self.statistic,
            period=check_period(f"{job.job_name}.{self.alarm}", period, periods),
            evaluation_periods=periods,
            threshold=threshold,
            comparison=COMPARISONS[self.comparison],
            missing_data=self.missing,
            description=self.description.format(s=s, job=job),
            expression=expression,
            extra=extra,
        )


COMPARISONS = {
    ">": "GreaterThanThreshold",
    ">=": "GreaterThanOrEqualToThreshold",
    "<": "LessThanThreshold",
}


def _stalled(job: Job, s: Settings) -> tuple[str, tuple[Any, ...]]:
    deleted = ("d", "AWS/DynamoDB", "TimeToLiveDeletedItemCount", {"TableName": job.table_name}, "Sum")
    return f"IF(FILL(m, 0) > {s.ttl_stalled_backlog:g} AND FILL(d, 0) == 0, 1, 0)", (deleted,)


# The alarms on the job's own metrics, in the order they are made. Those a kind names (JobKind.alarms)
# are that kind's; the others watch a metric and follow it: a job gets them when it publishes it.
RULES = (
    # FILL(m, 0): a period without a run counts as 0 successes at once, instead of waiting for
    # CloudWatch's missing-data rules, which with long periods have fired days late.
    Rule(
        "heartbeat",
        m.SWEEP_SUCCEEDED,
        "Sum",
        1,
        "<",
        "no successful run for {s.heartbeat_multiplier}x the schedule interval",
        missing="breaching",
        window_seconds=lambda job, s: s.heartbeat_multiplier * job.interval_seconds,
        extra=lambda job, s: ("FILL(m, 0)", ()),
    ),
    Rule(
        "cleanup-errors",
        m.CLEANUP_ERRORS,
        "Sum",
        "cleanup_errors_per_hour",
        ">",
        "cleanup errors in the last hour",
        period=3600,
    ),
    Rule(
        "mass-deletion-refused",
        m.MASS_DELETION_REFUSED,
        "Maximum",
        1,
        ">=",
        "the breaker refused a run that would have deleted most of what it examined: "
        "nothing was deleted; its log line says why",
    ),
    Rule(
        "breaker-disabled",
        m.BREAKER_DISABLED,
        "Maximum",
        1,
        ">=",
        "the job runs with its mass-deletion breaker off (breaker.allow_mass_deletion): nothing limits "
        "what it deletes; remove the setting once the deletion it was set for is done",
    ),
    Rule(
        "unindexed-expired",
        m.UNINDEXED_EXPIRED,
        "Maximum",
        0,
        ">",
        "expired items without the expiry shard: the expiry index never finds them "
        "(the writers do not set it; scan instead, or fix the writers)",
    ),
    Rule(
        "ttl-disabled",
        m.TTL_ENABLED,
        "Minimum",
        1,
        "<",
        "TTL is disabled, or on another attribute than the table's",
    ),
    Rule(
        "oldest-expired",
        m.OLDEST_EXPIRED_AGE_SECONDS,
        "Maximum",
        "oldest_expired_seconds",
        ">",
        "an expired item is still present after the threshold: TTL is not keeping up",
    ),
    Rule("backlog", m.EXPIRED_BACKLOG, "Maximum", "backlog_threshold", ">", "expired items waiting for deletion"),
    Rule(
        "item-count",
        m.TABLE_ITEM_COUNT,
        "Maximum",
        "item_count_threshold",
        ">",
        "the table grows past its expected size (DescribeTable's ItemCount)",
    ),
    Rule(
        "ttl-stalled",
        m.EXPIRED_BACKLOG,
        "Maximum",
        1,
        ">=",
        "over {s.ttl_stalled_backlog:g} expired items wait while TTL deletes nothing "
        "(AWS/DynamoDB TimeToLiveDeletedItemCount stays 0): TTL is off, on the wrong attribute, "
        "or the values are not epoch seconds",
        period="stalled",
        window_seconds=lambda job, s: 6 * 3600,
        extra=_stalled,
    ),
    Rule("pg-failed-runs", m.PG_CRON_FAILED_RUNS, "Maximum", 0, ">", "the pg_cron purge failed"),
    Rule(
        "pg-last-success",
        m.PG_CRON_LAST_SUCCESS_AGE_SECONDS,
        "Maximum",
        lambda job, s: s.heartbeat_multiplier * (job.pg_cron_interval_seconds or 86400),
        ">",
        "no successful pg_cron purge for {s.heartbeat_multiplier}x its schedule",
        missing="breaching",
    ),
    Rule("pg-backlog", m.EXPIRED_BACKLOG, "Maximum", "pg_backlog_threshold", ">", "expired rows waiting for the purge"),
)
# A stream cascade runs per batch of records, not on a schedule: every alarm of BATCH_RULES looks at
# 5 minutes and fires on anything above its threshold. A job of a kind that is not scheduled gets the
# rules its kind names (JobKind.alarms), and only those.
BATCH_RULES = (
    Rule(
        "iterator-age",
        "IteratorAge",
        "Maximum",
        lambda job, s: job.iterator_age_seconds * 1000,
        ">",
        "the oldest TTL deletion waited over {job.iterator_age_seconds} s: the cascade is falling behind "
        "(records older than 24 hours leave the stream)",
        period=300,
        source="function",
    ),
    Rule("errors", "Errors", "Sum", 0, ">", "a batch failed (it is retried)", period=300, source="function"),
    Rule(
        "failed-batches",
        "ApproximateNumberOfMessagesVisible",
        "Maximum",
        0,
        ">",
        "a batch failed every retry: its records are in the on-failure queue",
        period=300,
        source="queue",
    ),
    Rule(
        "cleanup-errors", m.CLEANUP_ERRORS, "Sum", 0, ">", "a record's cascade failed (reported for retry)", period=300
    ),
)
KIND_ALARMS = {alarm for registered in kinds.REGISTERED if registered.scheduled for alarm in registered.alarms}


def _applies(rule: Rule, job: Job) -> bool:
    kind = kinds.kind(job.kind)
    if not kind.scheduled or rule.alarm in KIND_ALARMS:
        return rule.alarm in kind.alarms
    return rule.metric in published_metrics(job.kind)


def _aws(job: Job, alarm: str, namespace: str, metric: str, dimensions: dict[str, Any], **kwargs: Any) -> AlarmSpec:
    """An alarm on a metric AWS publishes of the job's function or queue."""
    return AlarmSpec(
        job=job.job_name,
        alarm=alarm,
        namespace=namespace,
        metric=metric,
        dimensions=dimensions,
        period=check_period(f"{job.job_name}.{alarm}", kwargs.pop("period")),
        evaluation_periods=1,
        comparison=COMPARISONS[kwargs.pop("comparison")],
        missing_data="notBreaching",
        **kwargs,
    )


def job_alarms(job: Job, s: Settings) -> list[AlarmSpec]:
    """Every alarm ``job`` needs, minus the disabled ones."""
    scheduled = kinds.kind(job.kind).scheduled
    period = s.error_period_seconds or period_for(job.interval_seconds)
    specs: list[AlarmSpec] = []
    if scheduled and job.function_name is not None:
        fn = {"FunctionName": job.function_name}
        specs += [
            _aws(
                job,
                "errors",
                "AWS/Lambda",
                "Errors",
                fn,
                statistic="Sum",
                period=period,
                threshold=1,
                comparison=">=",
                description="the job failed (its run raised)",
            ),
            _aws(
                job,
                "throttles",
                "AWS/Lambda",
                "Throttles",
                fn,
                statistic="Sum",
                period=period,
                threshold=1,
                comparison=">=",
                description="a run was throttled (another run still going, or no concurrency left)",
            ),
            _aws(
                job,
                "duration",
                "AWS/Lambda",
                "Duration",
                fn,
                statistic="Maximum",
                period=period,
                threshold=round(job.timeout_seconds * 1000 * s.duration_ratio),
                comparison=">=",
                description=f"a run took {s.duration_ratio:.0%} of its timeout or more",
            ),
        ]
    if scheduled and job.dead_letter_queue_name is not None:
        queue = {"QueueName": job.dead_letter_queue_name}
        specs.append(
            _aws(
                job,
                "dead-letters",
                "AWS/SQS",
                "ApproximateNumberOfMessagesVisible",
                queue,
                statistic="Maximum",
                period=300,
                threshold=0,
                comparison=">",
                description="scheduled runs could not be delivered to the function",
            )
        )
    for rule in RULES if scheduled else BATCH_RULES:
        spec = rule.spec(job, s) if _applies(rule, job) else None
        if spec is not None:
            specs.append(spec)
    return [spec for spec in specs if spec.alarm not in s.disabled]


def check_coverage(jobs: list[Job], s: Settings, raw: dict[str, Any]) -> None:
    """Refuse thresholds for alarms that no given job would feed."""
    watched = {job.kind for job in jobs}
    needs = {
        "item_count_threshold": "item-count",
        "oldest_expired_seconds": "oldest-expired",
        "backlog_threshold": "backlog",
        "ttl_stalled_backlog": "ttl-stalled",
        "pg_backlog_threshold": "pg-backlog",
    }
    for name, alarm in needs.items():
        feeding = [registered.name for registered in kinds.REGISTERED if alarm in registered.alarms]
        if raw.get(name) is not None and not watched & set(feeding):
            v.fail(COMPONENT, name, f"no given job publishes this metric: it needs a {' or a '.join(feeding)} job")
    if raw.get("cleanup_errors_per_hour") is not None and not any(
        m.CLEANUP_ERRORS in published_metrics(kind) for kind in watched
    ):
        v.fail(COMPONENT, "cleanup_errors_per_hour", "no given job publishes CleanupErrors")
