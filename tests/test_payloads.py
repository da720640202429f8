"""Invocation payloads fail closed: unknown keys, look-alike spellings, wrong types and shapes refuse
the run before anything is read or deleted, naming the key (and the one probably meant)."""

import json

import pytest
from uploads_world import INDEX_SETTINGS, NOW, create_table, put_session, run, session_ids, sweep_job

from expiry.runtime.handlers.work import sweep_work
from expiry.runtime.jobs.config import JobConfigError
from expiry.runtime.jobs.payload import as_invoked

IDS = [f"session-{n}" for n in range(5)]
# Each look-alike of issue 18 ran for real before: the key a message must name, and the hint.
LOOK_ALIKES = [
    ({"dry_run": True}, "dry_run", "dryRun"),
    ({"DryRun": True}, "DryRun", "dryRun"),
    ({"dryrun": True}, "dryrun", "dryRun"),
    ({"dry-run": True}, "dry-run", "dryRun"),
    ({"detail": {"dryRun": True}}, "detail", None),
    ({"Shards": [3]}, "Shards", "shards"),
    ({"shard": 3}, "shard", "shards"),
    ({"dryRun": True, "extra": 1}, "extra", None),
]


@pytest.fixture
def table(aws):
    create_table(aws.dynamodb, expiry_index=True)
    for session_id in IDS:
        put_session(aws.dynamodb, session_id, NOW - 60, shard=True)
    return aws


def clients(aws):
    return lambda service: {"dynamodb": aws.dynamodb, "s3": aws.s3}[service]


@pytest.mark.parametrize(("payload", "key", "meant"), LOOK_ALIKES)
def test_a_look_alike_key_refuses_the_run_and_deletes_nothing(table, payload, key, meant):
    job = sweep_job(**INDEX_SETTINGS)
    with pytest.raises(JobConfigError) as refused:
        run(job, sweep_work(clients(table)), event=payload)
    message = str(refused.value)
    assert message.startswith(f"invocation payload: {key}: unknown key")
    assert (f"did you mean {meant!r}" in message) == bool(meant)
    assert "nothing was read or deleted" in message
    assert session_ids(table.dynamodb) == set(IDS)


@pytest.mark.parametrize(
    "payload",
    [json.dumps({"dryRun": True}), [{"dryRun": True}], "dryRun", 1, True],
    ids=["json-string", "list", "string", "number", "boolean"],
)
def test_a_payload_that_is_not_an_object_refuses_the_run(table, payload):
    with pytest.raises(JobConfigError, match=r"^invocation payload: must be a JSON object of \['dryRun'"):
        run(sweep_job(**INDEX_SETTINGS), sweep_work(clients(table)), event=payload)
    assert session_ids(table.dynamodb) == set(IDS)


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        ({"dryRun": "true"}, "dryRun"),
        ({"dryRun": 1}, "dryRun"),
        ({"job": "other-job"}, "job"),
        ({"source": 3}, "source"),
    ],
)
def test_a_known_key_of_the_wrong_type_or_value_is_refused(table, payload, key):
    with pytest.raises(JobConfigError, match=rf"^invocation payload: {key}: "):
        run(sweep_job(**INDEX_SETTINGS), sweep_work(clients(table)), event=payload)
    assert session_ids(table.dynamodb) == set(IDS)


def test_what_the_schedule_sends_and_the_documented_dry_run_still_work(table):
    job = sweep_job(**INDEX_SETTINGS, breaker={"ignore_below": 10})
    dry = run(job, sweep_work(clients(table)), event={"dryRun": True, "source": "expiry-schedule"})
    assert dry.summary["dry_run"] is True and dry.summary["plan"]["counts"]["items_to_delete"] == len(IDS)
    assert session_ids(table.dynamodb) == set(IDS)
    real = run(job, sweep_work(clients(table)), event={"source": "expiry-schedule", "job": job.name})
    assert real.counts["items_deleted"] == len(IDS)
    assert session_ids(table.dynamodb) == set()


def test_none_and_the_empty_object_run_the_job_as_configured():
    job = sweep_job()
    assert as_invoked(job, None) is job
    assert as_invoked(job, {}) is job
    assert as_invoked(job, {"dryRun": False}) is job


def test_shards_are_unknown_to_a_job_without_an_expiry_index():
    with pytest.raises(JobConfigError, match=r"^invocation payload: shards: unknown key \(allowed: \['dryRun'"):
        as_invoked(sweep_job(), {"shards": [0]})


def test_records_are_known_only_to_a_stream_cascade():
    with pytest.raises(JobConfigError, match=r"^invocation payload: Records: unknown key"):
        as_invoked(sweep_job(), {"Records": []})
