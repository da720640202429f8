"""The per-table budget over generated fan-outs: whatever tables, breakers and sequences of shard
invocations (retries and repeats included), the runs of one window together delete no more than the
breaker allows of the whole table, and never a live item."""

from typing import Any

from aws import make_client
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws
from test_deletion_budget import run_at
from uploads_world import INDEX_SETTINGS, NOW, SHARDS, create_ledger, create_table, put_session, session_ids, sweep_job

from expiry.runtime.handlers.work import sweep_work

LEDGER = "expiry-deletion-budget"
SHARD_GROUPS = st.lists(st.integers(0, SHARDS - 1), min_size=1, max_size=SHARDS, unique=True)


@settings(max_examples=25)
@given(
    expired=st.integers(0, 60),
    live=st.integers(0, 30),
    max_share=st.sampled_from([0.1, 0.25, 0.5]),
    ignore_below=st.sampled_from([0, 5, 10]),
    invocations=st.lists(SHARD_GROUPS, min_size=1, max_size=8),
)
def test_the_runs_of_a_window_delete_no_more_than_the_breaker_allows_of_the_table(
    expired: int, live: int, max_share: float, ignore_below: int, invocations: list[list[int]]
) -> None:
    with mock_aws():
        dynamodb: Any = make_client("dynamodb", None)
        create_table(dynamodb, expiry_index=True)
        create_ledger(dynamodb, LEDGER)
        for n in range(expired):
            put_session(dynamodb, f"old.{n}", NOW - 60, shard=True)
        for n in range(live):
            put_session(dynamodb, f"live.{n}", NOW + 3600, shard=True)
        breaker = {"max_share": max_share, "ignore_below": ignore_below, "window_seconds": 3600}
        job = sweep_job(**INDEX_SETTINGS, breaker=breaker, budget_table_name=LEDGER)
        work = sweep_work(lambda service: dynamodb)
        for shards in invocations:
            run_at(job, work, event={"shards": shards})
        left = session_ids(dynamodb)
    deleted = expired + live - len(left)
    allowed = max(ignore_below, int(max_share * (expired + live)))
    assert {f"live.{n}" for n in range(live)} <= left
    assert deleted <= allowed, f"{deleted} deleted of {expired + live}; the breaker allows {allowed}"
