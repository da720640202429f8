"""The one ownership rule: an S3 object (and a multipart upload on its key) may be deleted only if,
at delete time, no item names it and it is not marked kept.

"Names it" is judged by the attribute that holds the key (``s3.key_attribute``), never by parsing
the key and never by one item's primary key alone: the items naming an object are found on the
owner index (a global secondary index whose hash key is the key attribute), or, without one, by a
consistent Scan filtered on that attribute. Items the caller has just deleted (the sweep's own
conditional delete, or TTL's deletion a stream record reports) are ``released``: they may still
show on the index for a moment, so each is confirmed gone, or naming another key, by a consistent
GetItem on the table. Every other item that names the object keeps it.

Every deleting path asks this module: the sweep (objects and uploads of deleted items, orphaned
objects and orphaned uploads), the stream cascade, and the CLI, which runs the same work.

Consistency window: a global secondary index is eventually consistent. An item written within the
index's propagation delay (usually well under a second; AWS gives no bound) before the check may be
missed. Orphan passes only consider objects and uploads older than their grace (an hour at least),
and an object whose item is being written is normally newer than that; the sweep and the stream
cascade check after the item naming the object was deleted, so only a second item naming the same
key, written in that window, could be missed. Without an owner index the check is a consistent Scan:
exact, and billed for the whole table on every check."""

from collections.abc import Callable, Iterable
from typing import Any

from expiry.runtime.aws_clients import with_backoff
from expiry.runtime.dynamodb.items import text_value
from expiry.runtime.jobs.config import Job
from expiry.runtime.jobs.run_control import Tally
from expiry.runtime.s3 import objects

Item = dict[str, Any]
NAMED, MARKED = "named", "marked"


def _never() -> bool:
    return False


class Ownership:
    """The rule, bound to one job's table and bucket."""

    def __init__(
        self, job: Job, dynamodb: Any, s3: Any, tally: Tally, should_stop: Callable[[], bool] = _never
    ) -> None:
        assert job.s3 is not None, "the ownership rule judges the objects of a job with an s3 section"
        self.job, self.settings, self.dynamodb, self.s3 = job, job.s3, dynamodb, s3
        self.tally, self.should_stop = tally, should_stop

    def _key(self, item: Item) -> tuple[tuple[str, str], ...]:
        return tuple((name, repr(item[name])) for name in self.job.key_attributes)

    def holders(self, object_key: str) -> list[Item]:
        """Primary keys of the items whose key attribute is ``object_key``."""
        names = {"#k": self.settings.key_attribute}
        projection = {f"#p{i}": name for i, name in enumerate(self.job.key_attributes)}
        kwargs: Item = {
            "TableName": self.job.table,
            "ExpressionAttributeNames": {**names, **projection},
            "ExpressionAttributeValues": {":k": {"S": object_key}},
            "ProjectionExpression": ", ".join(projection),
        }
        if self.settings.owner_index:
            call = self.dynamodb.query
            kwargs |= {"IndexName": self.settings.owner_index, "KeyConditionExpression": "#k = :k"}
        else:
            call = self.dynamodb.scan
            kwargs |= {"FilterExpression": "#k = :k", "ConsistentRead": True}
        found: list[Item] = []
        while True:
            page = with_backoff(lambda: call(**kwargs), self.should_stop)
            self.tally.add("ownership_reads")
            found += [{name: item[name] for name in self.job.key_attributes} for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return found
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _still_names(self, key: Item, object_key: str) -> bool:
        """Whether the item ``key`` exists now (consistent read) and names ``object_key``."""
        response = with_backoff(
            lambda: self.dynamodb.get_item(
                TableName=self.job.table,
                Key=key,
                ConsistentRead=True,
                ProjectionExpression="#k",
                ExpressionAttributeNames={"#k": self.settings.key_attribute},
            ),
            self.should_stop,
        )
        item = response.get("Item")
        return item is not None and text_value(item, self.settings.key_attribute) == object_key

    def named(self, object_key: str, released: Iterable[Item] = (), confirm: bool = True) -> bool:
        """Whether an item other than the ``released`` ones names ``object_key``. With ``confirm``
        (delete time) a released item still naming it counts too; without (planning, before the
        caller's own delete) released items are taken as gone."""
        released_keys = {self._key(item) for item in released}
        for holder in self.holders(object_key):
            if self._key(holder) not in released_keys:
                return True
            if confirm and self._still_names(holder, object_key):
                return True
        return False

    def named_among(self, object_keys: list[str]) -> set[str]:
        """Which of ``object_keys`` some item names: a Query each on the owner index, or one
        consistent Scan of every item holding the key attribute."""
        if self.settings.owner_index:
            return {key for key in object_keys if self.holders(key)}
        kwargs: Item = {
            "TableName": self.job.table,
            "ConsistentRead": True,
            "FilterExpression": "attribute_exists(#k)",
            "ProjectionExpression": "#k",
            "ExpressionAttributeNames": {"#k": self.settings.key_attribute},
        }
        wanted, found = set(object_keys), set[str]()
        while True:
            page = with_backoff(lambda: self.dynamodb.scan(**kwargs), self.should_stop)
            self.tally.add("ownership_reads")
            values = (text_value(item, self.settings.key_attribute) for item in page.get("Items", []))
            found |= {value for value in values if value in wanted}
            if "LastEvaluatedKey" not in page:
                return found
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def refusal(self, object_key: str, released: Iterable[Item] = (), confirm: bool = True) -> str | None:
        """Why the object must be kept (``named``: an item names it; ``marked``: it carries the keep
        mark), or None when the rule lets it be deleted."""
        if self.named(object_key, released, confirm):
            return NAMED
        if self.settings.keep_marker == "tag" and objects.is_marked_kept(self.s3, self.settings.bucket, object_key):
            return MARKED
        return None
