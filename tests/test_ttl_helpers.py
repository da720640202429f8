"""runtime/dynamodb/ttl.py: TTL values, expiry checks, the read filter (against DynamoDB in moto), shards."""

from collections import Counter
from decimal import Decimal

import boto3
import pytest
from moto import mock_aws

from expiry.runtime.dynamodb.ttl import (
    TtlValueError,
    expires_at,
    expiry_attributes,
    expiry_shard,
    is_expired,
    read_filter,
    ttl_value,
)

NOW = 1_790_000_000  # 2026-09-21, epoch seconds
MILLIS = NOW * 1000


def test_expires_at_adds_seconds_to_now():
    assert expires_at(3600, now=NOW) == NOW + 3600
    assert expires_at(0.2, now=NOW) == NOW + 1  # rounds up: never expires early


def test_expires_at_defaults_to_the_clock():
    import time

    before = int(time.time())
    assert before + 60 <= expires_at(60) <= int(time.time()) + 61


@pytest.mark.parametrize(
    ("seconds", "now", "message"),
    [
        (3600, MILLIS, "now 1790000000000 looks like epoch milliseconds"),
        (MILLIS, NOW, "looks like epoch milliseconds"),
        (-1, NOW, "seconds must be a number >= 0"),
        ("60", NOW, "seconds must be a number >= 0"),
        (True, NOW, "seconds must be a number >= 0"),
    ],
)
def test_expires_at_refuses_bad_values(seconds, now, message):
    with pytest.raises(TtlValueError, match=message):
        expires_at(seconds, now=now)


@pytest.mark.parametrize(
    ("item", "expired"),
    [
        ({"ttl": NOW - 1}, True),
        ({"ttl": Decimal(NOW - 1)}, True),
        ({"ttl": {"N": str(NOW - 1)}}, True),
        ({"ttl": NOW}, False),  # DynamoDB: expired only when earlier than now
        ({"ttl": NOW + 1}, False),
        ({"ttl": {"N": str(NOW + 60)}}, False),
        ({}, False),  # no TTL: never expires
        ({"ttl": "1700000000"}, False),  # a string TTL: DynamoDB never expires it
        ({"ttl": {"S": "1700000000"}}, False),
    ],
)
def test_is_expired(item, expired):
    assert is_expired(item, "ttl", now=NOW) is expired


@pytest.mark.parametrize("item", [{"ttl": MILLIS}, {"ttl": Decimal(MILLIS)}, {"ttl": {"N": str(MILLIS)}}])
def test_millisecond_values_are_refused(item):
    with pytest.raises(
        TtlValueError, match=r"TTL attribute .ttl. 1790000000000 looks like epoch milliseconds.*divide by 1000"
    ):
        is_expired(item, "ttl", now=NOW)
    with pytest.raises(TtlValueError):
        ttl_value(item, "ttl")


def test_expiry_shard_is_stable_in_range_and_spread():
    shards = [expiry_shard(f"session-{i}", 10) for i in range(5000)]
    assert shards == [expiry_shard(f"session-{i}", 10) for i in range(5000)]
    counts = Counter(shards)
    assert set(counts) == {str(i) for i in range(10)}
    assert min(counts.values()) > 400  # about 500 each
    assert expiry_shard(42, 1) == "0"
    assert expiry_shard(b"\x00\x01", 7) in {str(i) for i in range(7)}


@pytest.mark.parametrize("shards", [0, 101, 2.5, True])
def test_expiry_shard_refuses_bad_counts(shards):
    with pytest.raises(ValueError, match=r"shards must be an integer in 1\.\.100"):
        expiry_shard("k", shards)


def test_expiry_attributes():
    assert expiry_attributes("abc", 60, now=NOW, shards=4) == {
        "expires_at": NOW + 60,
        "expiry_shard": expiry_shard("abc", 4),
    }
    assert set(expiry_attributes("abc", 60, now=NOW, ttl_attribute="ttl", shard_attribute="s")) == {"ttl", "s"}


@pytest.fixture
def sessions():
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName="sessions",
            KeySchema=[{"AttributeName": "user", "KeyType": "HASH"}, {"AttributeName": "id", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "user", "AttributeType": "S"},
                {"AttributeName": "id", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        rows = {
            "expired": {"N": str(NOW - 10)},
            "live": {"N": str(NOW + 3600)},
            "ends-now": {"N": str(NOW)},
            "string-ttl": {"S": str(NOW - 10)},
        }
        for item_id, ttl in rows.items():
            client.put_item(TableName="sessions", Item={"user": {"S": "u1"}, "id": {"S": item_id}, "ttl": ttl})
        client.put_item(TableName="sessions", Item={"user": {"S": "u1"}, "id": {"S": "no-ttl"}})
        yield client


def test_read_filter_hides_expired_items_in_scan(sessions):
    seen = {item["id"]["S"] for item in sessions.scan(TableName="sessions", **read_filter("ttl", now=NOW))["Items"]}
    assert seen == {"live", "ends-now", "string-ttl", "no-ttl"}
    everything = {item["id"]["S"] for item in sessions.scan(TableName="sessions")["Items"]}
    assert "expired" in everything  # still stored: TTL has not deleted it yet


def test_read_filter_combines_with_a_query(sessions):
    kwargs = read_filter("ttl", now=NOW)
    response = sessions.query(
        TableName="sessions",
        KeyConditionExpression="#u = :u",
        FilterExpression=f"({kwargs['FilterExpression']}) AND begins_with(#id, :e)",
        ExpressionAttributeNames={**kwargs["ExpressionAttributeNames"], "#u": "user", "#id": "id"},
        ExpressionAttributeValues={**kwargs["ExpressionAttributeValues"], ":u": {"S": "u1"}, ":e": {"S": "e"}},
    )
    assert [item["id"]["S"] for item in response["Items"]] == ["ends-now"]


def test_read_filter_refuses_milliseconds_for_now():
    with pytest.raises(TtlValueError, match="now 1790000000000 looks like epoch milliseconds"):
        read_filter("ttl", now=MILLIS)
