"""Children every Expiry Lambda has: its log group, its role, and (for PostgreSQL) the psycopg layer."""

import json
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

from expiry.components.psycopg_layer import build_psycopg_layer
from expiry.components.sweeper_policy import assume_role_policy

VPC_ACCESS_POLICY = "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"


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


def vpc_access(name: str, role: aws.iam.Role, opts: pulumi.ResourceOptions) -> aws.iam.RolePolicyAttachment:
    """The network-interface rights a function in a VPC needs (AWS's managed policy)."""
    return aws.iam.RolePolicyAttachment(f"{name}-vpc-access", role=role.name, policy_arn=VPC_ACCESS_POLICY, opts=opts)


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
