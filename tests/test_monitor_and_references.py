"""The TTL monitor and the orphaned-references job against moto (in-process and moto_server)."""

import io
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from uploads_world import INDEX_SETTINGS, NOW, TABLE, create_table, put_session, run

from runtime import metrics
from runtime.job_config import parse_job
from runtime.job_runner import run_job
from runtime.jobs import monitor_work, references_work


def monitor_job(**settings: Any):
    return parse_job(
        {
            "kind": "ttl-monitor",
            "name": "checkpoints-monitor",
            "table": TABLE,
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
    job = monitor_job(page_size=7, expiry_index=INDEX_SETTINGS if expiry_index else None)
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


ATTRIBUTES = "attributes"


def reference_job(**refs: Any):
    raw = reference_job_raw()
    return parse_job({**raw, "references": {**raw["references"], **refs}})


def put_attribute(dynamodb: Any, id_: str, bucket: str, actor: str | None = None, table: str = ATTRIBUTES) -> None:
    item = {"id": {"S": id_}, "bucket_name": {"S": bucket}}
    if actor:
        item["actor_id"] = {"S": actor}
    dynamodb.put_item(TableName=table, Item=item)


def keys(dynamodb: Any, table: str = ATTRIBUTES) -> set[tuple[str, str]]:
    return {(i["id"]["S"], i["bucket_name"]["S"]) for i in dynamodb.scan(TableName=table)["Items"]}


@pytest.fixture
def attributes(aws):
    create_table(aws.dynamodb, name=ATTRIBUTES, hash_key="id", range_key="bucket_name")
    put_attribute(aws.dynamodb, "actor-1", "profile")  # actor-1 exists
    put_attribute(aws.dynamodb, "idx-a", "_index:email", actor="actor-1")
    put_attribute(aws.dynamodb, "idx-b", "_index:email", actor="actor-gone")
    put_attribute(aws.dynamodb, "idx-c", "_index:name", actor="actor-gone")
    put_attribute(aws.dynamodb, "other", "settings", actor="actor-gone")  # not selected
    return aws


def test_orphaned_references_are_deleted(attributes):
    result = run(reference_job(), references_work(clients(attributes)))
    assert keys(attributes.dynamodb) == {("actor-1", "profile"), ("idx-a", "_index:email"), ("other", "settings")}
    assert result.counts["orphans_deleted"] == 2 and result.emf[metrics.ORPHANS_DELETED] == 2


def test_references_into_another_table(aws):
    create_table(aws.dynamodb, name=ATTRIBUTES, hash_key="id", range_key="bucket_name")
    create_table(aws.dynamodb, name="actors", hash_key="id")
    aws.dynamodb.put_item(TableName="actors", Item={"id": {"S": "alive"}})
    put_attribute(aws.dynamodb, "r1", "_index:x", actor="alive")
    put_attribute(aws.dynamodb, "r2", "_index:x", actor="dead")
    run(reference_job(target_table="actors"), references_work(clients(aws)))
    assert keys(aws.dynamodb) == {("r1", "_index:x")}


def test_reference_whose_target_reappears_before_delete_is_kept(attributes):
    from runtime.orphaned_references import delete_orphaned, find_references
    from runtime.run_control import Tally

    job, tally = reference_job(), Tally(io.StringIO())
    found = list(find_references(attributes.dynamodb, job, tally, lambda: False))
    assert len(found) == 3
    put_attribute(attributes.dynamodb, "actor-gone", "profile")  # the target is written again
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        delete_orphaned(attributes.dynamodb, job, found, tally, pool)
    assert ("idx-b", "_index:email") in keys(attributes.dynamodb)
    assert tally.counts["orphans_deleted"] == 0


def test_reference_changed_before_delete_is_kept(attributes):
    from concurrent.futures import ThreadPoolExecutor

    from runtime.orphaned_references import delete_orphaned, find_references
    from runtime.run_control import Tally

    job, tally = reference_job(), Tally(io.StringIO())
    found = list(find_references(attributes.dynamodb, job, tally, lambda: False))
    put_attribute(attributes.dynamodb, "idx-b", "_index:email", actor="actor-1")  # re-pointed at a live actor
    with ThreadPoolExecutor(2) as pool:
        delete_orphaned(attributes.dynamodb, job, found, tally, pool)
    assert ("idx-b", "_index:email") in keys(attributes.dynamodb)
    assert tally.counts["items_skipped"] == 1 and tally.counts["orphans_deleted"] == 1


def test_references_dry_run_writes_nothing(attributes):
    before = keys(attributes.dynamodb)
    job = parse_job({**reference_job_raw(), "dry_run": True})
    result = run(job, references_work(clients(attributes)))
    assert keys(attributes.dynamodb) == before
    assert result.counts["orphans_to_delete"] == 2


def reference_job_raw() -> dict[str, Any]:
    return {
        "kind": "orphaned-references",
        "name": "attribute-index-cleanup",
        "table": ATTRIBUTES,
        "key_attributes": ["id", "bucket_name"],
        "references": {
            "select_attribute": "bucket_name",
            "select_prefix": "_index:",
            "reference_attribute": "actor_id",
            "target_key_attribute": "id",
        },
    }
