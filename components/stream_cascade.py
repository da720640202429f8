"""TtlStreamCascade: a Lambda on a TtlTable's stream that cleans, from the old images of TTL's own
deletions, what TTL cannot (objects, multipart uploads) and can archive those images. It reads no
items to find work and deletes none: TTL does, for free."""

import json
from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict

import pulumi
import pulumi_aws as aws

from expiry.components import validation as v
from expiry.components.lambda_bundle import build_bundle
from expiry.components.lambda_parts import existing_log_group, existing_names, existing_role, lambda_role, log_group
from expiry.components.scheduled_sweeper import ARCHITECTURES, LOG_RETENTION_DAYS, RUNTIMES, S3CascadeArgs, with_names
from expiry.components.transforms import Child, ChildTransform, rails, with_transforms
from expiry.components.ttl_table import TableTarget, TtlTable, with_table
from expiry.runtime import kinds
from expiry.runtime.dynamodb.stream_cascade import TTL_DELETIONS_FILTER
from expiry.runtime.jobs.config import ENV_VAR, KIND_STREAM_CASCADE, Job, JobConfigError, check_names, parse_job
from expiry.runtime.kinds.iam import Arns, list_prefix, statement

COMPONENT = "TtlStreamCascade"
OLD_IMAGE_VIEWS = ("OLD_IMAGE", "NEW_AND_OLD_IMAGES")
STARTING_POSITIONS = ("TRIM_HORIZON", "LATEST")
PLACEHOLDER = "x" * 96
# The fields a `table` input (a TtlTable's target) stands for.
TABLE_FIELDS = ("table_name", "table_arn", "stream_arn", "key_attributes", "ttl_attribute")
# The children `transforms` reaches: key -> resource type and logical name after the component's name.
CHILDREN = {
    "role": Child(aws.iam.Role, "-role"),
    "policy": Child(aws.iam.RolePolicy, "-policy", rails("policy", "role")),
    "log_group": Child(aws.cloudwatch.LogGroup, "-logs"),
    "function": Child(aws.lambda_.Function, "-function", rails("environment", "role", "code", "handler")),
    "failure_queue": Child(aws.sqs.Queue, "-failures"),
    "event_source_mapping": Child(aws.lambda_.EventSourceMapping, "-stream", rails("filter_criteria")),
}


class TtlStreamCascadeArgs(TypedDict):
    """Inputs of a TtlStreamCascade: the table whole (`table`, a TtlTable's target) or field by field."""

    table: NotRequired[pulumi.Input[TableTarget]]
    """The table, whole: a TtlTable's `target` output, with a stream that carries old images. In place
    of table_name, table_arn, stream_arn, key_attributes and ttl_attribute; giving both is refused."""
    table_name: NotRequired[pulumi.Input[str]]
    """The table whose TTL deletions are cascaded (required unless `table` is given)."""
    table_arn: NotRequired[pulumi.Input[str]]
    """Its ARN (required unless `table` is given)."""
    stream_arn: NotRequired[pulumi.Input[str]]
    """Its stream's ARN; the stream must carry old images (OLD_IMAGE or NEW_AND_OLD_IMAGES; required
    unless `table` is given)."""
    key_attributes: NotRequired[list[str]]
    """The table's hash key and optional range key (required unless `table` is given)."""
    ttl_attribute: NotRequired[str]
    """The table's TTL attribute (default expires_at)."""
    s3: NotRequired[S3CascadeArgs]
    """The objects and uploads expired items point to (as ScheduledSweeper's s3)."""
    archive_bucket: NotRequired[pulumi.Input[str]]
    """Write expired items' last images here as gzip JSON lines, one object per batch."""
    archive_prefix: NotRequired[str]
    """Key prefix of the archive, ending in '/' (default expired/); objects go under dt=YYYY-MM-DD/."""
    job_name: NotRequired[str]
    """Name in metrics and logs (default: the component's name)."""
    namespace: NotRequired[str]
    """CloudWatch metric namespace (default Expiry)."""
    dry_run: NotRequired[bool]
    """Report what would be done, write nothing (default false)."""
    workers: NotRequired[int]
    """Records handled concurrently in a batch (default 8)."""
    batch_size: NotRequired[int]
    """Records per invocation, 1..10000 (default 100)."""
    maximum_batching_window_seconds: NotRequired[int]
    """Wait up to this long to fill a batch, 0..300 (default 5)."""
    maximum_retry_attempts: NotRequired[int]
    """Retries of a failing batch (halved each time: bisect on error) before it goes to the
    on-failure queue, 0..10000 (default 10)."""
    starting_position: NotRequired[str]
    """TRIM_HORIZON (default: the stream's last 24 hours too) or LATEST."""
    paused: NotRequired[bool]
    """Pause the cascade: the stream's event source mapping is disabled (default false) and TTL's
    deletions wait on the stream, to be cascaded on resuming. The stream keeps a record 24 hours only:
    the deletions of a longer pause are never cascaded (their objects stay until an orphan pass)."""
    iterator_age_alarm_seconds: NotRequired[int]
    """How long the oldest record may wait, 60..604800 (default 3600): the iterator-age alarm that
    CleanupAlarms makes of this cascade (`watched_stream(cascade)`) fires past it."""
    timeout_seconds: NotRequired[int]
    """Lambda timeout, 1..900 (default 120)."""
    memory_mb: NotRequired[int]
    """Lambda memory, 128..10240 (default 256)."""
    runtime: NotRequired[str]
    """Lambda runtime (default python3.13)."""
    architecture: NotRequired[str]
    """arm64 (default) or x86_64."""
    log_retention_days: NotRequired[int]
    """Retention of the function's log group (default 30)."""
    existing_role_name: NotRequired[str]
    """Run the function as this existing IAM role (e.g. one with your permissions boundary) instead of
    creating one: the component reads it and attaches its least-privilege inline policy to it. The role
    must trust lambda.amazonaws.com."""
    existing_log_group_name: NotRequired[str]
    """Log to this existing CloudWatch log group (e.g. one encrypted with your KMS key) instead of
    creating one; its retention stays yours (log_retention_days is refused with it)."""
    tags: NotRequired[pulumi.Input[dict[str, pulumi.Input[str]]]]
    """Tags of every child that takes tags."""


def stream_target(table: TtlTable) -> dict[str, Any]:
    """The TtlStreamCascade args that point it at a TtlTable, whose stream must carry old images, field
    by field: what `{"table": table.target}` stands for."""
    fields = with_table(COMPONENT, {"table": table.target}, TABLE_FIELDS)
    _old_images(table.target)
    return fields


def _old_images(target: TableTarget) -> None:
    """Refuse a table (a checked `table` input) whose stream cannot feed the cascade: none, or one
    without old images."""
    view = target.get("stream_view_type")
    if target.get("stream_arn") is None or (view is not None and view not in OLD_IMAGE_VIEWS):
        v.fail(
            COMPONENT,
            "stream_arn",
            f"the table's stream must carry old images (stream_view_type {' or '.join(OLD_IMAGE_VIEWS)}), got {view!r}",
        )


# The args that are job settings, under the names and nesting of EXPIRY_JOB (expiry.runtime.jobs.config
# parses them); every other arg is for deployment only, and so is s3.object_prefix (IAM).
JOB_SETTINGS = (
    "job_name",
    "table_name",
    "key_attributes",
    "ttl_attribute",
    "namespace",
    "dry_run",
    "workers",
    "s3",
    "archive_bucket",
    "archive_prefix",
)


def job_settings(name: str, raw: dict[str, Any], names: dict[str, Any]) -> dict[str, Any]:
    """The job's settings as the handler reads them: the args that are settings, under their own names,
    with ``names`` (dotted path -> value: table_name, s3.bucket, archive_bucket) in place of Outputs."""
    settings = {"kind": KIND_STREAM_CASCADE, "job_name": name} | {key: raw[key] for key in JOB_SETTINGS if key in raw}
    if isinstance(settings.get("s3"), dict):
        settings["s3"] = {key: val for key, val in settings["s3"].items() if key != "object_prefix"}
    return with_names(settings, names)


def name_sources(raw: dict[str, Any]) -> dict[str, Any]:
    """The settings that are names of other resources, possibly Outputs (dotted path -> arg)."""
    sources = {"table_name": raw.get("table_name")}
    sources |= {"s3.bucket": (raw.get("s3") or {}).get("bucket")} if "s3" in raw else {}
    return sources | ({"archive_bucket": raw["archive_bucket"]} if "archive_bucket" in raw else {})


def checked_job(name: str, raw: dict[str, Any]) -> Job:
    """The job, parsed once, as the handler will parse it, with placeholders for names not yet known."""
    names = {
        path: PLACEHOLDER if isinstance(value, pulumi.Output) else value for path, value in name_sources(raw).items()
    }
    try:
        return parse_job(job_settings(name, raw, names), source=COMPONENT)
    except JobConfigError as error:
        raise ValueError(str(error)) from error


def _environment(name: str, raw: dict[str, Any], names: dict[str, Any], unknown: set[str]) -> str:
    """The EXPIRY_JOB value: only the resolved names are checked (as the parser checks them); one that
    resolved to None (``unknown``) was checked as a placeholder at construction and is left null."""
    settings = job_settings(name, raw, names)
    try:
        check_names(settings, [path for path in names if path not in unknown], COMPONENT)
    except JobConfigError as error:
        raise ValueError(str(error)) from error
    return json.dumps(settings, separators=(",", ":"))


class TtlStreamCascade(pulumi.ComponentResource):
    """TTL deletes; this cleans what the deleted items pointed at, from the table's stream."""

    function_name: pulumi.Output[str]
    """Name of the Lambda function."""
    event_source_mapping_id: pulumi.Output[str]
    """The stream's event source mapping."""
    failure_queue_arn: pulumi.Output[str]
    """Queue receiving batches that failed every retry (their shard and sequence range)."""
    # What CleanupAlarms needs of the cascade (a WatchedJobArgs; `watched_stream(cascade)` in Python).
    failure_queue_name: pulumi.Output[str]
    """The on-failure queue's name: a watched job's dead_letter_queue_name."""
    log_group_name: pulumi.Output[str]
    """The function's log group."""
    job_name: pulumi.Output[str]
    """The job's name: the Job dimension of its metrics."""
    kind: pulumi.Output[str]
    """stream-cascade."""
    table_name: pulumi.Output[str]
    """The table: the Table dimension of its metrics."""
    namespace: pulumi.Output[str]
    """The metric namespace."""
    timeout_seconds: pulumi.Output[int]
    """The function's timeout."""
    iterator_age_alarm_seconds: pulumi.Output[int]
    """How long the oldest record may wait before the iterator-age alarm fires."""

    def __init__(
        self,
        name: str,
        args: TtlStreamCascadeArgs,
        opts: pulumi.ResourceOptions | None = None,
        *,
        transforms: Mapping[str, ChildTransform] | None = None,
    ) -> None:
        """``transforms``: a transform per child (keys: CHILDREN), for what the args do not cover."""
        if isinstance(args, dict) and "alarm_topic_arn" in args:
            v.fail(
                COMPONENT,
                "alarm_topic_arn",
                "a TtlStreamCascade makes no alarms since 0.4: CleanupAlarms makes them "
                "(jobs: [watched_stream(cascade)]) and they notify its topic",
            )
        given = v.known_fields(COMPONENT, args, TtlStreamCascadeArgs)
        raw = with_table(COMPONENT, given, TABLE_FIELDS)
        if given.get("table") is not None:
            _old_images(given["table"])
        for field in ("table_name", "table_arn", "stream_arn", "key_attributes"):
            if raw.get(field) is None:
                v.fail(COMPONENT, field, "is required (or give table, a TtlTable's target)")
        if raw.get("s3") is not None and not isinstance(raw["s3"], dict):
            v.fail(COMPONENT, "s3", "must be a mapping")
        if "archive_prefix" in raw and "archive_bucket" not in raw:
            v.fail(COMPONENT, "archive_prefix", "needs archive_bucket")
        s3 = raw.get("s3") or {}
        job = checked_job(name, raw)
        batch_size = v.integer(COMPONENT, "batch_size", raw.get("batch_size", 100), 1, 10_000)
        window = v.integer(
            COMPONENT, "maximum_batching_window_seconds", raw.get("maximum_batching_window_seconds", 5), 0, 300
        )
        retries = v.integer(COMPONENT, "maximum_retry_attempts", raw.get("maximum_retry_attempts", 10), 0, 10_000)
        position = v.one_of(
            COMPONENT, "starting_position", raw.get("starting_position", "TRIM_HORIZON"), STARTING_POSITIONS
        )
        paused = v.boolean(COMPONENT, "paused", raw.get("paused", False))
        age_alarm = v.integer(
            COMPONENT, "iterator_age_alarm_seconds", raw.get("iterator_age_alarm_seconds", 3600), 60, 7 * 86400
        )
        timeout = v.integer(COMPONENT, "timeout_seconds", raw.get("timeout_seconds", 120), 1, 900)
        memory = v.integer(COMPONENT, "memory_mb", raw.get("memory_mb", 256), 128, 10240)
        lambda_runtime = v.one_of(COMPONENT, "runtime", raw.get("runtime", "python3.13"), RUNTIMES)
        architecture = v.one_of(COMPONENT, "architecture", raw.get("architecture", "arm64"), ARCHITECTURES)
        retention = raw.get("log_retention_days", 30)
        if retention not in LOG_RETENTION_DAYS or isinstance(retention, bool):
            v.fail(COMPONENT, "log_retention_days", f"must be one of {LOG_RETENTION_DAYS}, got {retention!r}")
        object_prefix = s3.get("object_prefix", "")
        archive_prefix = raw.get("archive_prefix", "expired/")
        existing_role_name, existing_logs = existing_names(COMPONENT, raw)
        absent = {
            "role": existing_role_name and "it conflicts with existing_role_name (that role is read, not created)",
            "log_group": existing_logs
            and "it conflicts with existing_log_group_name (that log group is read, not created)",
        }
        opts = with_transforms(
            COMPONENT, name, CHILDREN, transforms, opts, {key: why for key, why in absent.items() if why}
        )
        bundle = build_bundle(None, COMPONENT)
        super().__init__(f"expiry:index:{COMPONENT}", name, {}, opts)

        child = pulumi.ResourceOptions(parent=self)
        tags = raw.get("tags")
        if existing_logs is None:
            self.log_group = log_group(name, retention, tags, child)
        else:
            self.log_group = existing_log_group(name, existing_logs, child)
        if existing_role_name is None:
            self.role = lambda_role(name, tags, child)
        else:
            self.role = existing_role(name, existing_role_name, child)
        role_name: Any = self.role.id if existing_role_name is None else existing_role_name
        log_group_name: Any = self.log_group.name if existing_logs is None else existing_logs
        self.failure_queue = aws.sqs.Queue(
            f"{name}-failures",
            message_retention_seconds=14 * 86400,
            sqs_managed_sse_enabled=True,
            tags=tags,
            opts=child,
        )
        policy = pulumi.Output.all(
            raw["table_arn"],
            raw["stream_arn"],
            self.log_group.arn,
            s3.get("bucket"),
            raw.get("archive_bucket"),
            self.failure_queue.arn,
        ).apply(lambda a: json.dumps(_policy(job, *a, object_prefix=object_prefix, archive_prefix=archive_prefix)))
        self.role_policy = aws.iam.RolePolicy(f"{name}-policy", role=role_name, policy=policy, opts=child)
        sources = name_sources(raw)
        environment = pulumi.Output.all(*sources.values()).apply(
            lambda a: _environment(
                name, raw, dict(zip(sources, a, strict=True)), v.unresolved(COMPONENT, name, sources, a)
            )
        )
        self.function = aws.lambda_.Function(
            f"{name}-function",
            runtime=lambda_runtime,
            architectures=[architecture],
            handler=kinds.kind(KIND_STREAM_CASCADE).handler,
            role=self.role.arn,
            code=pulumi.FileArchive(str(bundle.path)),
            source_code_hash=bundle.sha256_base64,
            timeout=timeout,
            memory_size=memory,
            environment=aws.lambda_.FunctionEnvironmentArgs(variables={ENV_VAR: environment}),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(
                log_format="JSON", log_group=log_group_name, application_log_level="INFO", system_log_level="WARN"
            ),
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.log_group, self.role_policy]),
        )
        if paused:
            pulumi.log.warn(
                f"{COMPONENT} {name}: paused: TTL deletions wait on the stream, which keeps them 24 hours; "
                "those of a longer pause are never cascaded (their objects stay until an orphan pass)",
                resource=self,
            )
        self.event_source_mapping = aws.lambda_.EventSourceMapping(
            f"{name}-stream",
            event_source_arn=raw["stream_arn"],
            function_name=self.function.arn,
            enabled=not paused,
            starting_position=position,
            batch_size=batch_size,
            maximum_batching_window_in_seconds=window,
            maximum_retry_attempts=retries,
            bisect_batch_on_function_error=True,
            function_response_types=["ReportBatchItemFailures"],
            filter_criteria=aws.lambda_.EventSourceMappingFilterCriteriaArgs(
                filters=[
                    aws.lambda_.EventSourceMappingFilterCriteriaFilterArgs(pattern=json.dumps(TTL_DELETIONS_FILTER))
                ]
            ),
            destination_config=aws.lambda_.EventSourceMappingDestinationConfigArgs(
                on_failure=aws.lambda_.EventSourceMappingDestinationConfigOnFailureArgs(
                    destination_arn=self.failure_queue.arn
                )
            ),
            opts=child,
        )
        # Plain values for watched_stream: the job, its name as a resource, its settings as deployed.
        self.resource_name = name
        self.job = job
        self.timeout = timeout
        self.iterator_age_seconds = age_alarm
        self.paused = paused
        self.function_name = self.function.name
        self.event_source_mapping_id = self.event_source_mapping.id
        self.failure_queue_arn = self.failure_queue.arn
        self.failure_queue_name = self.failure_queue.name
        self.log_group_name = pulumi.Output.from_input(log_group_name)
        self.job_name = pulumi.Output.from_input(job.name)
        self.kind = pulumi.Output.from_input(job.kind)
        self.table_name = pulumi.Output.from_input(raw["table_name"])
        self.namespace = pulumi.Output.from_input(job.namespace)
        self.timeout_seconds = pulumi.Output.from_input(timeout)
        self.iterator_age_alarm_seconds = pulumi.Output.from_input(age_alarm)
        self.register_outputs(
            {
                "function_name": self.function_name,
                "event_source_mapping_id": self.event_source_mapping_id,
                "failure_queue_arn": self.failure_queue_arn,
                "failure_queue_name": self.failure_queue_name,
                "log_group_name": self.log_group_name,
                "job_name": self.job_name,
                "kind": self.kind,
                "table_name": self.table_name,
                "namespace": self.namespace,
                "timeout_seconds": self.timeout_seconds,
                "iterator_age_alarm_seconds": self.iterator_age_alarm_seconds,
            }
        )


def _policy(
    job: Job,
    table_arn: str | None,
    stream_arn: str | None,
    log_group_arn: str,
    bucket: str | None,
    archive_bucket: str | None,
    queue_arn: str,
    *,
    object_prefix: str,
    archive_prefix: str,
) -> dict[str, Any]:
    """The function's role: its stream, the table (to see an item written anew), the objects under
    the prefix, the archive prefix, the failure queue, its log group and its metric namespace. An ARN
    still unknown (None, as under mocks that return only inputs) leaves out the statements naming it."""
    partition = table_arn.split(":")[1] if table_arn and table_arn.startswith("arn:") else "aws"
    statements = [
        statement("Logs", ["logs:CreateLogStream", "logs:PutLogEvents"], [log_group_arn, f"{log_group_arn}:*"]),
        statement(
            "Metrics", ["cloudwatch:PutMetricData"], ["*"], {"StringEquals": {"cloudwatch:namespace": job.namespace}}
        ),
    ]
    if stream_arn and table_arn:
        statements += [
            statement(
                "Stream", ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"], [stream_arn]
            ),
            statement("ListStreams", ["dynamodb:ListStreams"], [f"{table_arn}/stream/*"]),
        ]
    statements.append(statement("FailedBatches", ["sqs:SendMessage"], [queue_arn]))
    if job.s3 and bucket and table_arn:
        table_actions, table_statements = kinds.kind(job.kind).grants(job, Arns(table_arn, log_group_arn))
        statements.append(statement("Table", sorted(table_actions), [table_arn]))
        statements += table_statements
        actions = ["s3:DeleteObject", "s3:GetObject"]
        if job.s3.keep_statuses and job.s3.keep_marker == "tag":
            actions += ["s3:GetObjectTagging", "s3:PutObjectTagging"]
        elif job.s3.keep_marker == "tag":
            actions.append("s3:GetObjectTagging")  # the ownership rule keeps a marked object
        if job.s3.upload_id_attribute:  # ListParts: a dry run counts only uploads that still exist
            actions += ["s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
        statements.append(statement("Objects", actions, [f"arn:{partition}:s3:::{bucket}/{object_prefix}*"]))
        statements.append(list_prefix(f"arn:{partition}:s3:::{bucket}", object_prefix))  # HeadObject: 404, not 403
    if job.archive and archive_bucket:
        statements.append(
            statement("Archive", ["s3:PutObject"], [f"arn:{partition}:s3:::{archive_bucket}/{archive_prefix}*"])
        )
    return {"Version": "2012-10-17", "Statement": statements}
