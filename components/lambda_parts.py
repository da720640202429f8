"""Children every Expiry Lambda has: its log group, its role, and (for PostgreSQL) the psycopg layer."""

import json
import re
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

from expiry.components import validation as v
from expiry.components.psycopg_layer import build_psycopg_layer
from expiry.components.sweeper_policy import assume_role_policy

VPC_ACCESS_POLICY = "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
ROLE_NAME = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,64}$")
LOG_GROUP_NAME = re.compile(r"^[A-Za-z0-9._/#-]{1,512}$")


def existing_names(component: str, raw: dict[str, Any]) -> tuple[str | None, str | None]:
    """`existing_role_name` and `existing_log_group_name`, checked: IAM's and CloudWatch Logs' name
    characters, plain strings; a log group brought whole keeps its own retention, so
    `log_retention_days` with it is refused."""
    role, group = raw.get("existing_role_name"), raw.get("existing_log_group_name")
    if role is not None and not (isinstance(role, str) and ROLE_NAME.match(role)):
        v.fail(
            component, "existing_role_name", f"must be a role name (1..64 of A-Z a-z 0-9 + = , . @ _ -), got {role!r}"
        )
    if group is not None and not (isinstance(group, str) and LOG_GROUP_NAME.match(group)):
        v.fail(
            component,
            "existing_log_group_name",
            f"must be a log group name (1..512 of A-Z a-z 0-9 . _ / # -), got {group!r}",
        )
    if group is not None and "log_retention_days" in raw:
        v.fail(
            component,
            "log_retention_days",
            "conflicts with existing_log_group_name: the component does not manage that log group's retention",
        )
    return role, group


def existing_role(name: str, role_name: str, opts: pulumi.ResourceOptions) -> aws.iam.Role:
    """A role the user owns, read (not managed): its ARN is a real output."""
    return aws.iam.Role.get(f"{name}-existing-role", role_name, opts=opts)


def existing_log_group(name: str, group_name: str, opts: pulumi.ResourceOptions) -> aws.cloudwatch.LogGroup:
    """A log group the user owns, read (not managed): its ARN is a real output."""
    return aws.cloudwatch.LogGroup.get(f"{name}-existing-logs", group_name, opts=opts)


def log_group(name: str, retention_days: int, tags: Any, opts: pulumi.ResourceOptions) -> aws.cloudwatch.LogGroup:
    """`/expiry/<project>/<stack>/<name>`: two stacks of one project never share it."""
    return aws.cloudwatch.LogGroup(
        f"{name}-logs",
        name=f"/expiry/{pulumi.get_project()}/{pulumi.get_stack()}/{name}",
        retention_in_days=retention_days,
        tags=tags,
        opts=opts,
    )


def lambda_role(name: str, tags: Any, opts: pulumi.ResourceOptions) -> aws.iam.Role:
    return aws.iam.Role(
        f"{name}-role", assume_role_policy=json.dumps(assume_role_policy("lambda.amazonaws.com")), tags=tags, opts=opts
    )


def vpc_access(name: str, role: aws.iam.Role | str, opts: pulumi.ResourceOptions) -> aws.iam.RolePolicyAttachment:
    """The network-interface rights a function in a VPC needs (AWS's managed policy), on the component's
    role or on an existing role named ``role``."""
    role_name = role if isinstance(role, str) else role.name
    return aws.iam.RolePolicyAttachment(f"{name}-vpc-access", role=role_name, policy_arn=VPC_ACCESS_POLICY, opts=opts)


def psycopg_layer(
    name: str, architecture: str, runtime: str, build_dir: Path, opts: pulumi.ResourceOptions
) -> aws.lambda_.LayerVersion:
    layer_zip = build_psycopg_layer(architecture, runtime.removeprefix("python"), build_dir)
    return aws.lambda_.LayerVersion(
        f"{name}-psycopg",
        layer_name=f"{name}-psycopg",
        code=pulumi.FileArchive(str(layer_zip)),
        compatible_runtimes=[runtime],
        compatible_architectures=[architecture],
        opts=opts,
    )
