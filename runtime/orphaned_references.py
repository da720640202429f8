"""Orphaned references (the maintenance guide's index entries): items that point to an item, in the
same or another table, that no longer exists. Each target is checked just before its references
are deleted, and each delete is conditional on the reference being unchanged."""

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError

from runtime.expired_items import key_of, pages
from runtime.job_config import Job, References
from runtime.run_control import Tally
from runtime.sweep import chunks

Item = dict[str, Any]


def find_references(dynamodb: Any, job: Job, tally: Tally, should_stop: Callable[[], bool]) -> Iterator[Item]:
    """Items selected by a key prefix (or by having the select attribute) that carry a reference."""
    refs = job.references
    assert refs is not None
    projected = list(dict.fromkeys([*job.key_attributes, refs.reference_attribute]))
    placeholders = {f"#p{i}": name for i, name in enumerate(projected)}
    select = "begins_with(#sel, :prefix)" if refs.select_prefix else "attribute_exists(#sel)"
    kwargs: Item = {
        "TableName": job.table,
        "FilterExpression": f"{select} AND attribute_exists(#ref)",
        "ProjectionExpression": ", ".join(placeholders),
        "ExpressionAttributeNames": {**placeholders, "#sel": refs.select_attribute, "#ref": refs.reference_attribute},
    }
    if refs.select_prefix:
        kwargs["ExpressionAttributeValues"] = {":prefix": {"S": refs.select_prefix}}
    for count, item in enumerate(pages(dynamodb.scan, kwargs, tally, should_stop, job.page_size), start=1):
        yield item
        if count >= job.max_items:
            tally.add("limit_reached")
            return


def target_exists(dynamodb: Any, refs: References, value: Item) -> bool:
    """Whether any item of the target table has ``value`` as its hash key (works with a range key)."""
    response = dynamodb.query(
        TableName=refs.target_table,
        KeyConditionExpression="#k = :v",
        ExpressionAttributeNames={"#k": refs.target_key_attribute},
        ExpressionAttributeValues={":v": value},
        ProjectionExpression="#k",
        Limit=1,
        ConsistentRead=True,
    )
    return bool(response.get("Items"))


def delete_orphaned(dynamodb: Any, job: Job, items: list[Item], tally: Tally, pool: ThreadPoolExecutor) -> None:
    """Check the targets of ``items`` now, then delete those whose target is gone."""
    refs = job.references
    assert refs is not None

    def check(target: tuple[str, Item]) -> tuple[str, bool]:
        name, value = target
        try:
            return name, target_exists(dynamodb, refs, value)
        except Exception as error:  # noqa: BLE001 - a failed check keeps the references
            tally.error("check_target", error, target=name)
            return name, True

    targets = {_as_key(item[refs.reference_attribute]): item[refs.reference_attribute] for item in items}
    exists = dict(pool.map(check, targets.items()))

    def remove(item: Item) -> None:
        if exists[_as_key(item[refs.reference_attribute])]:
            return
        if job.dry_run:
            tally.add("orphans_to_delete")
            return
        try:
            dynamodb.delete_item(
                TableName=job.table,
                Key=key_of(job, item),
                ConditionExpression="#ref = :ref",
                ExpressionAttributeNames={"#ref": refs.reference_attribute},
                ExpressionAttributeValues={":ref": item[refs.reference_attribute]},
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                tally.add("items_skipped")
                return
            tally.error("delete_reference", error, key=key_of(job, item))
            return
        except Exception as error:  # noqa: BLE001 - one item's failure never ends the run
            tally.error("delete_reference", error, key=key_of(job, item))
            return
        tally.add("orphans_deleted")

    list(pool.map(remove, items))


def _as_key(value: Item) -> str:
    return repr(sorted(value.items()))


def sweep_references(dynamodb: Any, job: Job, tally: Tally, should_stop: Callable[[], bool]) -> None:
    with ThreadPoolExecutor(max_workers=job.workers) as pool:
        for chunk in chunks(find_references(dynamodb, job, tally, should_stop)):
            tally.add("references_checked", len(chunk))
            delete_orphaned(dynamodb, job, chunk, tally, pool)
            if should_stop():
                tally.add("stopped_early")
                return
