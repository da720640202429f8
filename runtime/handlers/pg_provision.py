"""Lambda entry point of PgCronCleanup's VPC mode (aws.lambda_.Invocation, CRUD lifecycle)."""

from typing import Any

from expiry.runtime.aws_clients import client
from expiry.runtime.postgres.provision import handle


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, lambda: client("secretsmanager"))
