"""Items as DynamoDB returns them: text attributes, plain values, batches, and which owners exist."""

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, TypeVar

from boto3.dynamodb.types import TypeDeserializer

from expiry.runtime.jobs.config import Job
from expiry.runtime.jobs.run_control import Tally

Item = dict[str, Any]
CHUNK = 256
BATCH_GET = 100
T = TypeVar("T")


def text_value(item: Item, attribute: str | None) -> str | None:
    value = item.get(attribute) if attribute else None
    return value.get("S") if isinstance(value, dict) else None


def chunks(items: Iterable[T], size: int = CHUNK) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def plain(value: Item) -> dict[str, Any]:
    deserializer = TypeDeserializer()
    return {name: deserializer.deserialize(attribute) for name, attribute in value.items()}


def existing_ids(dynamodb: Any, job: Job, ids: set[str], tally: Tally) -> set[str]:
    """Which of ``ids`` have an item, read by the table's hash key. An id whose check failed counts
    as existing (its objects are kept)."""
    (hash_key,) = job.key_attributes
    found: set[str] = set()
    ordered = sorted(ids)
    for start in range(0, len(ordered), BATCH_GET):
        chunk = ordered[start : start + BATCH_GET]
        request: dict[str, Any] = {
            job.table: {
                "Keys": [{hash_key: {"S": owner}} for owner in chunk],
                "ProjectionExpression": "#k",
                "ExpressionAttributeNames": {"#k": hash_key},
                "ConsistentRead": True,
            }
        }
        try:
            for _ in range(5):
                response = dynamodb.batch_get_item(RequestItems=request)
                found.update(item[hash_key]["S"] for item in response["Responses"].get(job.table, []))
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
            if request:
                raise RuntimeError(f"{len(request[job.table]['Keys'])} keys unprocessed after retries")
        except Exception as error:  # noqa: BLE001 - counted and logged; the ids are kept
            tally.error("check_owner", error, ids=len(chunk))
            found.update(chunk)
    return found
