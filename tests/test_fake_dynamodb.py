"""The benchmarks' fake DynamoDB answers like DynamoDB for what the sweeper, its ledger and the loop send,
and throttles writes as an on-demand table does."""

import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from fake_dynamodb import LEDGER, Throttle, expired_ids, item_size, make_items
from sweep_benchmark import NOW, SHARDS, admin, expiry_sweep, fake_endpoint

from expiry.runtime.dynamodb.deletion_budget import ITEMS, Claim, reserve
from expiry.runtime.dynamodb.rate_limit import LedgerLimiter
from expiry.runtime.dynamodb.ttl import expiry_shard
from expiry.runtime.jobs.config import parse_job


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with fake_endpoint() as url:
        yield url


def client(url: str) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"mode": "standard"}),
    )


def reset(url: str, items: int, expired: int, size: int = 63) -> None:
    admin(url, "Reset", {"items": items, "expired": expired, "now": NOW, "size": size, "shards": SHARDS, "rtt_ms": 0})


def test_items_have_the_size_asked_for() -> None:
    assert {item_size(i) for i in make_items(50, 5, NOW, 400, SHARDS)} == {400}
    assert len(expired_ids(1000, 10)) == 10


@pytest.mark.parametrize("variant", ["scan", "index"])
def test_the_sweeper_deletes_exactly_the_expired_items(endpoint: str, variant: str) -> None:
    reset(endpoint, 3000, 30)
    deleted = expiry_sweep(client(endpoint), {"variant": variant, "workers": 4})
    stats = admin(endpoint, "Stats", {})
    assert deleted == 30
    assert stats["items"] == 2970
    assert stats["units"]["write"] == 30 and stats["units"]["index_write"] == 30
    assert stats["units"]["items_read"] == (3000 if variant == "scan" else 30)


def test_scan_pages_stop_at_one_megabyte_and_bill_every_item_read(endpoint: str) -> None:
    reset(endpoint, 20_000, 0, size=100)
    dynamodb = client(endpoint)
    page = dynamodb.scan(TableName="bench", FilterExpression="#t < :n", ExpressionAttributeNames={"#t": "ttl"},
                         ExpressionAttributeValues={":n": {"N": str(NOW)}})  # fmt: skip
    assert (page["Count"], page["ScannedCount"]) == (0, 10485)
    assert page["LastEvaluatedKey"] == {"id": {"S": "item-00010484"}}
    assert admin(endpoint, "Stats", {})["units"]["read"] == 128  # 1 MB, eventually consistent


def test_a_conditional_delete_leaves_a_changed_item_and_returns_it(endpoint: str) -> None:
    reset(endpoint, 10, 1)
    dynamodb = client(endpoint)
    key = {"id": {"S": "item-00000000"}}
    with pytest.raises(dynamodb.exceptions.ConditionalCheckFailedException) as failed:
        dynamodb.delete_item(
            TableName="bench",
            Key=key,
            ConditionExpression="#c0 = :c0 AND attribute_not_exists(#c1)",
            ExpressionAttributeNames={"#c0": "ttl", "#c1": "status"},
            ExpressionAttributeValues={":c0": {"N": str(NOW - 3600)}},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    assert failed.value.response["Item"]["id"] == key["id"]
    assert admin(endpoint, "Stats", {})["items"] == 10


def test_expired_items_are_spread_over_the_shards_as_expirys_writers_spread_them() -> None:
    items = make_items(10_000, 100, NOW, 63, SHARDS)
    expired = {i["id"]["S"] for i in items if int(i["ttl"]["N"]) < NOW}
    assert all(i["expiry_shard"]["S"] == expiry_shard(i["id"]["S"], SHARDS) for i in items)
    per_shard = Counter(i["expiry_shard"]["S"] for i in items if i["id"]["S"] in expired)
    assert len(per_shard) == SHARDS and max(per_shard.values()) < 30  # not every expired item in one shard


def test_describe_table_counts_what_is_left_after_deletes(endpoint: str) -> None:
    reset(endpoint, 1000, 10, size=100)
    dynamodb = client(endpoint)
    dynamodb.delete_item(TableName="bench", Key={"id": {"S": expired_ids(1000, 10)[0]}})
    table = dynamodb.describe_table(TableName="bench")["Table"]
    assert (table["ItemCount"], table["TableSizeBytes"]) == (999, 999 * 100)


def test_the_ledger_takes_the_breakers_reservations_and_rate_tokens(endpoint: str) -> None:
    """The runtime's own ledger calls (a budget reservation, rate-limit seconds) against the fake."""
    reset(endpoint, 1000, 10)
    dynamodb = client(endpoint)
    job = parse_job(
        {"kind": "sweep", "job_name": "bench", "table_name": "bench", "key_attributes": ["id"],
         "ttl_attribute": "ttl", "budget_table_name": LEDGER}
    )  # fmt: skip
    claims = [Claim(ITEMS, 10, 1000)]
    assert reserve(dynamodb, job, claims, NOW)[0] == []
    assert reserve(dynamodb, job, claims, NOW)[0] == []  # the second run's write is conditioned on the version
    record = dynamodb.get_item(TableName=LEDGER, Key={"table": {"S": "bench"}}, ConsistentRead=True)["Item"]
    assert (record["items_reserved"], record["version"]) == ({"N": "20"}, {"N": "2"})
    limiter = LedgerLimiter(30, dynamodb, LEDGER, "bench", lambda: False, clock=lambda: NOW + 0.5)
    assert [limiter.tokens(NOW, True) for _ in range(3)] == [25, 5, 0]  # never past the limit in a second
    units = admin(endpoint, "Stats", {})["units"]
    assert (units["ledger_budget_write"], units["ledger_rate_write"]) == (2, 4)  # a failed condition is billed
    assert units["ledger_rate_write_failed"] == 2


def test_writes_past_an_index_keys_capacity_are_throttled_and_delete_nothing(endpoint: str) -> None:
    admin(endpoint, "Reset", {"items": 10, "expired": 1, "now": NOW, "size": 63, "shards": SHARDS, "rtt_ms": 0,
                              "throttle": {"index_key_wcu": 0}})  # fmt: skip
    dynamodb = boto3.client(
        "dynamodb", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x",
        aws_secret_access_key="x", config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )  # fmt: skip
    with pytest.raises(dynamodb.exceptions.ProvisionedThroughputExceededException):
        dynamodb.delete_item(TableName="bench", Key={"id": {"S": "item-00000000"}})
    stats = admin(endpoint, "Stats", {})
    assert (stats["items"], stats["units"]["throttled"]) == (10, 1)


def test_a_throttle_counts_each_bucket_per_second() -> None:
    now = [100.2]
    throttle = Throttle(table_wru=3, partitions=2, partition_wcu=2, clock=lambda: now[0])
    assert throttle.admit({"table": 1, "partition:0": 1})
    assert throttle.admit({"table": 1, "partition:0": 1})
    assert not throttle.admit({"table": 1, "partition:0": 1})  # the partition is full, the table is not
    assert throttle.admit({"table": 1, "partition:1": 1})
    assert not throttle.admit({"table": 1, "partition:1": 1})  # now the table is full
    now[0] = 101.0
    assert throttle.admit({"table": 1, "partition:0": 1})  # a new second
