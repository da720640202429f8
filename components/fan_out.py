"""ScheduledSweeper's fan-out: a Step Functions state machine whose Map state, in DISTRIBUTED mode,
invokes the sweeper's function once per unit of its work: a sweep once per expiry-index shard, with the
payload {"shards": [k]}; an orphaned-references job once per index of its references, with the payload
{"indexes": [k]}."""

from dataclasses import dataclass
from typing import Any

from expiry.components import validation as v
from expiry.runtime.jobs.config import KIND_ORPHANED_REFERENCES, KIND_SWEEP, Job
from expiry.runtime.jobs.payload import DRY_RUN, FROM, INDEXES, JOB, SCHEDULE_SOURCE, SHARDS

FIELD = "fan_out"
FIELDS = ("max_concurrency", "tolerated_failure_percentage")
SHARD_STATE, MAP_STATE, SWEEP_STATE, SUMMARY_STATE = "Shards", "Sweep shards", "Sweep shard", "Summary"
INDEX_STATE, INDEX_MAP_STATE, INDEX_TASK_STATE = "Indexes", "Clean indexes", "Clean index"
# What a Lambda task retries: throttles (the function's reserved concurrency) and the service's errors;
# not the function's own failure, which the breaker or a bad payload may have decided on purpose.
RETRIED_ERRORS = (
    "Lambda.TooManyRequestsException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
)


@dataclass(frozen=True)
class Units:
    """What a job fans out over: the payload key, the items, the states' names and how they read."""

    key: str
    items: list[int]
    list_state: str
    map_state: str
    task_state: str
    described: str


def units(job: Job) -> Units:
    """A sweep's expiry-index shards, or an orphaned-references job's indexes (by position)."""
    if job.references is not None:
        items = list(range(len(job.references.indexes)))
        return Units(INDEXES, items, INDEX_STATE, INDEX_MAP_STATE, INDEX_TASK_STATE, "index of references.indexes")
    assert job.expiry_index is not None
    return Units(
        SHARDS, list(range(job.expiry_index.shards)), SHARD_STATE, MAP_STATE, SWEEP_STATE, "expiry-index shard"
    )


def checked_fan_out(component: str, value: Any, job: Job) -> dict[str, Any] | None:
    """The fan-out settings with their defaults, or None when there is no fan-out; refused, naming
    ``fan_out``, unless the job is a sweep over an expiry index or an orphaned-references job with
    more than one index, and its breaker holds a per-table budget in a ledger (a per-run breaker
    would give each child the whole budget)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        v.fail(component, FIELD, f"must be a mapping of {list(FIELDS)}, got {type(value).__name__}")
    unknown = sorted(set(value) - set(FIELDS))
    if unknown:
        v.fail(component, FIELD, f"unknown fields {unknown} (allowed: {list(FIELDS)})")
    if job.kind not in (KIND_SWEEP, KIND_ORPHANED_REFERENCES):
        v.fail(
            component,
            FIELD,
            "only sweep jobs (over expiry-index shards) and orphaned-references jobs (over their "
            f"references.indexes) fan out, not {job.kind}",
        )
    if job.references is not None and len(job.references.indexes) < 2:
        v.fail(
            component,
            FIELD,
            "fans an orphaned-references job out over its references.indexes, one invocation each: "
            f"it needs at least 2, got {len(job.references.indexes)}",
        )
    if job.kind == KIND_SWEEP and job.expiry_index is None:
        v.fail(
            component,
            FIELD,
            "needs an expiry index (expiry_index_name and expiry_index_shards): it fans out over its shards",
        )
    if not job.breaker.budget_table:
        v.fail(component, FIELD, "needs the breaker's budget ledger: without it each child would have the whole budget")
    concurrency = v.integer(component, f"{FIELD}.max_concurrency", value.get("max_concurrency", 10), 1, 1000)
    tolerated = value.get("tolerated_failure_percentage", 0)
    if isinstance(tolerated, bool) or not isinstance(tolerated, int | float) or not 0 <= tolerated <= 100:
        v.fail(component, f"{FIELD}.tolerated_failure_percentage", f"must be a number in 0..100, got {tolerated!r}")
    return {"max_concurrency": concurrency, "tolerated_failure_percentage": tolerated}


def definition(job: Job, function_arn: str, fan_out: dict[str, Any]) -> dict[str, Any]:
    """The state machine's ASL: a Pass state listing every unit (and the run's dryRun, false unless
    the execution's input says true), a distributed Map invoking the function once per unit, a
    summary."""
    unit = units(job)
    sweep = {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": function_arn, "Payload.$": "$"},
        "Retry": [
            {
                "ErrorEquals": list(RETRIED_ERRORS),
                "IntervalSeconds": 2,
                "MaxAttempts": 6,
                "BackoffRate": 2,
                "JitterStrategy": "FULL",
            }
        ],
        # Each child's summary, small: what it did, not its plan samples.
        "ResultSelector": {
            "dry_run.$": "$.Payload.dry_run",
            "stopped_early.$": "$.Payload.stopped_early",
            "counts.$": "$.Payload.counts",
        },
        "End": True,
    }
    return {
        "Comment": f"Expiry: {job.kind} job {job.name}, one invocation per {unit.described}",
        "StartAt": unit.list_state,
        "States": {
            unit.list_state: {
                "Type": "Pass",
                "Parameters": {
                    "run.$": "States.JsonMerge(States.StringToJson('{\"dryRun\":false}'), $, false)",
                    unit.key: unit.items,
                },
                "Next": unit.map_state,
            },
            unit.map_state: {
                "Type": "Map",
                "ItemsPath": f"$.{unit.key}",
                "ItemSelector": {
                    f"{unit.key}.$": "States.Array($$.Map.Item.Value)",
                    FROM: SCHEDULE_SOURCE,
                    JOB: job.name,
                    f"{DRY_RUN}.$": "$.run.dryRun",
                },
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": unit.task_state,
                    "States": {unit.task_state: sweep},
                },
                "MaxConcurrency": fan_out["max_concurrency"],
                "ToleratedFailurePercentage": fan_out["tolerated_failure_percentage"],
                "ResultPath": "$.children",
                "Next": SUMMARY_STATE,
            },
            SUMMARY_STATE: {
                "Type": "Pass",
                "Parameters": {"job": job.name, f"{unit.key}.$": f"$.{unit.key}", "children.$": "$.children"},
                "End": True,
            },
        },
    }
