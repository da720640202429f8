"""Sweep benchmark: 100,000 items with 1% expired, in moto (in-process), 10 ms injected per AWS call.

Compares the sequential loop of the video-upload README (one filtered Scan, then one DeleteItem at a
time) with Expiry's sweep: Scan (1 and 4 segments) and the expiry index, with concurrent conditional
deletes. Prints a Markdown table. Figures, not a test: run `make benchmark`.

    venv/bin/python benchmarks/sweep_benchmark.py [--items 100000] [--expired-share 0.01]
"""

import argparse
import io
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import boto3
from moto import mock_aws

from expiry.runtime.aws_clients import client_config
from expiry.runtime.dynamodb.ttl import expiry_shard
from expiry.runtime.handlers.work import sweep_work
from expiry.runtime.jobs.config import parse_job
from expiry.runtime.jobs.runner import run_job

TABLE = "bench"
SHARDS = 10
NOW = int(time.time())


class CallMeter:
    """Counts AWS calls by operation and adds a fixed latency to each (a botocore event hook)."""

    def __init__(self, latency_seconds: float) -> None:
        self.latency, self.calls = latency_seconds, Counter()

    def attach(self, client: Any) -> None:
        client.meta.events.register_first("before-send", self.before_send)

    def before_send(self, request: Any, **_: Any) -> None:
        self.calls[request.headers.get("X-Amz-Target", b"").decode().split(".")[-1] or "other"] += 1
        time.sleep(self.latency)


def create_table(dynamodb: Any) -> None:
    dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "id", "AttributeType": "S"},
            {"AttributeName": "expiry_shard", "AttributeType": "S"},
            {"AttributeName": "ttl", "AttributeType": "N"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "expiry-index",
                "KeySchema": [
                    {"AttributeName": "expiry_shard", "KeyType": "HASH"},
                    {"AttributeName": "ttl", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )


def put_items(dynamodb: Any, ids: list[str], ttl: int) -> None:
    for start in range(0, len(ids), 25):
        requests = [
            {
                "PutRequest": {
                    "Item": {
                        "id": {"S": i},
                        "ttl": {"N": str(ttl)},
                        "expiry_shard": {"S": expiry_shard(i, SHARDS)},
                        "owner": {"S": "user-" + i[-4:]},
                        "status": {"S": "completed"},
                    }
                }
            }
            for i in ids[start : start + 25]
        ]
        dynamodb.batch_write_item(RequestItems={TABLE: requests})


def readme_loop(dynamodb: Any) -> dict[str, int]:
    """The README's loop: scan for expired items, then delete them one at a time."""
    kwargs: dict[str, Any] = {
        "TableName": TABLE,
        "FilterExpression": "#t < :now",
        "ExpressionAttributeNames": {"#t": "ttl"},
        "ExpressionAttributeValues": {":now": {"N": str(NOW)}},
    }
    expired, read = [], 0
    while True:
        page = dynamodb.scan(**kwargs)
        read += page["ScannedCount"]
        expired += page["Items"]
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    for item in expired:
        dynamodb.delete_item(TableName=TABLE, Key={"id": item["id"]})
    return {"found": len(expired), "deleted": len(expired), "read": read}


def expiry_sweep(settings: dict[str, Any]) -> Callable[[Any], dict[str, int]]:
    def run(dynamodb: Any) -> dict[str, int]:
        job = parse_job(
            {
                "kind": "sweep",
                "name": "bench",
                "table": TABLE,
                "key_attributes": ["id"],
                "ttl_attribute": "ttl",
                "workers": 8,
                "max_items": 1_000_000,
                **settings,
            }
        )
        summary = run_job(job, sweep_work(lambda _service: dynamodb), None, clock=lambda: NOW, stream=io.StringIO())
        counts = summary["counts"]
        return {"found": counts["expired_found"], "deleted": counts["items_deleted"], "read": counts["items_read"]}

    return run


VARIANTS = {
    "README loop: Scan, then DeleteItem one at a time": readme_loop,
    "Expiry sweep, Scan, 8 workers": expiry_sweep({}),
    "Expiry sweep, Scan in 4 segments, 8 workers": expiry_sweep({"scan_segments": 4}),
    "Expiry sweep, expiry index (10 shards), 8 workers": expiry_sweep(
        {"expiry_index": {"name": "expiry-index", "shards": SHARDS, "shard_attribute": "expiry_shard"}}
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--expired-share", type=float, default=0.01)
    parser.add_argument("--latency-ms", type=float, default=10.0)
    args = parser.parse_args()
    expired_count = int(args.items * args.expired_share)
    rows = []
    with mock_aws():
        setup = boto3.client("dynamodb", config=client_config(8))
        create_table(setup)
        put_items(setup, [f"live-{i:07}" for i in range(args.items - expired_count)], NOW + 86400)
        for name, variant in VARIANTS.items():
            put_items(setup, [f"old-{i:07}" for i in range(expired_count)], NOW - 3600)
            meter = CallMeter(args.latency_ms / 1000)
            client = boto3.client("dynamodb", config=client_config(8))
            meter.attach(client)
            started = time.perf_counter()
            result = variant(client)
            seconds = time.perf_counter() - started
            calls = sum(meter.calls.values())
            rows.append(
                (
                    name,
                    result["read"] / max(result["found"], 1),
                    calls * 1000 / max(result["deleted"], 1),
                    result["deleted"] / seconds,
                    result["deleted"],
                    seconds,
                )
            )
    print(f"{args.items:,} items, {expired_count:,} expired, moto in-process, {args.latency_ms:g} ms added per call\n")
    print("| variant | items read per expired item | AWS calls per 1,000 deletions | deletions/s | deleted | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, read_ratio, calls, rate, deleted, seconds in rows:
        print(f"| {name} | {read_ratio:,.1f} | {calls:,.0f} | {rate:,.0f} | {deleted:,} | {seconds:,.1f} |")


if __name__ == "__main__":
    main()
