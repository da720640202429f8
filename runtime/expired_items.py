"""Finding expired items while reading as little as possible, and deleting them only if still expired.

With an expiry index a run Queries each shard for `ttl < now` and reads only expired entries;
without one it Scans (optionally in parallel segments) with a filter, which still reads, and is
billed for, every item in the table."""

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError

from runtime.job_config import Job
from runtime.run_control import Tally

Item = dict[str, Any]


def _ttl_condition(job: Job, now: float) -> tuple[dict[str, str], dict[str, Any]]:
    return {"#ttl": job.ttl_attribute}, {":now": {"N": str(int(now))}}


def pages(
    call: Callable[..., Item], kwargs: Item, tally: Tally, should_stop: Callable[[], bool], page_size: int | None
) -> Iterator[Item]:
    """Items of every page of a Query or Scan, stopping between pages when asked to."""
    if page_size:
        kwargs = {**kwargs, "Limit": page_size}
    while True:
        page = call(**kwargs)
        tally.add("items_read", page.get("ScannedCount", 0))
        tally.add("read_calls")
        yield from page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return
        if should_stop():
            tally.add("stopped_early_reads")
            return
        kwargs = {**kwargs, "ExclusiveStartKey": page["LastEvaluatedKey"]}


def _query_index(dynamodb: Any, job: Job, now: float, tally: Tally, should_stop: Callable[[], bool]) -> Iterator[Item]:
    index = job.expiry_index
    assert index is not None
    names, values = _ttl_condition(job, now)
    for shard in range(index.shards):
        if should_stop():
            tally.add("stopped_early_reads")
            return
        kwargs = {
            "TableName": job.table,
            "IndexName": index.name,
            "KeyConditionExpression": "#shard = :shard AND #ttl < :now",
            "ExpressionAttributeNames": {**names, "#shard": index.shard_attribute},
            "ExpressionAttributeValues": {**values, ":shard": {"S": str(shard)}},
        }
        yield from pages(dynamodb.query, kwargs, tally, should_stop, job.page_size)


def _scan_kwargs(job: Job, now: float, extra: tuple[str, ...]) -> Item:
    names, values = _ttl_condition(job, now)
    projected = job.projection(*extra)
    placeholders = {f"#p{i}": name for i, name in enumerate(projected)}
    return {
        "TableName": job.table,
        "FilterExpression": "#ttl < :now",
        "ProjectionExpression": ", ".join(placeholders),
        "ExpressionAttributeNames": {**names, **placeholders},
        "ExpressionAttributeValues": values,
    }


def _scan(
    dynamodb: Any, job: Job, now: float, extra: tuple[str, ...], tally: Tally, should_stop: Callable[[], bool]
) -> Iterator[Item]:
    kwargs = _scan_kwargs(job, now, extra)
    if job.scan_segments == 1:
        yield from pages(dynamodb.scan, kwargs, tally, should_stop, job.page_size)
        return
    # Parallel segments feed one bounded queue; the consumer may stop early, and so do they.
    found: queue.Queue[Item | None] = queue.Queue(maxsize=1000)
    stop = threading.Event()
    failures: list[BaseException] = []

    def segment(number: int) -> None:
        try:
            segment_kwargs = {**kwargs, "Segment": number, "TotalSegments": job.scan_segments}
            for item in pages(
                dynamodb.scan, segment_kwargs, tally, lambda: stop.is_set() or should_stop(), job.page_size
            ):
                while not stop.is_set():
                    try:
                        found.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it
            failures.append(error)
        finally:
            found.put(None)

    with ThreadPoolExecutor(max_workers=job.scan_segments) as pool:
        for number in range(job.scan_segments):
            pool.submit(segment, number)
        finished = 0
        try:
            while finished < job.scan_segments:
                item = found.get()
                if item is None:
                    finished += 1
                    continue
                yield item
        finally:
            stop.set()
            while finished < job.scan_segments:  # drain so every segment can finish
                if found.get() is None:
                    finished += 1
    if failures:
        raise failures[0]


def find_expired(
    dynamodb: Any,
    job: Job,
    now: float,
    tally: Tally,
    should_stop: Callable[[], bool],
    extra: tuple[str, ...] = (),
    limit: int | None = None,
) -> Iterator[Item]:
    """Yield expired items (keys, TTL and ``extra`` when scanning; keys and TTL from the index)."""
    source = (
        _query_index(dynamodb, job, now, tally, should_stop)
        if job.expiry_index
        else _scan(dynamodb, job, now, extra, tally, should_stop)
    )
    limit = job.max_items if limit is None else limit
    for count, item in enumerate(source, start=1):
        yield item
        if count >= limit:
            tally.add("limit_reached")
            return


def key_of(job: Job, item: Item) -> Item:
    """The primary key of ``item`` (client format)."""
    return {name: item[name] for name in job.key_attributes}


def delete_if_expired(dynamodb: Any, job: Job, key: Item, now: float) -> Item | None:
    """Delete the item only if its TTL is still earlier than ``now``; return its last image.

    None means it was renewed (or is already gone) after it was read, and was left alone.
    """
    names, values = _ttl_condition(job, now)
    try:
        response = dynamodb.delete_item(
            TableName=job.table,
            Key=key,
            ConditionExpression="#ttl < :now",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="ALL_OLD",
        )
    except ClientError as error:
        if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return None
        raise
    return response.get("Attributes")
