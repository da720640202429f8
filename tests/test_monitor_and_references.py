"""The TTL monitor and the orphaned-references job against moto (in-process and moto_server)."""

import io
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from uploads_world import INDEX_SETTINGS, NOW, TABLE, create_table, put_session, run

from expiry.runtime.handlers.work import monitor_work, references_work
from expiry.runtime.jobs import metrics
from expiry.runtime.jobs.config import parse_job
from expiry.runtime.jobs.runner import run_job


def monitor_job(**settings: Any):
    return parse_job(
        {
            "kind": "ttl-monitor",
            "job_name": "checkpoints-monitor",
            "table_name": TABLE,
            "key_attributes": ["uploadSessionId"],
            "ttl_attribute": "ttl",
            **settings,
        }
    )


def clients(aws):
    return lambda service: {"dynamodb": aws.dynamodb, "s3": aws.s3}[service]


@pytest.mark.parametrize("expiry_index", [False, True], ids=["scan", "expiry-index"])
def test_monitor_reports_backlog_ages_sample_and_table_figures(aws, expiry_index):
    create_table(aws.dynamodb, expiry_index=expiry_index)
    aws.dynamodb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})
    for i in range(25):
        put_session(aws.dynamodb, f"old-{i:02}", NOW - 100 - i * 3600, shard=True)
    for i in range(5):
        put_session(aws.dynamodb, f"live-{i}", NOW + 100, shard=True)
    job = monitor_job(page_size=7, **(INDEX_SETTINGS if expiry_index else {}))
    result = run(job, monitor_work(clients(aws)))
    summary = result.summary
    assert summary["ttl_enabled"] is True and summary["ttl_status"] == "ENABLED"
    assert summary["expired_backlog"] == 25 and summary["backlog_complete"] is True
    assert summary["oldest_expired_age_seconds"] == 100 + 24 * 3600
    assert summary["newest_expired_age_seconds"] == 100
    assert summary["oldest_expiry"] == NOW - 100 - 24 * 3600
    assert len(summary["sample_keys"]) == 10
    assert all(key["uploadSessionId"].startswith("old-") for key in summary["sample_keys"])
    assert summary["item_count"] == 30
    emf = result.emf
    assert emf[metrics.TTL_ENABLED] == 1 and emf[metrics.EXPIRED_BACKLOG] == 25
    assert emf[metrics.OLDEST_EXPIRED_AGE_SECONDS] == 100 + 24 * 3600
    assert emf[metrics.TABLE_ITEM_COUNT] == 30 and metrics.TABLE_SIZE_BYTES in emf
    assert len(aws.dynamodb.scan(TableName=TABLE)["Items"]) == 30  # read-only


def test_monitor_sees_ttl_disabled_or_on_the_wrong_attribute(aws):
    create_table(aws.dynamodb)
    assert run(monitor_job(), monitor_work(clients(aws))).emf[metrics.TTL_ENABLED] == 0
    aws.dynamodb.update_time_to_live(
        TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"}
    )
    result = run(monitor_job(), monitor_work(clients(aws)))
    assert result.summary["ttl_attribute"] == "expires" and result.emf[metrics.TTL_ENABLED] == 0


def test_monitor_with_nothing_expired(aws):
    create_table(aws.dynamodb)
    put_session(aws.dynamodb, "live", NOW + 10)
    result = run(monitor_job(), monitor_work(clients(aws)))
    assert result.summary["expired_backlog"] == 0 and result.summary["sample_keys"] == []
    assert result.emf[metrics.OLDEST_EXPIRED_AGE_SECONDS] == 0


def test_monitor_failure_is_visible(aws):
    stream = io.StringIO()
    with pytest.raises(ClientError):
        run_job(monitor_job(), monitor_work(clients(aws)), None, clock=lambda: NOW, stream=stream)
    emf = json.loads(stream.getvalue().splitlines()[0])
    assert emf[metrics.SWEEP_FAILED] == 1


ATTRIBUTES = "actingweb_dev_attributes"
SYSTEM = "_actingweb_oauth2"
# How ActingWeb's token manager writes: the token in the actor's bucket, then the index entry,
# whose data is the JSON-encoded actor id and whose TTL is the token's plus INDEX_TTL_BUFFER.
BUCKETS = {
    "_auth_code_index": "mcp_auth_codes",
    "_access_token_index": "mcp_tokens",
    "_refresh_token_index": "mcp_refresh_tokens",
    "_client_index": "mcp_clients",
}


def reference_job(**settings: Any):
    from stack.systems import ACTINGWEB_REFERENCES

    return parse_job(
        {
            "kind": "orphaned-references",
            "job_name": "attribute-index-cleanup",
            "table_name": ATTRIBUTES,
            "key_attributes": ["id", "bucket_name"],
            "ttl_attribute": "ttl_timestamp",
            "references": ACTINGWEB_REFERENCES,
            **settings,
        }
    )


def put_attribute(dynamodb: Any, actor: str, bucket: str, name: str, data: Any, ttl: int | None) -> None:
    item = {"id": {"S": actor}, "bucket_name": {"S": f"{bucket}:{name}"}, "data": {"S": json.dumps(data)}}
    if ttl is not None:
        item["ttl_timestamp"] = {"N": str(ttl)}
    dynamodb.put_item(TableName=ATTRIBUTES, Item=item)


def put_token(dynamodb: Any, index: str, actor: str, token: str, ttl: int | None, with_target: bool = True) -> None:
    if with_target:
        put_attribute(dynamodb, actor, BUCKETS[index], token, {"actor_id": actor}, ttl)
    put_attribute(dynamodb, SYSTEM, index, token, actor, None if ttl is None else ttl + 7200)


def keys(dynamodb: Any) -> set[tuple[str, str]]:
    pages = dynamodb.get_paginator("scan").paginate(TableName=ATTRIBUTES)
    return {(i["id"]["S"], i["bucket_name"]["S"]) for page in pages for i in page["Items"]}


@pytest.fixture
def attributes(aws):
    create_table(aws.dynamodb, name=ATTRIBUTES, hash_key="id", range_key="bucket_name")
    db = aws.dynamodb
    for i in range(6):  # live tokens of a live actor: every index entry stays
        put_token(db, "_access_token_index", "actor-1", f"aw_live{i}", NOW + 3600)
    put_token(db, "_refresh_token_index", "actor-1", "rt_live", NOW + 30 * 86400)
    put_token(db, "_client_index", "actor-1", "mcp_client_live", None)
    put_attribute(db, "actor-1", "_properties", "email", "a@example.com", None)
    # Actor.delete() removed actor-2's buckets: its entries are orphans, TTL or not.
    put_token(db, "_access_token_index", "actor-2", "aw_gone", NOW + 1800, with_target=False)
    put_token(db, "_refresh_token_index", "actor-2", "rt_gone", NOW + 20 * 86400, with_target=False)
    put_token(db, "_client_index", "actor-2", "mcp_client_gone", None, with_target=False)
    # TTL removed a token that expired 30 minutes ago: its entry is in its grace, TTL's to remove.
    put_token(db, "_auth_code_index", "actor-1", "ac_grace", NOW - 1800, with_target=False)
    return aws


def test_orphaned_index_entries_of_actingweb_are_deleted_and_live_ones_kept(attributes):
    before = keys(attributes.dynamodb)
    result = run(reference_job(), references_work(clients(attributes)))
    gone = before - keys(attributes.dynamodb)
    assert gone == {
        (SYSTEM, "_access_token_index:aw_gone"),
        (SYSTEM, "_refresh_token_index:rt_gone"),
        (SYSTEM, "_client_index:mcp_client_gone"),
    }
    assert result.counts["orphans_deleted"] == 3 and result.emf[metrics.ORPHANS_DELETED] == 3
    assert result.counts["entries_grace"] == 1 and result.counts["entries_target"] == 8
    assert result.counts["read_calls"] == 4  # one Query per index, no Scan


def test_an_entry_renewed_or_repointed_before_its_delete_is_kept(attributes):
    from expiry.runtime.dynamodb.orphaned_references import IndexSweeper
    from expiry.runtime.jobs.run_control import Tally

    job, tally = reference_job(), Tally(io.StringIO())
    sweeper = IndexSweeper(job, attributes.dynamodb, NOW, lambda: False, tally)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        plan = sweeper.plan(pool)
    assert len(plan.orphans) == 3
    put_token(attributes.dynamodb, "_access_token_index", "actor-3", "aw_gone", NOW + 3600)  # re-pointed
    for entry in plan.orphans:
        sweeper.delete(entry)
    assert (SYSTEM, "_access_token_index:aw_gone") in keys(attributes.dynamodb)
    assert tally.counts["items_skipped"] == 1 and tally.counts["orphans_deleted"] == 2


def test_references_dry_run_is_the_plan(attributes):
    before = keys(attributes.dynamodb)
    dry = run(reference_job(dry_run=True), references_work(clients(attributes)))
    assert keys(attributes.dynamodb) == before
    planned = {(k["id"], k["bucket_name"]) for k in dry.summary["plan"]["sample"]["orphans_to_delete"]}
    real = run(reference_job(), references_work(clients(attributes)))
    assert before - keys(attributes.dynamodb) == planned and real.summary["plan"] == dry.summary["plan"]


def test_a_wrong_target_template_finds_no_target_and_deletes_nothing(attributes):
    from stack.systems import ACTINGWEB_REFERENCES

    wrong = {
        **ACTINGWEB_REFERENCES,
        "indexes": [{"range_prefix": "_access_token_index:", "target": ["{owner}", "tokens:{token}"]}],
    }
    before = keys(attributes.dynamodb)
    result = run(reference_job(references=wrong), references_work(clients(attributes)))
    assert keys(attributes.dynamodb) == before and result.emf[metrics.MASS_DELETION_REFUSED] == 1
    assert any("no entry's target was found" in line.get("error", "") for line in result.lines)


def test_references_into_another_table(aws):
    create_table(aws.dynamodb, name=ATTRIBUTES, hash_key="id", range_key="bucket_name")
    create_table(aws.dynamodb, name="sessions", hash_key="session")
    aws.dynamodb.put_item(TableName="sessions", Item={"session": {"S": "s-alive"}})
    put_attribute(aws.dynamodb, SYSTEM, "_session_index", "alive", "s-alive", None)
    put_attribute(aws.dynamodb, SYSTEM, "_session_index", "dead", "s-dead", None)
    references = {
        "hash_value": SYSTEM,
        "owner_attribute": "data",
        "owner_format": "json",
        "indexes": [{"range_prefix": "_session_index:", "target": ["{owner}"]}],
        "target_table_name": "sessions",
        "target_key_attributes": ["session"],
    }
    run(reference_job(references=references), references_work(clients(aws)))
    assert keys(aws.dynamodb) == {(SYSTEM, "_session_index:alive")}
