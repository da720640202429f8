"""The mass-deletion breaker's ledger: a small DynamoDB table in which every run of a sweeper reserves
its deletions, so that the breaker's limits hold per swept table across runs, shards and fan-out
(runtime.dynamodb.deletion_budget). One ledger can serve any number of sweepers."""

from typing import Any

import pulumi
import pulumi_aws as aws

from expiry.runtime.dynamodb.deletion_budget import LEDGER_KEY, LEDGER_TTL


def budget_ledger(
    name: str,
    tags: Any,
    opts: pulumi.ResourceOptions | None = None,
    table_name: str | None = None,
    deletion_protection: bool = False,
) -> aws.dynamodb.Table:
    """The ledger table (named ``table_name``, else by Pulumi): on demand (a few requests a run), one
    record per swept table, TTL on ``expires_at`` removing the records of tables no longer swept."""
    return aws.dynamodb.Table(
        name,
        name=table_name,
        deletion_protection_enabled=deletion_protection,
        billing_mode="PAY_PER_REQUEST",
        hash_key=LEDGER_KEY,
        attributes=[aws.dynamodb.TableAttributeArgs(name=LEDGER_KEY, type="S")],
        ttl=aws.dynamodb.TableTtlArgs(attribute_name=LEDGER_TTL, enabled=True),
        tags=tags,
        opts=opts,
    )
