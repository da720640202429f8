"""The TTL monitor (read-only): is TTL on, on the right attribute, and is it keeping up?"""

from collections.abc import Callable
from typing import Any

from expiry.runtime.dynamodb.expired_items import count_unindexed_expired, find_expired, key_of
from expiry.runtime.dynamodb.ttl import ttl_value
from expiry.runtime.jobs.config import Job
from expiry.runtime.jobs.run_control import Tally


def inspect_table(dynamodb: Any, job: Job, now: float, tally: Tally, should_stop: Callable[[], bool]) -> dict[str, Any]:
    """TTL status, DescribeTable's counts and the expired-but-present backlog."""
    ttl = dynamodb.describe_time_to_live(TableName=job.table)["TimeToLiveDescription"]
    status, attribute = ttl.get("TimeToLiveStatus", "DISABLED"), ttl.get("AttributeName")
    table = dynamodb.describe_table(TableName=job.table)["Table"]
    oldest = newest = None
    sample: list[dict[str, Any]] = []
    backlog = 0
    for item in find_expired(dynamodb, job, now, tally, should_stop):
        expiry = ttl_value(item, job.ttl_attribute)
        if expiry is None:
            continue
        backlog += 1
        oldest = expiry if oldest is None else min(oldest, expiry)
        newest = expiry if newest is None else max(newest, expiry)
        if len(sample) < job.sample_size:
            sample.append({name: next(iter(value.values())) for name, value in key_of(job, item).items()})
    return {
        "ttl_status": status,
        "ttl_attribute": attribute,
        "ttl_enabled": status == "ENABLED" and attribute == job.ttl_attribute,
        "item_count": table.get("ItemCount", 0),
        "table_size_bytes": table.get("TableSizeBytes", 0),
        "expired_backlog": backlog,
        "backlog_complete": not tally.counts["stopped_early_reads"] and not tally.counts["limit_reached"],
        "oldest_expiry": oldest,
        "newest_expiry": newest,
        "oldest_expired_age_seconds": int(now - oldest) if oldest is not None else 0,
        "newest_expired_age_seconds": int(now - newest) if newest is not None else 0,
        "sample_keys": sample,
        "unindexed_expired": count_unindexed_expired(dynamodb, job, now, tally, lambda: table.get("ItemCount", 0)),
    }
