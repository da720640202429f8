"""Least-privilege IAM policies for a sweeper, derived from what its job touches."""

from typing import Any

from expiry.runtime import kinds
from expiry.runtime.jobs.config import Job
from expiry.runtime.kinds.iam import Arns, list_prefix, statement


def _partition(arn: str | None) -> str:
    return arn.split(":")[1] if arn and arn.startswith("arn:") else "aws"


def function_policy(job: Job, arns: Arns, object_prefix: str) -> dict[str, Any]:
    """The Lambda role's policy: its table (and index), bucket prefix, metric namespace, log group."""
    statements = [
        statement("Logs", ["logs:CreateLogStream", "logs:PutLogEvents"], [arns.log_group, f"{arns.log_group}:*"]),
        statement(
            "Metrics", ["cloudwatch:PutMetricData"], ["*"], {"StringEquals": {"cloudwatch:namespace": job.namespace}}
        ),
    ]
    table_actions, kind_statements = kinds.kind(job.kind).grants(job, arns)
    statements += kind_statements
    if job.unindexed_check_items:
        table_actions |= {"dynamodb:Scan", "dynamodb:DescribeTable"}
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
        elif job.s3.keep_marker == "tag" and kinds.kind(job.kind).deletes_objects(job):
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


def fan_out_scheduler_policy(state_machine_arn: str, queue_arn: str) -> dict[str, Any]:
    """The schedule's role with fan-out: start the one state machine, send undeliverable events to its queue."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            statement("StartFanOut", ["states:StartExecution"], [state_machine_arn]),
            statement("DeadLetters", ["sqs:SendMessage"], [queue_arn]),
        ],
    }


def state_machine_policy(function_arn: str, state_machine_arn: str) -> dict[str, Any]:
    """The fan-out state machine's role: invoke the one function (and its versions); and what a
    distributed Map needs, start its child executions on the state machine itself and describe and
    stop them (execution:<name>/<map run>:<id>)."""
    prefix, name = state_machine_arn.split(":stateMachine:")
    return {
        "Version": "2012-10-17",
        "Statement": [
            statement("Invoke", ["lambda:InvokeFunction"], [function_arn, f"{function_arn}:*"]),
            statement("StartChildren", ["states:StartExecution"], [state_machine_arn]),
            statement(
                "ManageChildren",
                ["states:DescribeExecution", "states:StopExecution"],
                [f"{prefix}:execution:{name}/*"],
            ),
        ],
    }


def state_machine_arn(function_arn: str, region: str, account: str, name: str) -> str:
    """The ARN of the state machine ``name``, in the function's partition."""
    return f"arn:{_partition(function_arn)}:states:{region}:{account}:stateMachine:{name}"
