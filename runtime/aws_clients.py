"""boto3 clients created once per process and reused across warm invocations.

Throttling and transient errors are retried with exponential backoff by botocore's standard
retry mode. One call, retries and backoff included, ends within a bound (``call_seconds``): a
job's safety margin in Lambda, so that a call started before the run's deadline ends before
Lambda's timeout and a silent endpoint fails the run with its failure metric. AWS_ENDPOINT_URL
(read by boto3 itself) points the clients at any AWS-compatible endpoint.

Requests carry a fixed User-Agent naming Expiry, which CloudTrail records for each call it logs. It
also saves client CPU: botocore rebuilds its default User-Agent for every request, measured at about
8-20 % of a DeleteItem's client CPU, the bound of a sweeper's deletions per second (README, "Benchmark")."""

import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from expiry import __version__

ClientFactory = Callable[[str], Any]
T = TypeVar("T")
DEFAULT_CALL_SECONDS = 60.0
MAX_ATTEMPTS = 3
MAX_READ_TIMEOUT = 60.0
MAX_CONNECT_TIMEOUT = 5.0
USER_AGENT = f"expiry/{__version__} Python/{platform.python_version()}"  # boto3 appends Botocore/<version>


@dataclass(frozen=True)
class CallLimits:
    """Timeouts and attempts of one call: ``attempts * (connect + read)`` plus the backoff between
    attempts (standard mode: at most 2**(n-1) seconds before attempt n+1) fit in the bound."""

    connect_timeout: float
    read_timeout: float
    attempts: int

    def worst_case_seconds(self) -> float:
        backoff = sum(2.0 ** (n - 1) for n in range(1, self.attempts))
        return self.attempts * (self.connect_timeout + self.read_timeout) + backoff


def call_limits(call_seconds: float) -> CallLimits:
    """The limits whose worst case stays within ``call_seconds`` (fewer attempts when it is short)."""
    for attempts in range(MAX_ATTEMPTS, 0, -1):
        backoff = sum(2.0 ** (n - 1) for n in range(1, attempts))
        per_attempt = (call_seconds - backoff) / attempts
        if per_attempt >= 1.0 or attempts == 1:
            break
    per_attempt = max(per_attempt, 0.5)
    connect = min(MAX_CONNECT_TIMEOUT, per_attempt / 4)
    return CallLimits(round(connect, 3), round(min(MAX_READ_TIMEOUT, per_attempt - connect), 3), attempts)


def client_config(workers: int = 8, call_seconds: float = DEFAULT_CALL_SECONDS) -> Config:
    """Bounded calls retried with backoff, a connection pool large enough for ``workers`` threads,
    and Expiry's User-Agent."""
    limits = call_limits(call_seconds)
    return Config(
        user_agent=USER_AGENT,
        retries={"mode": "standard", "total_max_attempts": limits.attempts},
        connect_timeout=limits.connect_timeout,
        read_timeout=limits.read_timeout,
        max_pool_connections=max(10, workers + 2),
    )


@cache
def client(service: str, workers: int = 8, call_seconds: float = DEFAULT_CALL_SECONDS) -> Any:
    """The process's client for ``service`` (boto3 clients are thread-safe)."""
    return boto3.client(service, config=client_config(workers, call_seconds))


def retried(error: ClientError) -> bool:
    """Whether botocore sent the request more than once (an earlier attempt may have succeeded)."""
    return bool(error.response.get("ResponseMetadata", {}).get("RetryAttempts"))


THROTTLING = frozenset(
    {
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "SlowDown",
        "Throttling",
        "TooManyRequestsException",
    }
)
THROTTLE_ROUNDS = 6  # after botocore's own attempts: waits of 1, 2, 4, 8, 16, 32 s at most


def throttled(error: BaseException) -> bool:
    return isinstance(error, ClientError) and error.response.get("Error", {}).get("Code") in THROTTLING


def with_backoff(
    call: Callable[[], T],
    should_stop: Callable[[], bool],
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, retried with exponential backoff and jitter while it is throttled (beyond botocore's
    own attempts) and the run's time allows; other errors, and a throttle once time is up, raise."""
    rounds = 0
    while True:
        try:
            return call()
        except ClientError as error:
            if not throttled(error) or rounds == THROTTLE_ROUNDS or should_stop():
                raise
        sleep(random.uniform(0.5, 1.0) * 2.0**rounds)
        rounds += 1
