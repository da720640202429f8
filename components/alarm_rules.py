"""Which alarms a cleanup job needs: pure rules from a job's kind, schedule and timeout to alarm
specifications. Metric names come from runtime/jobs/metrics.py; which job publishes which metric from
runtime/jobs/runner.py. CleanupAlarms turns the specifications into CloudWatch alarms."""

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from expiry.components import validation as v
from expiry.runtime.jobs import metrics as m
from expiry.runtime.jobs.config import KIND_PG_MONITOR, KIND_TTL_MONITOR
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
    dead_letter_queue_name: Any = None
    pg_cron_interval_seconds: int | None = None


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


def _custom(
    job: Job,
    alarm: str,
    metric: str,
    statistic: str,
    period: int,
    evaluation_periods: int,
    threshold: float,
    comparison: str,
    missing: str,
    description: str,
) -> AlarmSpec:
    return AlarmSpec(
        job.job_name,
        alarm,
        job.namespace,
        metric,
        {"Job": job.job_name, "Table": job.table_name},
        statistic,
        check_period(f"{job.job_name}.{alarm}", period, evaluation_periods),
        evaluation_periods,
        threshold,
        comparison,
        missing,
        description,
    )


def _aws(
    job: Job,
    alarm: str,
    namespace: str,
    metric: str,
    dimensions: dict[str, Any],
    statistic: str,
    period: int,
    threshold: float,
    comparison: str,
    description: str,
) -> AlarmSpec:
    return AlarmSpec(
        job.job_name,
        alarm,
        namespace,
        metric,
        dimensions,
        statistic,
        check_period(f"{job.job_name}.{alarm}", period),
        1,
        threshold,
        comparison,
        "notBreaching",
        description,
    )


def job_alarms(job: Job, s: Settings) -> list[AlarmSpec]:
    """Every alarm ``job`` needs, minus the disabled ones."""
    period = s.error_period_seconds or period_for(job.interval_seconds)
    specs: list[AlarmSpec] = []
    if job.function_name is not None:
        fn = {"FunctionName": job.function_name}
        specs += [
            _aws(
                job,
                "errors",
                "AWS/Lambda",
                "Errors",
                fn,
                "Sum",
                period,
                1,
                "GreaterThanOrEqualToThreshold",
                "the job failed (its run raised)",
            ),
            _aws(
                job,
                "throttles",
                "AWS/Lambda",
                "Throttles",
                fn,
                "Sum",
                period,
                1,
                "GreaterThanOrEqualToThreshold",
                "a run was throttled (another run still going, or no concurrency left)",
            ),
            _aws(
                job,
                "duration",
                "AWS/Lambda",
                "Duration",
                fn,
                "Maximum",
                period,
                round(job.timeout_seconds * 1000 * s.duration_ratio),
                "GreaterThanOrEqualToThreshold",
                f"a run took {s.duration_ratio:.0%} of its timeout or more",
            ),
        ]
    if job.dead_letter_queue_name is not None:
        specs.append(
            _aws(
                job,
                "dead-letters",
                "AWS/SQS",
                "ApproximateNumberOfMessagesVisible",
                {"QueueName": job.dead_letter_queue_name},
                "Maximum",
                300,
                0,
                "GreaterThanThreshold",
                "scheduled runs could not be delivered to the function",
            )
        )
    heartbeat_period = period_for(job.interval_seconds)
    heartbeat_periods = max(
        1,
        min(
            MAX_WINDOW_SECONDS // heartbeat_period,
            math.ceil(s.heartbeat_multiplier * job.interval_seconds / heartbeat_period),
        ),
    )
    # FILL(m, 0): a period without a run counts as 0 successes at once, instead of waiting for
    # CloudWatch's missing-data rules, which with long periods have fired days late.
    heartbeat = _custom(
        job,
        "heartbeat",
        m.SWEEP_SUCCEEDED,
        "Sum",
        heartbeat_period,
        heartbeat_periods,
        1,
        "LessThanThreshold",
        "breaching",
        f"no successful run for {s.heartbeat_multiplier}x the schedule interval",
    )
    specs.append(dataclasses.replace(heartbeat, expression="FILL(m, 0)"))
    published = published_metrics(job.kind)
    if m.CLEANUP_ERRORS in published:
        specs.append(
            _custom(
                job,
                "cleanup-errors",
                m.CLEANUP_ERRORS,
                "Sum",
                3600,
                1,
                s.cleanup_errors_per_hour,
                "GreaterThanThreshold",
                "notBreaching",
                "cleanup errors in the last hour",
            )
        )
    run_period = period_for(job.interval_seconds)
    if m.MASS_DELETION_REFUSED in published:
        specs.append(
            _custom(
                job,
                "mass-deletion-refused",
                m.MASS_DELETION_REFUSED,
                "Maximum",
                run_period,
                1,
                1,
                "GreaterThanOrEqualToThreshold",
                "notBreaching",
                "the breaker refused a run that would have deleted most of what it examined: "
                "nothing was deleted; its log line says why",
            )
        )
    if m.BREAKER_DISABLED in published:
        specs.append(
            _custom(
                job,
                "breaker-disabled",
                m.BREAKER_DISABLED,
                "Maximum",
                run_period,
                1,
                1,
                "GreaterThanOrEqualToThreshold",
                "notBreaching",
                "the job runs with its mass-deletion breaker off (breaker.allow_mass_deletion): nothing limits "
                "what it deletes; remove the setting once the deletion it was set for is done",
            )
        )
    if m.UNINDEXED_EXPIRED in published:
        specs.append(
            _custom(
                job,
                "unindexed-expired",
                m.UNINDEXED_EXPIRED,
                "Maximum",
                run_period,
                1,
                0,
                "GreaterThanThreshold",
                "notBreaching",
                "expired items without the expiry shard: the expiry index never finds them "
                "(the writers do not set it; scan instead, or fix the writers)",
            )
        )
    monitor_period = run_period
    if job.kind == KIND_TTL_MONITOR:
        specs += [
            _custom(
                job,
                "ttl-disabled",
                m.TTL_ENABLED,
                "Minimum",
                monitor_period,
                1,
                1,
                "LessThanThreshold",
                "notBreaching",
                "TTL is disabled, or on another attribute than the table's",
            ),
            _custom(
                job,
                "oldest-expired",
                m.OLDEST_EXPIRED_AGE_SECONDS,
                "Maximum",
                monitor_period,
                1,
                s.oldest_expired_seconds,
                "GreaterThanThreshold",
                "notBreaching",
                "an expired item is still present after the threshold: TTL is not keeping up",
            ),
            _custom(
                job,
                "backlog",
                m.EXPIRED_BACKLOG,
                "Maximum",
                monitor_period,
                1,
                s.backlog_threshold,
                "GreaterThanThreshold",
                "notBreaching",
                "expired items waiting for deletion",
            ),
        ]
        if s.item_count_threshold is not None:
            specs.append(
                _custom(
                    job,
                    "item-count",
                    m.TABLE_ITEM_COUNT,
                    "Maximum",
                    monitor_period,
                    1,
                    s.item_count_threshold,
                    "GreaterThanThreshold",
                    "notBreaching",
                    "the table grows past its expected size (DescribeTable's ItemCount)",
                )
            )
    if job.kind == KIND_TTL_MONITOR:
        stalled_period = max(3600, monitor_period)
        stalled = _custom(
            job,
            "ttl-stalled",
            m.EXPIRED_BACKLOG,
            "Maximum",
            stalled_period,
            max(1, min(MAX_WINDOW_SECONDS // stalled_period, math.ceil(6 * 3600 / stalled_period))),
            1,
            "GreaterThanOrEqualToThreshold",
            "notBreaching",
            f"over {s.ttl_stalled_backlog:g} expired items wait while TTL deletes nothing "
            "(AWS/DynamoDB TimeToLiveDeletedItemCount stays 0): TTL is off, on the wrong attribute, "
            "or the values are not epoch seconds",
        )
        specs.append(
            dataclasses.replace(
                stalled,
                expression=f"IF(FILL(m, 0) > {s.ttl_stalled_backlog:g} AND FILL(d, 0) == 0, 1, 0)",
                extra=(("d", "AWS/DynamoDB", "TimeToLiveDeletedItemCount", {"TableName": job.table_name}, "Sum"),),
            )
        )
    if job.kind == KIND_PG_MONITOR:
        cron_interval = job.pg_cron_interval_seconds or 86400
        specs += [
            _custom(
                job,
                "pg-failed-runs",
                m.PG_CRON_FAILED_RUNS,
                "Maximum",
                monitor_period,
                1,
                0,
                "GreaterThanThreshold",
                "notBreaching",
                "the pg_cron purge failed",
            ),
            _custom(
                job,
                "pg-last-success",
                m.PG_CRON_LAST_SUCCESS_AGE_SECONDS,
                "Maximum",
                monitor_period,
                1,
                s.heartbeat_multiplier * cron_interval,
                "GreaterThanThreshold",
                "breaching",
                f"no successful pg_cron purge for {s.heartbeat_multiplier}x its schedule",
            ),
            _custom(
                job,
                "pg-backlog",
                m.EXPIRED_BACKLOG,
                "Maximum",
                monitor_period,
                1,
                s.pg_backlog_threshold,
                "GreaterThanThreshold",
                "notBreaching",
                "expired rows waiting for the purge",
            ),
        ]
    return [spec for spec in specs if spec.alarm not in s.disabled]


def check_coverage(jobs: list[Job], s: Settings, raw: dict[str, Any]) -> None:
    """Refuse thresholds for alarms that no given job would feed."""
    kinds = {job.kind for job in jobs}
    needs = {
        "item_count_threshold": KIND_TTL_MONITOR,
        "oldest_expired_seconds": KIND_TTL_MONITOR,
        "backlog_threshold": KIND_TTL_MONITOR,
        "ttl_stalled_backlog": KIND_TTL_MONITOR,
        "pg_backlog_threshold": KIND_PG_MONITOR,
    }
    for name, kind in needs.items():
        if raw.get(name) is not None and kind not in kinds:
            metric = {KIND_TTL_MONITOR: "a ttl-monitor", KIND_PG_MONITOR: "a pg-monitor"}[kind]
            v.fail(COMPONENT, name, f"no given job publishes this metric: it needs {metric} job")
    if raw.get("cleanup_errors_per_hour") is not None and not any(
        m.CLEANUP_ERRORS in published_metrics(kind) for kind in kinds
    ):
        v.fail(COMPONENT, "cleanup_errors_per_hour", "no given job publishes CleanupErrors")
