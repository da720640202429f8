"""boto3 clients created once per process and reused across warm invocations.

Throttling and transient errors are retried with exponential backoff by botocore's standard
retry mode. AWS_ENDPOINT_URL (read by boto3 itself) points them at any AWS-compatible endpoint."""

from collections.abc import Callable
from functools import cache
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ClientFactory = Callable[[str], Any]
RETRIES = {"mode": "standard", "max_attempts": 8}


def client_config(workers: int = 8) -> Config:
    """Retries with backoff, and a connection pool large enough for ``workers`` threads."""
    return Config(retries=RETRIES, max_pool_connections=max(10, workers + 2))


@cache
def client(service: str, workers: int = 8) -> Any:
    """The process's client for ``service`` (boto3 clients are thread-safe)."""
    return boto3.client(service, config=client_config(workers))


def retried(error: ClientError) -> bool:
    """Whether botocore sent the request more than once (an earlier attempt may have succeeded)."""
    return bool(error.response.get("ResponseMetadata", {}).get("RetryAttempts"))
