"""The deletion rate limit of a table (``breaker.max_deletes_per_second``): every path that deletes
items asks for one token before each delete.

Tokens are counted per wall-clock second: a second holds ``max_deletes_per_second`` of them, and a
deletion that finds its second's tokens taken waits for the next second. Without a ledger a run
keeps its own count (one lock for its worker threads). With the breaker's ledger
(``breaker.budget_table``) the seconds are shared by every invocation on the table (shards, fan-out,
overlapping runs): a run reserves tokens a few at a time (``CHUNK``) with one UpdateItem on the
record ``<table>#rate#<second>``, ADDing to its count only while the sum stays within the limit, so
the invocations together never take more than the limit in any second. Tokens reserved and not used
within their second are lost (the limit is never exceeded, it may be under-used). The records
expire through the ledger's TTL. A limiter stops waiting, and refuses the token, once the run must
stop (its deadline)."""

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol

from botocore.exceptions import ClientError

from expiry.runtime.dynamodb.deletion_budget import LEDGER_KEY, LEDGER_TTL
from expiry.runtime.jobs.config import Job

CHUNK = 25  # tokens reserved in the ledger by one write (at most the limit)
KEPT_SECONDS = 3600  # a rate record's TTL after its second
WAIT_STEP = 0.25  # the longest sleep between two looks at the deadline
COUNT = "deletes"


class Limiter(Protocol):
    def acquire(self) -> int | None:
        """Take one token: the second it belongs to, or None when the run must stop (nothing may be deleted)."""
        ...


class _Seconds(ABC):
    """The tokens of the current second a limiter holds, and the wait for the next second."""

    def __init__(
        self, should_stop: Callable[[], bool], clock: Callable[[], float], sleep: Callable[[float], None]
    ) -> None:
        self.should_stop, self.clock, self.sleep = should_stop, clock, sleep
        self.lock = threading.Lock()
        self.second: int | None = None
        self.held = 0

    def acquire(self) -> int | None:
        """Take one token: the second it belongs to, or None when the run must stop."""
        with self.lock:
            while True:
                if self.should_stop():
                    return None
                second = int(self.clock())
                fresh = second != self.second
                if fresh:
                    self.second, self.held = second, 0
                if not self.held:
                    self.held = self.tokens(second, fresh)
                if self.held:
                    self.held -= 1
                    return second
                if not self.wait_past(second):
                    return None

    @abstractmethod
    def tokens(self, second: int, fresh: bool) -> int:
        """More tokens of ``second`` (``fresh``: none were taken in it yet); 0 when it has none left."""

    def wait_past(self, second: int) -> bool:
        """Sleep until ``second`` is over; False when the run must stop first."""
        while (now := self.clock()) < second + 1:
            if self.should_stop():
                return False
            self.sleep(min(WAIT_STEP, second + 1 - now))
        return True


class LocalLimiter(_Seconds):
    """``limit`` deletions a second for one run, whatever its number of worker threads."""

    def __init__(
        self,
        limit: int,
        should_stop: Callable[[], bool],
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(should_stop, clock, sleep)
        self.limit = limit

    def tokens(self, second: int, fresh: bool) -> int:
        return self.limit if fresh else 0


class LedgerLimiter(_Seconds):
    """``limit`` deletions a second for all the invocations on ``table``, through the ledger."""

    def __init__(
        self,
        limit: int,
        dynamodb: Any,
        ledger: str,
        table: str,
        should_stop: Callable[[], bool],
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(should_stop, clock, sleep)
        self.limit, self.dynamodb, self.ledger, self.table = limit, dynamodb, ledger, table

    def tokens(self, second: int, fresh: bool) -> int:
        return self._reserve(second, min(self.limit, CHUNK))

    def _reserve(self, second: int, wanted: int) -> int:
        """Up to ``wanted`` tokens of ``second`` (fewer when fewer are left; 0 when none is)."""
        while wanted > 0:
            try:
                self.dynamodb.update_item(
                    TableName=self.ledger,
                    Key={LEDGER_KEY: {"S": key(self.table, second)}},
                    UpdateExpression="ADD #count :n SET #ttl = :ttl",
                    ConditionExpression="attribute_not_exists(#count) OR #count <= :room",
                    ExpressionAttributeNames={"#count": COUNT, "#ttl": LEDGER_TTL},
                    ExpressionAttributeValues={
                        ":n": {"N": str(wanted)},
                        ":room": {"N": str(self.limit - wanted)},
                        ":ttl": {"N": str(second + KEPT_SECONDS)},
                    },
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
                return wanted
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
                taken = error.response.get("Item", {}).get(COUNT, {}).get("N")
                left = self.limit - int(taken) if taken is not None else wanted // 2
                wanted = min(wanted - 1, left)
        return 0


def key(table: str, second: int) -> str:
    """The ledger record counting the deletions of ``table`` in ``second``."""
    return f"{table}#rate#{second}"


def limiter_for(
    job: Job,
    dynamodb: Any,
    should_stop: Callable[[], bool],
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Limiter | None:
    """The job's limiter: None without a limit or in a dry run (which deletes and reserves nothing)."""
    limit = job.breaker.max_deletes_per_second
    if limit is None or job.dry_run:
        return None
    if job.breaker.budget_table:
        return LedgerLimiter(limit, dynamodb, job.breaker.budget_table, job.table, should_stop, clock, sleep)
    return LocalLimiter(limit, should_stop, clock, sleep)
