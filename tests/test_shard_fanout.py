"""Fan-out over expiry-index shards: a job, or one invocation of it, reads and deletes only its shards."""

import pytest
from uploads_world import ALLOW, INDEX_SETTINGS, NOW, SHARDS, create_table, put_session, run, session_ids, sweep_job

from expiry.runtime.dynamodb.ttl import expiry_shard
from expiry.runtime.handlers.work import sweep_work
from expiry.runtime.jobs.config import JobConfigError
from expiry.runtime.jobs.payload import as_invoked

IDS = [f"session-{n}" for n in range(40)]


@pytest.fixture
def table(aws):
    create_table(aws.dynamodb, expiry_index=True)
    for session_id in IDS:
        put_session(aws.dynamodb, session_id, NOW - 60, shard=True)
    return aws


def in_shards(*shards: int) -> set[str]:
    return {i for i in IDS if int(expiry_shard(i, SHARDS)) in shards}


def clients(aws):
    return lambda service: {"dynamodb": aws.dynamodb, "s3": aws.s3}[service]


def test_an_invocation_for_some_shards_deletes_only_theirs(table):
    job = sweep_job(**INDEX_SETTINGS, breaker=ALLOW)
    result = run(job, sweep_work(clients(table)), event={"shards": [1, 3]})
    assert result.counts["items_deleted"] == len(in_shards(1, 3)) > 0
    assert session_ids(table.dynamodb) == set(IDS) - in_shards(1, 3)


def test_a_job_restricted_to_shards_reads_only_those(table):
    job = sweep_job(**INDEX_SETTINGS, only_shards=[0], breaker=ALLOW)
    result = run(job, sweep_work(clients(table)))
    assert result.counts["items_read"] == result.counts["items_deleted"] == len(in_shards(0))
    assert session_ids(table.dynamodb) == set(IDS) - in_shards(0)


def test_a_payload_only_narrows_the_shards():
    job = sweep_job(**INDEX_SETTINGS, only_shards=[0, 2])
    assert as_invoked(job, {"shards": [2.0]}).expiry_index.only_shards == (2,)  # 2.0: integers from other languages
    for shards in ([1], [], "0", [True]):
        with pytest.raises(JobConfigError, match=r"invocation payload: shards: .*\[0, 2\]"):
            as_invoked(job, {"shards": shards})
    with pytest.raises(JobConfigError, match="invocation payload: shards"):
        as_invoked(sweep_job(), {"shards": [0]})  # no expiry index: nothing to narrow


def test_only_shards_must_name_shards_of_the_index():
    with pytest.raises(JobConfigError, match=r"only_shards: must be a non-empty list of shard numbers 0\.\.3"):
        sweep_job(**INDEX_SETTINGS, only_shards=[4])
