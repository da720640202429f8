"""Finding expired items while reading as little as possible, and deleting them only if still expired.

With an expiry index a run Queries each shard for `ttl < now` and reads only expired entries;
without one it Scans (optionally in parallel segments) with a filter, which still reads, and is
billed for, every item in the table."""

import math
import queue
import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from botocore.exceptions import ClientError

from expiry.runtime.aws_clients import retried, with_backoff
from expiry.runtime.jobs.config import Job
from expiry.runtime.jobs.run_control import Tally

Item = dict[str, Any]


DELETED, GONE, CHANGED = "deleted", "gone", "changed"


def _ttl_condition(job: Job, now: float) -> tuple[dict[str, str], dict[str, Any]]:
    return {"#ttl": job.ttl_attribute}, {":now": {"N": str(int(now))}}


def pages(
    call: Callable[..., Item], kwargs: Item, tally: Tally, should_stop: Callable[[], bool], page_size: int | None
) -> Iterator[Item]:
    """Items of every page of a Query or Scan, stopping between pages when asked to; a throttled
    page is read again after a backoff while the run's time allows."""
    if page_size:
        kwargs = {**kwargs, "Limit": page_size}
    while True:
        page = with_backoff(partial(call, **kwargs), should_stop)
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
    for shard in index.shard_numbers():
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
    """Yield items whose TTL is earlier than ``now`` (keys, TTL and ``extra`` when scanning; keys and
    TTL from the index). A later ``now`` also finds items about to expire."""
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


def unchanged(image: Item, attributes: tuple[str, ...]) -> Item:
    """A ConditionExpression (with its names and values) that holds while each of ``attributes``
    still has the value ``image`` has (or is still absent, if absent there)."""
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    terms = []
    for i, attribute in enumerate(dict.fromkeys(attributes)):
        names[f"#c{i}"] = attribute
        if attribute in image:
            values[f":c{i}"] = image[attribute]
            terms.append(f"#c{i} = :c{i}")
        else:
            terms.append(f"attribute_not_exists(#c{i})")
    condition: Item = {"ConditionExpression": " AND ".join(terms), "ExpressionAttributeNames": names}
    if values:
        condition["ExpressionAttributeValues"] = values
    return condition


def delete_as_read(
    dynamodb: Any, job: Job, image: Item, attributes: tuple[str, ...], should_stop: Callable[[], bool] = lambda: False
) -> str:
    """Delete the item only while ``attributes`` are as read in ``image``.

    DELETED: this call deleted it, including when a first attempt deleted it and its reply was lost
    (the retry then finds nothing). GONE: it had disappeared before the call (TTL or another
    writer). CHANGED: it was renewed or changed since it was read, and was left alone.
    """
    try:
        with_backoff(
            lambda: dynamodb.delete_item(
                TableName=job.table,
                Key=key_of(job, image),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **unchanged(image, attributes),
            ),
            should_stop,
        )
    except ClientError as error:
        if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
        if error.response.get("Item"):
            return CHANGED
        return DELETED if retried(error) else GONE
    return DELETED


def count_unindexed_expired(dynamodb: Any, job: Job, now: float, tally: Tally, item_count: Callable[[], int]) -> int:
    """Expired items the expiry index never returns to this job: without the shard attribute, or with
    a value that is none of the index's shards ("7" of 4 shards, a Number): counted in one randomly
    chosen Scan segment of about ``unindexed_check_items`` items (a sample each run; ``item_count``
    is the table's ItemCount, which sizes the segments)."""
    index = job.expiry_index
    if not index or not job.unindexed_check_items:
        return 0
    segments = max(1, min(1_000_000, math.ceil(item_count() / job.unindexed_check_items)))
    names, values = _ttl_condition(job, now)
    shards = {f":s{n}": {"S": str(n)} for n in range(index.shards)}  # all of them, whatever this job reads
    kwargs: Item = {
        "TableName": job.table,
        "Select": "COUNT",
        "FilterExpression": f"#ttl < :now AND (attribute_not_exists(#shard) OR NOT #shard IN ({', '.join(shards)}))",
        "ExpressionAttributeNames": {**names, "#shard": index.shard_attribute},
        "ExpressionAttributeValues": {**values, **shards},
    }
    if segments > 1:
        kwargs |= {"Segment": random.randrange(segments), "TotalSegments": segments}
    found = 0
    while True:
        page = dynamodb.scan(**kwargs)
        tally.add("unindexed_items_read", page.get("ScannedCount", 0))
        found += page.get("Count", 0)
        if "LastEvaluatedKey" not in page:
            return found
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
