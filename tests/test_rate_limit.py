"""breaker.max_deletes_per_second (issue 21): a run never deletes more items a second than the limit,
and with the ledger all the invocations on a table together never do. A fake clock throughout: time
passes only when a limiter sleeps."""

import dataclasses
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aws import make_client
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws
from test_deletion_budget import budget_statement, deployed_job, run_at, sweeper_args
from test_monitor_and_references import attributes, keys, reference_job  # noqa: F401 - a fixture
from uploads_world import INDEX_SETTINGS, NOW, SHARDS, TABLE, create_ledger, create_table, put_session, sweep_job

from expiry.components.scheduled_sweeper import BreakerArgs, ScheduledSweeper
from expiry.runtime.dynamodb.deletion_budget import LEDGER_KEY, LEDGER_TTL
from expiry.runtime.dynamodb.orphaned_references import IndexSweeper
from expiry.runtime.dynamodb.rate_limit import COUNT, LedgerLimiter, Limiter, LocalLimiter, key, limiter_for
from expiry.runtime.dynamodb.sweep import Sweeper
from expiry.runtime.handlers.work import sweep_work
from expiry.runtime.jobs.config import Job, JobConfigError
from expiry.runtime.jobs.run_control import Tally

LEDGER = "expiry-deletion-budget"
START = NOW + 0.5  # the fake clock starts halfway through a second


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now, self.lock = now, threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        with self.lock:
            self.now += seconds


class Recorded:
    """The limiter, remembering in each thread the second of the token it last gave; and the DynamoDB
    client, recording that second for each item deleted."""

    def __init__(self, limiter: Limiter, dynamodb: Any, seconds: list[int], lock: threading.Lock) -> None:
        self.limiter, self.dynamodb, self.seconds, self.lock = limiter, dynamodb, seconds, lock
        self.local = threading.local()

    def acquire(self) -> int | None:
        self.local.second = self.limiter.acquire()
        return self.local.second

    def delete_item(self, **kwargs: Any) -> Any:
        assert kwargs["TableName"] == TABLE and self.local.second is not None  # never without a token
        with self.lock:
            self.seconds.append(self.local.second)
        return self.dynamodb.delete_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dynamodb, name)


class LockedLedger:
    """Writes to the ledger applied one at a time, as DynamoDB applies writes to one item."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.lock = inner, threading.Lock()

    def update_item(self, **kwargs: Any) -> Any:
        with self.lock:
            return self.inner.update_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def put_expired(dynamodb: Any, count: int) -> None:
    for n in range(count):
        put_session(dynamodb, f"old.{n}", NOW - 60, shard=True)


def remaining(dynamodb: Any) -> int:
    return dynamodb.scan(TableName=TABLE, Select="COUNT")["Count"]


def rate_records(dynamodb: Any) -> dict[str, dict[str, Any]]:
    items = dynamodb.scan(TableName=LEDGER)["Items"]
    return {i[LEDGER_KEY]["S"]: i for i in items if "#rate#" in i[LEDGER_KEY]["S"]}


def limited_job(limit: int, ledger: bool, **settings: Any) -> Job:
    breaker: dict[str, Any] = {"allow_mass_deletion": True, "max_deletes_per_second": limit}
    return sweep_job(**INDEX_SETTINGS, breaker=breaker, budget_table_name=LEDGER if ledger else None, **settings)


def sweep_shards(
    job: Job, dynamodb: Any, invocations: int, clock: FakeClock, should_stop: Any = lambda: False
) -> tuple[list[int], list[Tally]]:
    """``invocations`` concurrent runs, each on its own expiry-index shards; the seconds of the
    deletions and the runs' counters."""
    ledger, seconds, lock = LockedLedger(dynamodb), [], threading.Lock()
    groups = [tuple(range(k, SHARDS, invocations)) for k in range(invocations)]

    def run(shards: tuple[int, ...]) -> Tally:
        assert job.expiry_index is not None
        shard_job = dataclasses.replace(job, expiry_index=dataclasses.replace(job.expiry_index, only_shards=shards))
        limiter = limiter_for(shard_job, ledger, should_stop, clock, clock.sleep)
        assert limiter is not None
        recorded = Recorded(limiter, ledger, seconds, lock)
        tally = Tally()
        Sweeper(shard_job, recorded, None, NOW, should_stop, tally, limiter=recorded).run()
        return tally

    with ThreadPoolExecutor(max_workers=invocations) as pool:
        tallies = list(pool.map(run, [g for g in groups if g]))
    return seconds, tallies


@pytest.fixture
def table(aws_in_process):
    create_table(aws_in_process.dynamodb, expiry_index=True)
    create_ledger(aws_in_process.dynamodb, LEDGER)
    return aws_in_process.dynamodb


@pytest.mark.parametrize("value", [0, 100_001, -3, "10", 2.5, True, None])
def test_a_bad_limit_is_refused_by_name_and_nothing_is_deleted(table, value):
    put_expired(table, 5)
    with pytest.raises(JobConfigError, match=r"breaker\.max_deletes_per_second: must be an integer in 1\.\.100000"):
        sweep_job(breaker={"max_deletes_per_second": value if value is not None else [1]})
    assert remaining(table) == 5


def test_the_setting_is_optional_and_read():
    assert sweep_job().breaker.max_deletes_per_second is None
    assert sweep_job(breaker={"max_deletes_per_second": 100_000}).breaker.max_deletes_per_second == 100_000


def test_the_local_limiter_spaces_the_deletions_of_a_run(table):
    put_expired(table, 23)
    clock = FakeClock()
    seconds, [tally] = sweep_shards(limited_job(5, ledger=False, workers=8), table, 1, clock)
    per_second = Counter(seconds)
    assert remaining(table) == 0 and tally.counts["items_deleted"] == 23
    assert max(per_second.values()) == 5 and len(per_second) == 5  # 5 + 5 + 5 + 5 + 3
    assert sorted(per_second) == list(range(int(START), int(START) + 5))
    assert int(clock()) == int(START) + 4  # four waits for the next second
    assert rate_records(table) == {}  # without a ledger nothing is written


@pytest.mark.parametrize("invocations", [2, 4])
def test_concurrent_invocations_share_the_limit_through_the_ledger(table, invocations):
    put_expired(table, 60)
    clock, limit = FakeClock(), 7
    seconds, tallies = sweep_shards(limited_job(limit, ledger=True, workers=4), table, invocations, clock)
    assert remaining(table) == 0 and sum(t.counts["items_deleted"] for t in tallies) == 60
    per_second = Counter(seconds)
    assert max(per_second.values()) <= limit
    assert len(per_second) >= 60 // limit  # no faster than the limit allows
    records = rate_records(table)
    assert records and all(int(r[COUNT]["N"]) <= limit for r in records.values())
    for second, deleted in per_second.items():
        record = records[key(TABLE, second)]
        assert deleted <= int(record[COUNT]["N"])  # every deletion used a token reserved in the ledger
        assert int(record[LEDGER_TTL]["N"]) > second  # the records expire


def test_a_reservation_takes_only_what_is_left_of_the_second(table):
    clock = FakeClock()
    first = LedgerLimiter(30, table, LEDGER, TABLE, lambda: False, clock, clock.sleep)
    second = LedgerLimiter(30, table, LEDGER, TABLE, lambda: False, clock, clock.sleep)
    assert first.acquire() == int(START)  # 25 reserved
    assert second.acquire() == int(START)  # the 5 left
    assert second.held == 4
    assert int(rate_records(table)[key(TABLE, int(START))][COUNT]["N"]) == 30
    for _ in range(4):
        assert second.acquire() == int(START)
    assert second.acquire() == int(START) + 1  # the second is full: the next one
    assert int(rate_records(table)[key(TABLE, int(START) + 1)][COUNT]["N"]) == 25


def test_a_dry_run_writes_no_reservation_and_says_how_long_the_limit_takes(table):
    put_expired(table, 12)
    job = limited_job(5, ledger=True, dry_run=True)
    assert limiter_for(job, table, lambda: False) is None
    run = run_at(job, sweep_work(lambda service: table))
    assert remaining(table) == 12 and rate_records(table) == {}
    assert run.summary["plan"]["seconds_at_rate_limit"] == 3


@pytest.mark.parametrize("ledger", [False, True])
def test_the_deadline_ends_the_wait_and_the_run_stops_early(table, ledger):
    put_expired(table, 20)
    clock = FakeClock()
    deadline = START + 2  # the tokens of three seconds at most

    seconds, [tally] = sweep_shards(
        limited_job(3, ledger=ledger, workers=4), table, 1, clock, should_stop=lambda: clock() >= deadline
    )
    assert 0 < len(seconds) <= 9 and max(Counter(seconds).values()) <= 3
    assert tally.counts["items_deleted"] == len(seconds) == 20 - remaining(table)
    assert tally.counts["stopped_early"] == 1 and tally.counts["not_reached"] > 0
    assert clock() < deadline + 1  # it stopped waiting


def test_the_local_limiter_refuses_a_token_once_the_run_must_stop():
    clock, stop = FakeClock(), threading.Event()
    limiter = LocalLimiter(1, stop.is_set, clock, clock.sleep)
    assert limiter.acquire() == int(START)
    stop.set()
    assert limiter.acquire() is None and clock() == START


@settings(max_examples=15, deadline=None)
@given(limit=st.integers(1, 12), invocations=st.integers(1, 4), items=st.integers(0, 40))
def test_the_invocations_together_never_delete_more_than_the_limit_a_second(limit, invocations, items):
    with mock_aws():
        dynamodb: Any = make_client("dynamodb", None)
        create_table(dynamodb, expiry_index=True)
        create_ledger(dynamodb, LEDGER)
        put_expired(dynamodb, items)
        clock = FakeClock()
        seconds, tallies = sweep_shards(limited_job(limit, ledger=True, workers=3), dynamodb, invocations, clock)
        left = remaining(dynamodb)
        records = rate_records(dynamodb)
    assert left == 0 and len(seconds) == items  # time allowed: every expired item was deleted
    assert all(n <= limit for n in Counter(seconds).values())
    assert all(int(r[COUNT]["N"]) <= limit for r in records.values())
    assert sum(t.counts["items_deleted"] for t in tallies) == items


class Granted:
    """A limiter recording the seconds of the tokens it gave."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter, self.seconds = limiter, []

    def acquire(self) -> int | None:
        second = self.limiter.acquire()
        if second is not None:
            self.seconds.append(second)
        return second


@pytest.mark.parametrize("deadline", [None, START + 1])
def test_orphaned_references_deletions_keep_the_limit(attributes, deadline):  # noqa: F811 - the fixture
    clock = FakeClock()
    should_stop = (lambda: False) if deadline is None else (lambda: clock() >= deadline)
    job = reference_job(breaker={"max_deletes_per_second": 1})
    limiter = limiter_for(job, attributes.dynamodb, should_stop, clock, clock.sleep)
    assert isinstance(limiter, LocalLimiter)
    granted, tally = Granted(limiter), Tally()
    before = keys(attributes.dynamodb)
    IndexSweeper(job, attributes.dynamodb, NOW, should_stop, tally, limiter=granted).run()
    deleted = len(before - keys(attributes.dynamodb))
    assert deleted == len(granted.seconds) == tally.counts["orphans_deleted"]
    assert max(Counter(granted.seconds).values()) == 1
    if deadline is None:
        assert deleted == 3 and granted.seconds == [int(START) + n for n in range(3)]
    else:
        assert deleted == 2 and tally.counts["stopped_early"] == 1 and tally.counts["not_reached"] == 1


def test_a_sweeper_passes_the_limit_to_its_job_and_needs_no_new_permission(pulumi_mocks):
    assert "max_deletes_per_second" in BreakerArgs.__annotations__
    sweeper = pulumi_mocks.run(lambda: ScheduledSweeper("video", sweeper_args(breaker={"max_deletes_per_second": 50})))
    job = deployed_job(pulumi_mocks, "video")
    assert job.breaker.max_deletes_per_second == 50 and job.breaker.budget_table == "video-budget-physical"
    assert budget_statement(pulumi_mocks, "video") == {
        "Sid": "DeletionBudget",
        "Effect": "Allow",
        "Action": ["dynamodb:GetItem", "dynamodb:UpdateItem"],  # the rate records are ledger records
        "Resource": [pulumi_mocks.value(sweeper.budget_table_arn)],
    }


def test_a_sweeper_with_a_bad_limit_names_it_and_creates_nothing(pulumi_mocks):
    with pytest.raises(ValueError, match=r"^ScheduledSweeper: ") as error:
        pulumi_mocks.run(lambda: ScheduledSweeper("video", sweeper_args(breaker={"max_deletes_per_second": 0})))
    assert "breaker.max_deletes_per_second: must be an integer in 1..100000" in str(error.value)
    assert pulumi_mocks.resources == []
