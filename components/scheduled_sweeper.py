"""ScheduledSweeper: a Lambda bundled from expiry.runtime, run on an EventBridge Scheduler schedule, that
monitors a TTL table or cleans what TTL cannot (S3 objects, uploads, orphans)."""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import pulumi
import pulumi_aws as aws

from expiry.components import validation as v
from expiry.components.budget_ledger import budget_ledger
from expiry.components.fan_out import checked_fan_out, definition
from expiry.components.inventory import InventoryArgs, bucket_inventory
from expiry.components.lambda_bundle import build_bundle
from expiry.components.lambda_parts import (
    existing_log_group,
    existing_names,
    existing_role,
    lambda_role,
    log_group,
    psycopg_layer,
    vpc_access,
)
from expiry.components.schedule import check_expression, check_timezone, interval_seconds, rate_seconds
from expiry.components.sweeper_policy import (
    Arns,
    assume_role_policy,
    fan_out_scheduler_policy,
    function_policy,
    scheduler_policy,
    state_machine_arn,
    state_machine_policy,
)
from expiry.components.transforms import Child, ChildTransform, rails, with_transforms
from expiry.components.ttl_table import TableTarget, TtlTable, with_table
from expiry.runtime import kinds
from expiry.runtime.jobs.config import (
    ENV_VAR,
    JOB_NAME,
    MAX_WINDOW_SECONDS,
    POSTGRES_KINDS,
    SWEEPING_KINDS,
    Job,
    JobConfigError,
    check_names,
    parse_job,
)
from expiry.runtime.jobs.cpu import FULL_VCPU_MB
from expiry.runtime.postgres.spec import CleanupError, PurgeSpec

COMPONENT = "ScheduledSweeper"
ENVIRONMENT_LIMIT = 4096
LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)
RUNTIMES = ("python3.11", "python3.12", "python3.13")
ARCHITECTURES = ("arm64", "x86_64")
# The kinds a ScheduledSweeper runs: a stream-cascade job runs on the table's stream (TtlStreamCascade).
KINDS = kinds.names(scheduled=True)
POSTGRES_NAMES = ("host", "database", "secret_arn")
# The fields a `table` input (a TtlTable's target) stands for.
TABLE_FIELDS = (
    "table_name",
    "table_arn",
    "key_attributes",
    "ttl_attribute",
    "expiry_index_name",
    "expiry_index_shards",
    "expiry_shard_attribute",
)
# The children `transforms` reaches: key -> resource type and logical name after the component's name.
CHILDREN = {
    "role": Child(aws.iam.Role, "-role"),
    "policy": Child(aws.iam.RolePolicy, "-policy", rails("policy", "role")),
    "log_group": Child(aws.cloudwatch.LogGroup, "-logs"),
    "function": Child(aws.lambda_.Function, "-function", rails("environment", "role", "code", "handler")),
    "invoke_config": Child(aws.lambda_.FunctionEventInvokeConfig, "-async"),
    "dead_letter_queue": Child(aws.sqs.Queue, "-dlq"),
    "scheduler_role": Child(aws.iam.Role, "-scheduler-role"),
    "scheduler_policy": Child(aws.iam.RolePolicy, "-scheduler-policy", rails("policy", "role")),
    "schedule": Child(
        aws.scheduler.Schedule, "-schedule", rails("schedule_expression", "schedule_expression_timezone", "target")
    ),
    "psycopg_layer": Child(aws.lambda_.LayerVersion, "-psycopg"),
    "vpc_access": Child(aws.iam.RolePolicyAttachment, "-vpc-access"),
    "budget_table": Child(aws.dynamodb.Table, "-budget"),
    "state_machine": Child(aws.sfn.StateMachine, "-fan-out", rails("definition", "role_arn")),
    "state_machine_role": Child(aws.iam.Role, "-fan-out-role"),
    "state_machine_policy": Child(aws.iam.RolePolicy, "-fan-out-policy", rails("policy", "role")),
    "fan_out_alarm": Child(aws.cloudwatch.MetricAlarm, "-fan-out-failed"),
}
FAN_OUT_CHILDREN = ("state_machine", "state_machine_role", "state_machine_policy", "fan_out_alarm")
SWEEPING_MEMORY_MB = FULL_VCPU_MB  # one vCPU: a sweep's speed is bounded by botocore's CPU per call
PLACEHOLDER = "x" * 96  # stands in for a name only known after deployment when sizing the environment


class S3CascadeArgs(TypedDict):
    """The S3 objects and multipart uploads a table's items point to."""

    bucket: pulumi.Input[str]
    """Bucket name."""
    key_attribute: str
    """Item attribute holding the object key."""
    upload_id_attribute: NotRequired[str]
    """Item attribute holding a multipart upload id to abort."""
    status_attribute: NotRequired[str]
    """Item attribute holding the upload's status."""
    keep_statuses: NotRequired[list[str]]
    """Statuses whose object is kept when the item expires (e.g. uploaded)."""
    keep_marker: NotRequired[str]
    """How a kept object is remembered once its item is gone: tag (default: the object tag
    expiry-kept=true, which orphan passes respect) or none (refused together with orphaned_objects)."""
    mark_ahead_seconds: NotRequired[int]
    """Mark the objects of kept items expiring within this many seconds, while the items still exist
    (default: twice the schedule's interval, one day for cron()/at(); 0 turns it off)."""
    object_prefix: NotRequired[str]
    """Key prefix the function may touch (IAM); default: the whole bucket."""
    owner_index: NotRequired[str]
    """A global secondary index of the table whose hash key is `key_attribute` (KEYS_ONLY is enough):
    how the ownership rule finds every item naming an object before it is deleted. Without one, each
    check is a consistent Scan of the whole table (exact, billed for every item)."""


class StuckUploadsArgs(TypedDict):
    """Items stuck in a status: abort their upload when no part arrived, else mark them for review."""

    status: str
    """The status of a stuck item (e.g. created)."""
    older_than_seconds: NotRequired[int]
    """Age, counted from `since_attribute`, after which an item is stuck (default 3600)."""
    since_attribute: NotRequired[str]
    """Time the age counts from, epoch seconds or ISO-8601 (default: the TTL attribute, i.e. expired
    for `older_than_seconds`; then the expiry pass finds stuck items and no Scan is needed)."""
    partial_status: NotRequired[str]
    """Status set when parts were uploaded, for a person to review (default partial)."""


class OrphanedObjectsArgs(TypedDict):
    """Objects whose owning item no longer exists."""

    id_pattern: str
    """Regular expression taking the owner's id from the key (group `id` or the first group)."""
    prefix: NotRequired[str]
    """Key prefix to list (default: the whole bucket)."""
    older_than_seconds: NotRequired[int]
    """Only objects older than this (default 86400, at least 3600)."""
    inventory: NotRequired[InventoryArgs]
    """Read the newest daily S3 Inventory report instead of listing the bucket (large buckets): the
    component configures the report on the bucket; without a fresh report, the pass lists."""


class BreakerArgs(TypedDict):
    """The mass-deletion breaker: a run that would delete more than this deletes nothing and says why.
    The limits hold for the table within a window, whatever the number of runs, shards and retries:
    each run reserves its deletions in the budget ledger first."""

    max_share: NotRequired[float]
    """Largest share of what the window's runs examined that they may delete (default 0.5)."""
    max_count: NotRequired[int]
    """Most things the window's runs may delete (default: no limit)."""
    ignore_below: NotRequired[int]
    """A window deleting this many or fewer is never refused (default 10)."""
    allow_mass_deletion: NotRequired[bool]
    """Let a refused plan go on (default false); set it for one deployment, then remove it (alarmed:
    breaker-disabled)."""
    window_seconds: NotRequired[int]
    """Length of a budget window, 60..604800 (default: the schedule's interval, so that each scheduled
    run, with its fan-out and retries, has the budget one run had)."""
    max_deletes_per_second: NotRequired[int]
    """Most items the job deletes from its table in one second, 1..100000 (default: no limit), for all
    its runs together (shards, fan-out, overlapping runs) through the budget ledger when there is one,
    else per run; a run waits for the next second when the limit is reached, and stops waiting at its
    deadline."""


class IndexLayoutArgs(TypedDict):
    """One index: its entries' range-key prefix and the key of the item each entry points at."""

    range_prefix: str
    """Range-key prefix of the entries (e.g. _access_token_index:); the rest is the {token}."""
    target: list[str]
    """The target's hash key and range key as templates of {owner} and {token}
    (e.g. ["{owner}", "mcp_tokens:{token}"])."""


class ReferencesArgs(TypedDict):
    """Index entries under one hash key value whose target item no longer exists."""

    hash_value: str
    """Hash key value of the entries (ActingWeb: _actingweb_oauth2)."""
    indexes: list[IndexLayoutArgs]
    """The indexes: range-key prefix and target key templates."""
    owner_attribute: str
    """Entry attribute naming the owner (ActingWeb: data)."""
    owner_format: NotRequired[str]
    """text (default) or json (a JSON-encoded string, as ActingWeb writes it)."""
    grace_seconds: NotRequired[int]
    """An entry meant to outlive its target by this much is left to TTL once its target's time is
    up (ActingWeb's INDEX_TTL_BUFFER: 7200; default 0)."""
    target_key_attributes: NotRequired[list[str]]
    """Key attributes of the target table (default: this table's)."""
    target_table_name: NotRequired[pulumi.Input[str]]
    """Referenced table (default: the same table)."""
    target_table_arn: NotRequired[pulumi.Input[str]]
    """ARN of the referenced table (required with `target_table_name`)."""


class PostgresArgs(TypedDict):
    """Where a PostgreSQL job connects; the password comes from Secrets Manager, never the environment."""

    host: pulumi.Input[str]
    """Database host."""
    database: pulumi.Input[str]
    """Database of the table."""
    secret_arn: pulumi.Input[str]
    """Secrets Manager secret: RDS-style JSON (username, password) or the password alone."""
    port: NotRequired[int]
    """Port (default 5432)."""
    user: NotRequired[str]
    """User, when the secret holds no username."""
    lookback_seconds: NotRequired[int]
    """Window of the pg-monitor's failed runs and rows purged (default: the rate() interval, else 3600)."""


class PurgeArgs(TypedDict):
    """What a pg-purge job deletes, or which pg_cron cleanup a pg-monitor job watches."""

    expiry_column: str
    """Expiry column: epoch seconds, timestamptz or timestamp (UTC)."""
    table_schema: NotRequired[str]
    """Schema of the table (default public)."""
    schema: NotRequired[str]
    """Schema of the PgCronCleanup's objects (pg-monitor; default expiry)."""
    job_name: NotRequired[str]
    """The PgCronCleanup's job name (pg-monitor; default: this job's name)."""
    batch_size: NotRequired[int]
    """Rows per batch, one transaction each (default 5000)."""
    max_runtime_seconds: NotRequired[int]
    """Stop starting batches after this (default 300)."""
    extra_column: NotRequired[str]
    """Purge only rows whose `extra_column` equals `extra_value`."""
    extra_value: NotRequired[str]
    """Value `extra_column` must have."""


class FanOutArgs(TypedDict):
    """Fan-out: the schedule starts a Step Functions state machine whose distributed Map invokes the
    function once per expiry-index shard of a sweep (payload {"shards": [k]}) or once per index of an
    orphaned-references job's references (payload {"indexes": [k]}), the breaker's budget ledger holding
    the table's limits across all of them."""

    max_concurrency: NotRequired[int]
    """Most shards or indexes cleaned at once, 1..1000 (default 10); also the function's reserved
    concurrency when reserve_concurrency is on."""
    tolerated_failure_percentage: NotRequired[float]
    """Share of shards or indexes, 0..100, whose invocation may fail without failing the execution
    (default 0)."""


class ScheduledSweeperArgs(TypedDict):
    """Inputs of a ScheduledSweeper."""

    kind: str
    """ttl-monitor, sweep, orphaned-references, pg-purge or pg-monitor."""
    schedule: str
    """rate(N unit), cron(min hour day-of-month month day-of-week year) or at(yyyy-mm-ddThh:mm:ss)."""
    table: NotRequired[pulumi.Input[TableTarget]]
    """The DynamoDB table, whole: a TtlTable's `target` output (DynamoDB jobs). In place of table_name,
    table_arn, key_attributes, ttl_attribute and the expiry index fields; giving both is refused."""
    table_name: NotRequired[pulumi.Input[str]]
    """The table the job reads (required unless `table` is given; the PostgreSQL table of pg-purge and
    pg-monitor jobs)."""
    table_arn: NotRequired[pulumi.Input[str]]
    """Its ARN, which IAM names exactly (DynamoDB jobs)."""
    key_attributes: NotRequired[list[str]]
    """The table's hash key and optional range key (DynamoDB jobs)."""
    ttl_attribute: NotRequired[str]
    """The table's TTL attribute (default expires_at)."""
    expiry_index_name: NotRequired[str]
    """Query this expiry index instead of scanning."""
    expiry_index_shards: NotRequired[int]
    """Shard count of the expiry index."""
    expiry_shard_attribute: NotRequired[str]
    """Shard attribute of the expiry index."""
    job_name: NotRequired[str]
    """Name in metrics and logs (default: the component's name)."""
    namespace: NotRequired[str]
    """CloudWatch metric namespace (default Expiry)."""
    dry_run: NotRequired[bool]
    """Report what would be done, write nothing (default false)."""
    max_items: NotRequired[int]
    """Most items handled in one run (default 100000)."""
    workers: NotRequired[int]
    """Concurrent deletions (default 64 for sweep and orphaned-references jobs, else 8)."""
    scan_segments: NotRequired[int]
    """Parallel scan segments when there is no expiry index (default 1)."""
    page_size: NotRequired[int]
    """Items per Query/Scan page (default: DynamoDB's 1 MB pages)."""
    safety_margin_seconds: NotRequired[int]
    """Stop taking work this long before the timeout (default 15)."""
    breaker: NotRequired[BreakerArgs]
    """Mass-deletion breaker (sweep and orphaned-references jobs)."""
    budget_table_name: NotRequired[pulumi.Input[str]]
    """An existing budget ledger to reserve deletions in, e.g. another sweeper's `budget_table_name`
    (default: the component creates one; sweep and orphaned-references jobs)."""
    budget_table_arn: NotRequired[pulumi.Input[str]]
    """ARN of that ledger (required with `budget_table_name`)."""
    plan_sample_size: NotRequired[int]
    """Keys of each kind of planned action listed in the run's summary (default 20)."""
    unindexed_check_items: NotRequired[int]
    """With an expiry index: items of a random Scan segment checked each run for expired items
    without the shard attribute, reported as UnindexedExpired and alarmed (default 10,000; 0 turns
    the check off)."""
    delete_expired: NotRequired[bool]
    """Delete expired items and cascade (default true); false when TTL and a TtlStreamCascade own
    them and the sweep only marks kept objects and removes orphans."""
    s3: NotRequired[S3CascadeArgs]
    """S3 cascade (sweep jobs)."""
    stuck_uploads: NotRequired[StuckUploadsArgs]
    """Stuck uploads (sweep jobs; needs s3 with upload and status attributes)."""
    orphaned_objects: NotRequired[OrphanedObjectsArgs]
    """Orphaned objects (sweep jobs; needs s3)."""
    references: NotRequired[ReferencesArgs]
    """Orphaned references (orphaned-references jobs)."""
    postgres: NotRequired[PostgresArgs]
    """The database (pg-purge and pg-monitor jobs)."""
    purge: NotRequired[PurgeArgs]
    """The purge (pg-purge) or the pg_cron cleanup watched (pg-monitor)."""
    subnet_ids: NotRequired[list[pulumi.Input[str]]]
    """Run the function in these VPC subnets (to reach a private database)."""
    security_group_ids: NotRequired[list[pulumi.Input[str]]]
    """Security groups of the function in the VPC."""
    hooks_path: NotRequired[str]
    """A .py file or package bundled as `expiry_hooks`; its before_delete(item, job) runs first."""
    schedule_timezone: NotRequired[str]
    """IANA time zone of cron()/at() (default UTC)."""
    flexible_window_minutes: NotRequired[int]
    """Flexible time window, 1..1440 minutes (default off)."""
    schedule_retry_attempts: NotRequired[int]
    """Delivery retries of a scheduled event, 0..185 (default 2)."""
    schedule_max_event_age_seconds: NotRequired[int]
    """Give up delivering an event after this, 60..86400 (default 3600)."""
    paused: NotRequired[bool]
    """Pause the job: its schedule is DISABLED and starts no run until it is set back to false (default
    false). Nothing else changes, so pausing and resuming update the schedule in place."""
    timeout_seconds: NotRequired[int]
    """Lambda timeout, 1..900 (default 300)."""
    memory_mb: NotRequired[int]
    """Lambda memory, 128..10240 (default 1769, one vCPU, for sweep and orphaned-references jobs, whose
    calls need the CPU; 256 for the others)."""
    runtime: NotRequired[str]
    """Lambda runtime (default python3.13)."""
    architecture: NotRequired[str]
    """arm64 (default) or x86_64."""
    psycopg_layer_arn: NotRequired[pulumi.Input[str]]
    """PostgreSQL jobs: a prebuilt psycopg layer for the function's architecture and runtime (default:
    one built from PyPI's wheels while the program runs)."""
    log_retention_days: NotRequired[int]
    """Retention of the function's log group (default 30)."""
    existing_role_name: NotRequired[str]
    """Run the function as this existing IAM role (e.g. one with your permissions boundary) instead of
    creating one: the component reads it and attaches its least-privilege inline policy to it. The role
    must trust lambda.amazonaws.com."""
    existing_log_group_name: NotRequired[str]
    """Log to this existing CloudWatch log group (e.g. one encrypted with your KMS key) instead of
    creating one; its retention stays yours (log_retention_days is refused with it)."""
    reserve_concurrency: NotRequired[bool]
    """Reserve a concurrency of 1 so runs never overlap (default true; off for accounts without quota)."""
    fan_out: NotRequired[FanOutArgs]
    """Clean the expiry index's shards (sweep jobs with an expiry index) or the references' indexes
    (orphaned-references jobs with two or more) in parallel through a Step Functions distributed Map
    (default: one invocation does all of them)."""
    tags: NotRequired[pulumi.Input[dict[str, pulumi.Input[str]]]]
    """Tags of every child that takes tags."""


def table_target(table: TtlTable) -> dict[str, Any]:
    """The ScheduledSweeper args that point a job at a TtlTable (and its expiry index), field by field:
    what `{"table": table.target}` stands for."""
    return with_table(COMPONENT, {"table": table.target}, TABLE_FIELDS)


# The args that are job settings: the EXPIRY_JOB the function reads holds these, under these names and
# nesting (expiry.runtime.jobs.config parses them); every other arg is for deployment only.
JOB_SETTINGS = (
    "kind",
    "job_name",
    "table_name",
    "key_attributes",
    "ttl_attribute",
    "expiry_index_name",
    "expiry_index_shards",
    "expiry_shard_attribute",
    "namespace",
    "dry_run",
    "max_items",
    "workers",
    "scan_segments",
    "page_size",
    "safety_margin_seconds",
    "plan_sample_size",
    "unindexed_check_items",
    "delete_expired",
    "breaker",
    "budget_table_name",
    "s3",
    "stuck_uploads",
    "orphaned_objects",
    "references",
    "postgres",
    "purge",
    "hooks_path",
)
# Keys of a job-settings section that are for deployment only (IAM): left out of EXPIRY_JOB.
DEPLOY_ONLY = {"s3": ("object_prefix",), "references": ("target_table_arn",)}


def job_settings(name: str, args: dict[str, Any], names: dict[str, Any]) -> dict[str, Any]:
    """The job's settings as the handler reads them: the args that are settings, under their own names,
    with ``names`` (dotted path -> value, e.g. s3.bucket) in place of the Outputs at those paths and
    hooks_path as the hook file's name (where it is on this machine is no setting of the job)."""
    settings = {"job_name": name} | {key: args[key] for key in JOB_SETTINGS if key in args}
    for section, deploy_only in DEPLOY_ONLY.items():
        if isinstance(settings.get(section), dict):
            settings[section] = {key: val for key, val in settings[section].items() if key not in deploy_only}
    if isinstance(settings.get("hooks_path"), str):
        settings["hooks_path"] = Path(settings["hooks_path"]).resolve().name
    return with_names(settings, names)


def with_names(settings: dict[str, Any], names: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with the value of each of ``names`` (dotted path -> value) at its path."""
    settings = dict(settings)
    for path, value in names.items():
        section, _, key = path.rpartition(".")
        if section:
            settings[section] = {**settings[section], key: value}
        else:
            settings[key] = value
    return settings


def name_sources(args: dict[str, Any], ledger: Any) -> dict[str, Any]:
    """The settings that are names of other resources, possibly Outputs (dotted path -> arg): resolved
    in EXPIRY_JOB once known. ``ledger``: the budget table's name, None without one."""
    s3, refs, postgres = args.get("s3") or {}, args.get("references") or {}, args.get("postgres") or {}
    sources = {"table_name": args.get("table_name")}
    sources |= {"s3.bucket": s3.get("bucket")} if "s3" in args else {}
    sources |= {"references.target_table_name": refs["target_table_name"]} if "target_table_name" in refs else {}
    sources |= {f"postgres.{key}": postgres.get(key) for key in POSTGRES_NAMES if "postgres" in args}
    return sources | ({"budget_table_name": ledger} if ledger is not None else {})


def _placeholder(value: Any) -> Any:
    return PLACEHOLDER if isinstance(value, pulumi.Output) else value


def _validated_job(name: str, args: dict[str, Any]) -> Job:
    refs = args.get("references") or {}
    if not isinstance(args.get("s3", {}), dict) or not isinstance(refs, dict):
        v.fail(COMPONENT, "s3" if not isinstance(args.get("s3", {}), dict) else "references", "must be a mapping")
    if ("target_table_name" in refs) != ("target_table_arn" in refs):
        v.fail(COMPONENT, "references.target_table_arn", "target_table_name and target_table_arn go together")
    ledger = _placeholder(args.get("budget_table_name"))
    if ledger is not None:
        v.text(COMPONENT, "budget_table_name", ledger)
    if ("budget_table_name" in args) != ("budget_table_arn" in args):
        v.fail(COMPONENT, "budget_table_arn", "budget_table_name and budget_table_arn go together")
    if ledger is not None and args.get("kind") not in SWEEPING_KINDS:
        v.fail(COMPONENT, "budget_table_name", f"only {' and '.join(SWEEPING_KINDS)} jobs reserve deletions")
    if isinstance(args.get("breaker"), dict) and "budget_table" in args["breaker"]:
        v.fail(COMPONENT, "breaker.budget_table", "is set by the component; give budget_table_name and _arn instead")
    ledger = ledger or (PLACEHOLDER if args.get("kind") in SWEEPING_KINDS else None)
    names = {path: _placeholder(value) for path, value in name_sources(args, ledger).items()}
    settings = job_settings(name, args, names)
    try:
        job = parse_job(settings, source=COMPONENT)
    except JobConfigError as error:
        raise ValueError(str(error)) from error
    _check_purge(job, job.table)
    _check_size(settings)
    return job


def _check_purge(job: Job, table: str) -> None:
    """A PostgreSQL job's purge, checked as the handler will check it (PurgeSpec), on ``table``."""
    if job.purge is None:
        return
    try:
        PurgeSpec.from_dict({"job_name": job.name, **job.purge, "table": table})
    except CleanupError as error:
        raise ValueError(f"{COMPONENT}: purge.{error}") from error


def _check_size(settings: dict[str, Any]) -> None:
    """Refuse settings that do not fit in Lambda's 4 KB of environment."""
    size = len(ENV_VAR) + len(json.dumps(settings, separators=(",", ":")))
    if size > ENVIRONMENT_LIMIT:
        v.fail(
            COMPONENT,
            "environment",
            f"the job's settings take {size} bytes; Lambda allows {ENVIRONMENT_LIMIT} for all environment variables",
        )


class ScheduledSweeper(pulumi.ComponentResource):
    """A scheduled cleanup Lambda bundled from expiry.runtime: TTL monitor, expired-item sweep with S3
    cascade, stuck uploads, orphaned objects or orphaned references."""

    function_name: pulumi.Output[str]
    """Name of the Lambda function."""
    function_arn: pulumi.Output[str]
    """ARN of the Lambda function."""
    role_arn: pulumi.Output[str]
    """ARN of the function's role."""
    log_group_name: pulumi.Output[str]
    """The function's log group."""
    schedule_arn: pulumi.Output[str]
    """ARN of the EventBridge Scheduler schedule."""
    dead_letter_queue_arn: pulumi.Output[str]
    """Queue of scheduled events that could not be delivered."""
    job_name: pulumi.Output[str]
    """The job's name in metrics (the Job dimension) and logs."""
    table_name: pulumi.Output[str]
    """The table the job reads (the Table dimension)."""
    kind: pulumi.Output[str]
    """The job's kind."""
    namespace: pulumi.Output[str]
    """The CloudWatch namespace of the job's metrics."""
    interval_seconds: pulumi.Output[int]
    """Longest gap between scheduled runs (exact for rate(), an upper bound for cron())."""
    timeout_seconds: pulumi.Output[int]
    """The function's timeout."""
    dead_letter_queue_name: pulumi.Output[str]
    """Name of the schedule's dead-letter queue."""
    budget_table_name: pulumi.Output[str | None]
    """The budget ledger the job reserves its deletions in (sweep and orphaned-references jobs): pass it,
    with `budget_table_arn`, to other sweepers to share it."""
    budget_table_arn: pulumi.Output[str | None]
    """ARN of the budget ledger."""

    def __init__(
        self,
        name: str,
        args: ScheduledSweeperArgs,
        opts: pulumi.ResourceOptions | None = None,
        *,
        transforms: Mapping[str, ChildTransform] | None = None,
    ) -> None:
        """``transforms``: a transform per child (keys: CHILDREN), for what the args do not cover."""
        raw = v.known_fields(COMPONENT, args, ScheduledSweeperArgs)
        if raw.get("kind") in kinds.names(scheduled=False):
            v.fail(COMPONENT, "kind", f"{raw['kind']} jobs run on the table's stream: use TtlStreamCascade")
        v.one_of(COMPONENT, "kind", raw.get("kind"), KINDS)
        dynamodb_job = raw.get("kind") not in POSTGRES_KINDS
        if raw.get("table") is not None and not dynamodb_job:
            v.fail(
                COMPONENT, "table", f"is a DynamoDB table; {raw['kind']} jobs name their PostgreSQL table in table_name"
            )
        raw = with_table(COMPONENT, raw, TABLE_FIELDS)
        for field in ("table_name", "table_arn") if dynamodb_job else ("table_name",):
            if raw.get(field) is None:
                v.fail(
                    COMPONENT, field, "is required" + (" (or give table, a TtlTable's target)" if dynamodb_job else "")
                )
        postgres_args = raw.get("postgres")
        if (
            raw.get("kind") == "pg-monitor"
            and isinstance(postgres_args, dict)
            and "lookback_seconds" not in postgres_args
        ):
            interval = rate_seconds(raw.get("schedule") or "")
            if interval:
                raw["postgres"] = {**raw["postgres"], "lookback_seconds": max(60, interval)}
        if "job_name" in raw and not (isinstance(raw["job_name"], str) and JOB_NAME.match(raw["job_name"])):
            v.fail(
                COMPONENT, "job_name", f"must be 1..128 characters of A-Z a-z 0-9 _ . : -, got {raw.get('job_name')!r}"
            )
        raw = _with_budget_window(_with_mark_ahead(raw))
        job = _validated_job(name, raw)
        vpc = _vpc(raw)
        timezone = check_timezone(COMPONENT, "schedule_timezone", raw.get("schedule_timezone", "UTC"))
        schedule = check_expression(COMPONENT, "schedule", raw.get("schedule"), timezone)
        window = v.integer(COMPONENT, "flexible_window_minutes", raw.get("flexible_window_minutes", 0), 0, 1440)
        retries = v.integer(COMPONENT, "schedule_retry_attempts", raw.get("schedule_retry_attempts", 2), 0, 185)
        event_age = v.integer(
            COMPONENT, "schedule_max_event_age_seconds", raw.get("schedule_max_event_age_seconds", 3600), 60, 86400
        )
        paused = v.boolean(COMPONENT, "paused", raw.get("paused", False))
        timeout = v.integer(COMPONENT, "timeout_seconds", raw.get("timeout_seconds", 300), 1, 900)
        if job.safety_margin_seconds >= timeout:
            v.fail(COMPONENT, "safety_margin_seconds", f"must be less than timeout_seconds ({timeout})")
        memory_default = SWEEPING_MEMORY_MB if kinds.kind(job.kind).sweeping else 256
        memory = v.integer(COMPONENT, "memory_mb", raw.get("memory_mb", memory_default), 128, 10240)
        lambda_runtime = v.one_of(COMPONENT, "runtime", raw.get("runtime", "python3.13"), RUNTIMES)
        architecture = v.one_of(COMPONENT, "architecture", raw.get("architecture", "arm64"), ARCHITECTURES)
        retention = raw.get("log_retention_days", 30)
        if retention not in LOG_RETENTION_DAYS or isinstance(retention, bool):
            v.fail(COMPONENT, "log_retention_days", f"must be one of {LOG_RETENTION_DAYS}, got {retention!r}")
        reserve = v.boolean(COMPONENT, "reserve_concurrency", raw.get("reserve_concurrency", True))
        fan_out = checked_fan_out(COMPONENT, raw.get("fan_out"), job)
        v.tags(COMPONENT, "tags", raw.get("tags"))
        if raw.get("psycopg_layer_arn") is not None and not kinds.kind(job.kind).postgres:
            v.fail(COMPONENT, "psycopg_layer_arn", f"only PostgreSQL jobs use psycopg, not {job.kind}")
        if raw.get("psycopg_layer_arn") is not None:
            v.layer_arn(COMPONENT, "psycopg_layer_arn", raw["psycopg_layer_arn"])
        if raw.get("s3") and job.kind != "sweep":
            v.fail(COMPONENT, "s3", f"only sweep jobs clean S3, not {job.kind}")
        object_prefix = (raw.get("s3") or {}).get("object_prefix", "")
        if not isinstance(object_prefix, str):
            v.fail(COMPONENT, "s3.object_prefix", f"must be a string, got {object_prefix!r}")
        if job.orphaned_objects and not job.orphaned_objects.prefix.startswith(object_prefix):
            v.fail(
                COMPONENT,
                "s3.object_prefix",
                f"{object_prefix!r} does not cover orphaned_objects.prefix {job.orphaned_objects.prefix!r}: "
                "the function could list the orphans but not delete them",
            )
        existing_role_name, existing_logs = existing_names(COMPONENT, raw)
        postgres_job = kinds.kind(job.kind).postgres
        absent = {
            "role": existing_role_name and "it conflicts with existing_role_name (that role is read, not created)",
            "log_group": existing_logs
            and "it conflicts with existing_log_group_name (that log group is read, not created)",
            "psycopg_layer": (not postgres_job or raw.get("psycopg_layer_arn") is not None)
            and "only PostgreSQL jobs without psycopg_layer_arn have one",
            "vpc_access": not vpc and "only a function in a VPC (subnet_ids, security_group_ids) has one",
            "budget_table": (not job.breaker.budget_table or raw.get("budget_table_name") is not None)
            and f"only {' and '.join(SWEEPING_KINDS)} jobs without budget_table_name have one",
            **dict.fromkeys(FAN_OUT_CHILDREN, fan_out is None and "only a sweeper with fan_out has one"),
        }
        opts = with_transforms(
            COMPONENT, name, CHILDREN, transforms, opts, {key: why for key, why in absent.items() if why}
        )
        bundle = build_bundle(raw.get("hooks_path"), COMPONENT)
        super().__init__(f"expiry:index:{COMPONENT}", name, {}, opts)

        child = pulumi.ResourceOptions(parent=self)
        tags = raw.get("tags")
        if existing_logs is None:
            self.log_group = log_group(name, retention, tags, child)
        else:
            self.log_group = existing_log_group(name, existing_logs, child)
        self.role = (
            lambda_role(name, tags, child)
            if existing_role_name is None
            else existing_role(name, existing_role_name, child)
        )
        role_name: Any = self.role.id if existing_role_name is None else existing_role_name
        log_group_name: Any = self.log_group.name if existing_logs is None else existing_logs
        refs, postgres = raw.get("references") or {}, raw.get("postgres") or {}
        ledger_name, ledger_arn = raw.get("budget_table_name"), raw.get("budget_table_arn")
        if job.breaker.budget_table and ledger_name is None:
            self.budget_table = budget_ledger(f"{name}-budget", tags, child)
            ledger_name, ledger_arn = self.budget_table.name, self.budget_table.arn
        policy = pulumi.Output.all(
            raw.get("table_arn"),
            self.log_group.arn,
            (raw.get("s3") or {}).get("bucket"),
            refs.get("target_table_arn"),
            postgres.get("secret_arn"),
            ledger_arn,
        ).apply(lambda a: json.dumps(function_policy(job, Arns(*a), object_prefix)))
        self.role_policy = aws.iam.RolePolicy(f"{name}-policy", role=role_name, policy=policy, opts=child)
        self.inventory = bucket_inventory(name, raw, job, child)
        depends_on: list[pulumi.Resource] = [self.log_group, self.role_policy]
        if vpc:
            self.vpc_access = vpc_access(name, self.role if existing_role_name is None else existing_role_name, child)
            depends_on.append(self.vpc_access)
        layers = None
        if kinds.kind(job.kind).postgres and raw.get("psycopg_layer_arn") is not None:
            layers = [raw["psycopg_layer_arn"]]
        elif kinds.kind(job.kind).postgres:
            self.psycopg_layer = psycopg_layer(name, architecture, lambda_runtime, bundle.path.parent, child)
            layers = [self.psycopg_layer.arn]

        sources = name_sources(raw, ledger_name)
        settings = pulumi.Output.all(*sources.values()).apply(
            lambda a: _environment(
                name, raw, job, dict(zip(sources, a, strict=True)), v.unresolved(COMPONENT, name, sources, a)
            )
        )
        self.function = aws.lambda_.Function(
            f"{name}-function",
            runtime=lambda_runtime,
            architectures=[architecture],
            handler=kinds.kind(job.kind).handler,
            role=self.role.arn,
            code=pulumi.FileArchive(str(bundle.path)),
            source_code_hash=bundle.sha256_base64,
            timeout=timeout,
            memory_size=memory,
            # With fan-out, the distributed Map's children run together: as many as it starts at once.
            reserved_concurrent_executions=(fan_out["max_concurrency"] if fan_out else 1) if reserve else None,
            layers=layers,
            vpc_config=aws.lambda_.FunctionVpcConfigArgs(**vpc) if vpc else None,
            environment=aws.lambda_.FunctionEnvironmentArgs(variables={ENV_VAR: settings}),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(
                log_format="JSON",
                log_group=log_group_name,
                application_log_level="INFO",
                system_log_level="WARN",
            ),
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on),
        )
        self.async_config = aws.lambda_.FunctionEventInvokeConfig(
            f"{name}-async",
            function_name=self.function.name,
            maximum_retry_attempts=0,
            maximum_event_age_in_seconds=60,
            opts=child,
        )
        self.dead_letter_queue = aws.sqs.Queue(
            f"{name}-dlq", message_retention_seconds=14 * 86400, sqs_managed_sse_enabled=True, tags=tags, opts=child
        )
        # Only schedules of this account may use the role (AWS's confused-deputy guard).
        account = aws.get_caller_identity_output(opts=pulumi.InvokeOptions(parent=self)).account_id
        self.scheduler_role = aws.iam.Role(
            f"{name}-scheduler-role",
            assume_role_policy=account.apply(lambda a: json.dumps(assume_role_policy("scheduler.amazonaws.com", a))),
            tags=tags,
            opts=child,
        )
        target_arn: pulumi.Output[str] = self.function.arn
        started_by: list[pulumi.Resource] = []
        if fan_out is not None:
            target_arn, started_by = self._fan_out(name, job, fan_out, account, tags), [self.state_machine_policy]
        scheduler_statements = fan_out_scheduler_policy if fan_out is not None else scheduler_policy
        self.scheduler_policy = aws.iam.RolePolicy(
            f"{name}-scheduler-policy",
            role=self.scheduler_role.id,
            policy=pulumi.Output.all(target_arn, self.dead_letter_queue.arn).apply(
                lambda a: json.dumps(scheduler_statements(a[0], a[1]))
            ),
            opts=child,
        )
        self.schedule = aws.scheduler.Schedule(
            f"{name}-schedule",
            schedule_expression=schedule,
            schedule_expression_timezone=timezone,
            state="DISABLED" if paused else "ENABLED",
            flexible_time_window=aws.scheduler.ScheduleFlexibleTimeWindowArgs(
                mode="FLEXIBLE" if window else "OFF", maximum_window_in_minutes=window or None
            ),
            target=aws.scheduler.ScheduleTargetArgs(
                arn=target_arn,
                role_arn=self.scheduler_role.arn,
                input=json.dumps({"source": "expiry-schedule", "job": job.name}),
                retry_policy=aws.scheduler.ScheduleTargetRetryPolicyArgs(
                    maximum_retry_attempts=retries, maximum_event_age_in_seconds=event_age
                ),
                dead_letter_config=aws.scheduler.ScheduleTargetDeadLetterConfigArgs(arn=self.dead_letter_queue.arn),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.scheduler_policy, *started_by]),
        )
        self.job = job
        self.schedule_expression = schedule
        self.timeout = timeout
        self.paused = paused
        self.function_name = self.function.name
        self.function_arn = self.function.arn
        self.role_arn = self.role.arn
        self.log_group_name = pulumi.Output.from_input(log_group_name)
        self.schedule_arn = self.schedule.arn
        self.dead_letter_queue_arn = self.dead_letter_queue.arn
        self.job_name = pulumi.Output.from_input(job.name)
        self.table_name = pulumi.Output.from_input(raw["table_name"])
        # What CleanupAlarms needs to watch this job, as outputs any language can pass on.
        self.kind = pulumi.Output.from_input(job.kind)
        self.namespace = pulumi.Output.from_input(job.namespace)
        self.interval_seconds = pulumi.Output.from_input(interval_seconds(schedule))
        self.timeout_seconds = pulumi.Output.from_input(timeout)
        self.dead_letter_queue_name = self.dead_letter_queue.name
        self.budget_table_name = pulumi.Output.from_input(ledger_name)
        self.budget_table_arn = pulumi.Output.from_input(ledger_arn)
        self.register_outputs(
            {
                "function_name": self.function_name,
                "function_arn": self.function_arn,
                "role_arn": self.role_arn,
                "log_group_name": self.log_group_name,
                "schedule_arn": self.schedule_arn,
                "dead_letter_queue_arn": self.dead_letter_queue_arn,
                "job_name": self.job_name,
                "table_name": self.table_name,
                "kind": self.kind,
                "namespace": self.namespace,
                "interval_seconds": self.interval_seconds,
                "timeout_seconds": self.timeout_seconds,
                "dead_letter_queue_name": self.dead_letter_queue_name,
                "budget_table_name": self.budget_table_name,
                "budget_table_arn": self.budget_table_arn,
            }
        )

    def _fan_out(
        self, name: str, job: Job, fan_out: dict[str, Any], account: pulumi.Output[str], tags: Any
    ) -> pulumi.Output[str]:
        """The fan-out children: the state machine, its role and policy, its failure alarm; its ARN."""
        child = pulumi.ResourceOptions(parent=self)
        self.state_machine_role = aws.iam.Role(
            f"{name}-fan-out-role",
            assume_role_policy=account.apply(lambda a: json.dumps(assume_role_policy("states.amazonaws.com", a))),
            tags=tags,
            opts=child,
        )
        self.state_machine = aws.sfn.StateMachine(
            f"{name}-fan-out",
            type="STANDARD",
            role_arn=self.state_machine_role.arn,
            definition=self.function.arn.apply(lambda arn: json.dumps(definition(job, arn, fan_out))),
            tags=tags,
            opts=child,
        )
        # The policy names the state machine's ARN built from its name: the machine needs the role first.
        region = aws.get_region_output(opts=pulumi.InvokeOptions(parent=self)).region
        self.state_machine_policy = aws.iam.RolePolicy(
            f"{name}-fan-out-policy",
            role=self.state_machine_role.id,
            policy=pulumi.Output.all(self.function.arn, region, account, self.state_machine.name).apply(
                lambda a: json.dumps(state_machine_policy(a[0], state_machine_arn(*a)))
            ),
            opts=child,
        )
        self.fan_out_alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-fan-out-failed",
            alarm_description=f"A fan-out execution of {job.kind} job {job.name} failed "
            f"(its {'indexes' if job.references else 'shards'}: see the execution).",
            namespace="AWS/States",
            metric_name="ExecutionsFailed",
            dimensions={"StateMachineArn": self.state_machine.arn},
            statistic="Sum",
            period=300,
            evaluation_periods=1,
            threshold=0,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
            tags=tags,
            opts=child,
        )
        return self.state_machine.arn


def _with_mark_ahead(raw: dict[str, Any]) -> dict[str, Any]:
    """Kept objects are marked ahead by twice the schedule's interval unless the args say otherwise,
    so every kept item is seen alive by at least one run before TTL may remove it."""
    s3 = raw.get("s3")
    if not isinstance(s3, dict) or not s3.get("keep_statuses") or "mark_ahead_seconds" in s3:
        return raw
    interval = rate_seconds(raw.get("schedule") or "") or 43200
    return {**raw, "s3": {**s3, "mark_ahead_seconds": 2 * interval}}


def _with_budget_window(raw: dict[str, Any]) -> dict[str, Any]:
    """A deleting job's budget window is the schedule's interval unless the args say otherwise: each
    scheduled run, its fan-out and its retries share the budget one run had before."""
    breaker = raw.get("breaker", {})
    if raw.get("kind") not in SWEEPING_KINDS or not isinstance(breaker, dict) or "window_seconds" in breaker:
        return raw
    schedule = raw.get("schedule")
    seconds = min(MAX_WINDOW_SECONDS, max(60, interval_seconds(schedule if isinstance(schedule, str) else "")))
    return {**raw, "breaker": {**breaker, "window_seconds": seconds}}


def _vpc(raw: dict[str, Any]) -> dict[str, Any] | None:
    subnets, groups = raw.get("subnet_ids"), raw.get("security_group_ids")
    if subnets is None and groups is None:
        return None
    if not subnets or not groups or not isinstance(subnets, list) or not isinstance(groups, list):
        v.fail(
            COMPONENT,
            "subnet_ids" if not subnets else "security_group_ids",
            "a function in a VPC needs both subnet_ids and security_group_ids (non-empty lists)",
        )
    return {"subnet_ids": subnets, "security_group_ids": groups}


def _environment(name: str, raw: dict[str, Any], job: Job, names: dict[str, Any], unknown: set[str]) -> str:
    """The EXPIRY_JOB value. The job was parsed at construction with placeholders for the names not yet
    known; now only the resolved names are checked, as the parser checks them, and the size with them.
    A name that resolved to None (``unknown``) stays a placeholder for the size and is left null."""
    settings = job_settings(name, raw, names)
    resolved = [path for path in names if path not in unknown]
    try:
        check_names(settings, resolved, COMPONENT)
    except JobConfigError as error:
        raise ValueError(str(error)) from error
    if "table_name" in resolved:
        _check_purge(job, names["table_name"])
    _check_size(with_names(settings, dict.fromkeys(unknown, PLACEHOLDER)))
    return json.dumps(settings, separators=(",", ":"))
