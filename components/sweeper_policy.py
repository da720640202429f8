"""Least-privilege IAM policies for a sweeper, derived from what its job touches."""

from dataclasses import dataclass
from typing import Any

from expiry.runtime.jobs.config import KIND_ORPHANED_REFERENCES, KIND_STREAM_CASCADE, KIND_SWEEP, KIND_TTL_MONITOR, Job


@dataclass(frozen=True)
class Arns:
    """The resolved ARNs and names a policy names exactly."""

    table: str | None
    log_group: str
    bucket: str | None = None
    target_table: str | None = None
    secret: str | None = None
    budget_table: str | None = None


def statement(sid: str, actions: list[str], resources: list[str], condition: dict | None = None) -> dict[str, Any]:
    statement: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def _partition(arn: str | None) -> str:
    return arn.split(":")[1] if arn and arn.startswith("arn:") else "aws"


def deletes_objects(job: Job) -> bool:
    """Whether the job deletes objects or aborts uploads, each only when the ownership rule allows."""
    if job.s3 is None:
        return False
    sweeps = job.kind == KIND_SWEEP and (job.delete_expired or job.orphaned_objects is not None)
    return job.kind == KIND_STREAM_CASCADE or sweeps


def owner_reads(job: Job, table_arn: str) -> tuple[set[str], list[dict[str, Any]]]:
    """What the ownership rule reads before a deletion: the items naming an object (a Query on the
    owner index, else a consistent Scan of the table), then a consistent GetItem of each released one.
    Returns the table's actions and any other statement."""
    if not deletes_objects(job):
        return set(), []
    assert job.s3 is not None
    if job.s3.owner_index:
        index = f"{table_arn}/index/{job.s3.owner_index}"
        return {"dynamodb:GetItem"}, [statement("OwnerIndex", ["dynamodb:Query"], [index])]
    return {"dynamodb:GetItem", "dynamodb:Scan"}, []


def list_prefix(bucket_arn: str, prefix: str) -> dict[str, Any]:
    """ListBucket under ``prefix``: listing it, and a 404, not S3's 403, for a HeadObject of a missing key."""
    condition = {"StringLike": {"s3:prefix": [f"{prefix}*"]}} if prefix else None
    return statement("ListPrefix", ["s3:ListBucket"], [bucket_arn], condition)


def function_policy(job: Job, arns: Arns, object_prefix: str) -> dict[str, Any]:
    """The Lambda role's policy: its table (and index), bucket prefix, metric namespace, log group."""
    statements = [
        statement("Logs", ["logs:CreateLogStream", "logs:PutLogEvents"], [arns.log_group, f"{arns.log_group}:*"]),
        statement(
            "Metrics", ["cloudwatch:PutMetricData"], ["*"], {"StringEquals": {"cloudwatch:namespace": job.namespace}}
        ),
    ]
    table_actions: set[str] = set()
    if job.expiry_index and job.kind in (KIND_TTL_MONITOR, KIND_SWEEP):
        statements.append(statement("ExpiryIndex", ["dynamodb:Query"], [f"{arns.table}/index/{job.expiry_index.name}"]))
    elif job.kind in (KIND_TTL_MONITOR, KIND_SWEEP):
        table_actions.add("dynamodb:Scan")
    if job.kind == KIND_TTL_MONITOR:
        table_actions |= {"dynamodb:DescribeTable", "dynamodb:DescribeTimeToLive"}
    if job.unindexed_check_items:
        table_actions |= {"dynamodb:Scan", "dynamodb:DescribeTable"}
    if job.kind == KIND_SWEEP:
        # DescribeTable: the breaker weighs a plan against the table's item count.
        table_actions |= {"dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:DescribeTable"}
        if job.stuck_uploads:
            table_actions.add("dynamodb:UpdateItem")
        if job.stuck_uploads and job.stuck_uploads.since_attribute != job.ttl_attribute:
            table_actions.add("dynamodb:Scan")
        if job.orphaned_objects:
            table_actions.add("dynamodb:BatchGetItem")
    if job.kind == KIND_SWEEP and arns.table:
        owner_actions, owner_statements = owner_reads(job, arns.table)
        table_actions |= owner_actions
        statements += owner_statements
    if job.kind == KIND_ORPHANED_REFERENCES:
        table_actions |= {"dynamodb:Query", "dynamodb:DeleteItem"}
        target = arns.target_table or arns.table
        statements.append(statement("ReferenceTargets", ["dynamodb:GetItem"], [str(target)]))
    if table_actions and arns.table:
        statements.append(statement("Table", sorted(table_actions), [arns.table]))
    if job.breaker.budget_table and arns.budget_table:
        # The breaker's ledger: the window's record read, then a reservation written (deletion_budget).
        statements.append(statement("DeletionBudget", ["dynamodb:GetItem", "dynamodb:UpdateItem"], [arns.budget_table]))
    if job.postgres and arns.secret:
        statements.append(statement("DatabaseSecret", ["secretsmanager:GetSecretValue"], [arns.secret]))
    if job.s3 and arns.bucket:
        bucket_arn = f"arn:{_partition(arns.table)}:s3:::{arns.bucket}"
        # GetObject is what HeadObject needs: a planned deletion is of an object seen to exist.
        object_actions = ["s3:DeleteObject", "s3:GetObject"]
        if job.s3.keep_marker == "tag" and (job.s3.keep_statuses or job.orphaned_objects):
            object_actions += ["s3:GetObjectTagging", "s3:PutObjectTagging"]
        elif job.s3.keep_marker == "tag" and deletes_objects(job):
            object_actions.append("s3:GetObjectTagging")  # the ownership rule keeps a marked object
        if job.s3.upload_id_attribute:
            object_actions += ["s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
        statements.append(statement("Objects", object_actions, [f"{bucket_arn}/{object_prefix}*"]))
        statements.append(list_prefix(bucket_arn, object_prefix))  # HeadObject, and the orphans' listing
        if job.orphaned_objects:
            # Orphaned uploads. IAM cannot scope this by prefix: the action has no s3:prefix key.
            statements.append(statement("ListUploads", ["s3:ListBucketMultipartUploads"], [bucket_arn]))
    return {"Version": "2012-10-17", "Statement": statements}


def assume_role_policy(service: str, account_id: str | None = None) -> dict[str, Any]:
    """Trust policy for ``service`` (e.g. lambda.amazonaws.com), limited to the account when given."""
    statement: dict[str, Any] = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    if account_id:
        statement["Condition"] = {"StringEquals": {"aws:SourceAccount": account_id}}
    return {"Version": "2012-10-17", "Statement": [statement]}


def scheduler_policy(function_arn: str, queue_arn: str) -> dict[str, Any]:
    """The schedule's role: invoke the one function, send undeliverable events to its queue."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            statement("Invoke", ["lambda:InvokeFunction"], [function_arn, f"{function_arn}:*"]),
            statement("DeadLetters", ["sqs:SendMessage"], [queue_arn]),
        ],
    }
