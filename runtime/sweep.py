"""The sweep job: expired items and what they point to in S3, stuck uploads, orphaned objects.

Order matters for never deleting live data: an item is deleted first, on the condition that it is
still expired, and its S3 object and upload are cleaned only from the image that delete returned.
An item renewed after it was read is therefore kept with its object. If the cascade then fails,
the object is an orphan, which the orphaned-objects pass (and S3's lifecycle rule for incomplete
uploads) removes later; the reverse order could delete the object of a renewed item."""

import importlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Any

from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError

from runtime import s3_cleanup
from runtime.expired_items import delete_if_expired, find_expired, key_of, pages
from runtime.job_config import HOOK_MODULE, Job
from runtime.run_control import Tally
from runtime.ttl import is_expired

Item = dict[str, Any]
Hook = Callable[[dict[str, Any], Job], bool | None]
CHUNK = 256


def load_hook(job: Job) -> Hook | None:
    """The application's ``expiry_hooks.before_delete(item, job)``, bundled next to runtime/."""
    if not job.hook:
        return None
    module = importlib.import_module(HOOK_MODULE)
    return module.before_delete


def chunks(items: Iterable[Item], size: int = CHUNK) -> Iterator[list[Item]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _plain(item: Item) -> dict[str, Any]:
    deserializer = TypeDeserializer()
    return {name: deserializer.deserialize(value) for name, value in item.items()}


class Sweeper:
    """One run of a sweep job, with its clients, clock, deadline and counters."""

    def __init__(
        self,
        job: Job,
        dynamodb: Any,
        s3: Any,
        now: float,
        should_stop: Callable[[], bool],
        tally: Tally,
        hook: Hook | None = None,
    ) -> None:
        self.job, self.dynamodb, self.s3, self.now = job, dynamodb, s3, now
        self.should_stop, self.tally, self.hook = should_stop, tally, hook

    def run(self) -> None:
        with ThreadPoolExecutor(max_workers=self.job.workers) as pool:
            self.pool = pool
            self.sweep_expired()
            if self.job.stuck_uploads and not self.should_stop():
                self.sweep_stuck_uploads()
            if self.job.orphaned_objects and not self.should_stop():
                self.sweep_orphaned_objects()
        if self.should_stop():
            self.tally.add("stopped_early")

    def _each(self, items: Iterable[Item], action: Callable[[Item], None]) -> None:
        """Run ``action`` on items concurrently; a failure is counted and never ends the run."""

        def guarded(item: Item) -> None:
            if self.should_stop():
                self.tally.add("not_reached")
                return
            try:
                action(item)
            except Exception as error:  # noqa: BLE001 - one item's failure is reported, the run goes on
                self.tally.error(action.__name__, error, key=key_of(self.job, item))

        for chunk in chunks(items):
            list(self.pool.map(guarded, chunk))
            if self.should_stop():
                return

    # Expired items -------------------------------------------------------------------------

    def sweep_expired(self) -> None:
        s3 = self.job.s3
        extra = (s3.key_attribute, s3.upload_id_attribute, s3.status_attribute) if s3 else ()
        found = find_expired(
            self.dynamodb, self.job, self.now, self.tally, self.should_stop, tuple(e for e in extra if e)
        )
        self._each(found, self.expire_item)

    def _current(self, key: Item) -> Item | None:
        response = self.dynamodb.get_item(TableName=self.job.table, Key=key, ConsistentRead=True)
        return response.get("Item")

    def expire_item(self, item: Item) -> None:
        self.tally.add("expired_found")
        key = key_of(self.job, item)
        if self.hook or self.job.dry_run:
            current = self._current(key)
            if current is None or not is_expired(current, self.job.ttl_attribute, self.now):
                self.tally.add("items_skipped")
                return
            if self.hook and self.hook(_plain(current), self.job) is False:
                self.tally.add("items_kept_by_hook")
                return
            if self.job.dry_run:
                self.tally.add("items_to_delete")
                if self.job.s3:
                    s3_cleanup.cascade(self.s3, self.job.s3, current, self.tally, dry_run=True)
                return
        old = delete_if_expired(self.dynamodb, self.job, key, self.now)
        if old is None:
            self.tally.add("items_skipped")
            return
        self.tally.add("items_deleted")
        if self.job.s3:
            s3_cleanup.cascade(self.s3, self.job.s3, old, self.tally, dry_run=False)

    # Stuck uploads -------------------------------------------------------------------------

    def sweep_stuck_uploads(self) -> None:
        stuck, s3 = self.job.stuck_uploads, self.job.s3
        assert stuck and s3 and s3.status_attribute and s3.upload_id_attribute
        names = [*self.job.key_attributes, stuck.created_attribute, s3.key_attribute, s3.upload_id_attribute]
        placeholders = {f"#p{i}": name for i, name in enumerate(dict.fromkeys(names))}
        kwargs = {
            "TableName": self.job.table,
            "FilterExpression": "#status = :stuck",
            "ProjectionExpression": ", ".join(placeholders),
            "ExpressionAttributeNames": {**placeholders, "#status": s3.status_attribute},
            "ExpressionAttributeValues": {":stuck": {"S": stuck.status}},
        }
        found = pages(self.dynamodb.scan, kwargs, self.tally, self.should_stop, self.job.page_size)
        self._each(found, self.unstick_upload)

    def unstick_upload(self, item: Item) -> None:
        stuck, s3 = self.job.stuck_uploads, self.job.s3
        assert stuck and s3 and s3.status_attribute and s3.upload_id_attribute
        age = s3_cleanup.age_seconds(item.get(stuck.created_attribute), self.now)
        key, upload_id = (
            s3_cleanup.text_value(item, s3.key_attribute),
            s3_cleanup.text_value(item, s3.upload_id_attribute),
        )
        if age is None or age < stuck.older_than_seconds or not key or not upload_id:
            return
        self.tally.add("stuck_found")
        try:
            parts = self.s3.list_parts(Bucket=s3.bucket, Key=key, UploadId=upload_id, MaxParts=1).get("Parts", [])
        except ClientError as error:
            if s3_cleanup.error_code(error) not in ("NoSuchUpload", "404"):
                raise
            parts = []
        new_status = stuck.partial_status if parts else stuck.aborted_status
        if self.job.dry_run:
            self.tally.add("items_to_mark" if parts else "uploads_to_abort")
            return
        if not self._set_status(item, new_status, upload_id):
            self.tally.add("items_skipped")
            return
        if parts:
            self.tally.add("items_marked")
        elif s3_cleanup.abort_upload(self.s3, s3.bucket, key, upload_id):
            self.tally.add("uploads_aborted")

    def _set_status(self, item: Item, status: str, upload_id: str) -> bool:
        """Set the status only if the item is still stuck on the same upload; False if it moved on."""
        stuck, s3 = self.job.stuck_uploads, self.job.s3
        assert stuck and s3 and s3.status_attribute and s3.upload_id_attribute
        try:
            self.dynamodb.update_item(
                TableName=self.job.table,
                Key=key_of(self.job, item),
                UpdateExpression="SET #status = :new",
                ConditionExpression="#status = :stuck AND #upload = :upload",
                ExpressionAttributeNames={"#status": s3.status_attribute, "#upload": s3.upload_id_attribute},
                ExpressionAttributeValues={
                    ":new": {"S": status},
                    ":stuck": {"S": stuck.status},
                    ":upload": {"S": upload_id},
                },
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    # Orphaned objects ----------------------------------------------------------------------

    def sweep_orphaned_objects(self) -> None:
        orphans, s3 = self.job.orphaned_objects, self.job.s3
        assert orphans and s3
        candidates = s3_cleanup.orphan_candidates(self.s3, s3.bucket, orphans, self.now, self.tally)
        batch: list[s3_cleanup.Orphan] = []
        for orphan in candidates:
            batch.append(orphan)
            if len(batch) == s3_cleanup.DELETE_BATCH:
                self._delete_orphans(batch)
                batch = []
                if self.should_stop():
                    return
        if batch:
            self._delete_orphans(batch)

    def _delete_orphans(self, batch: list[s3_cleanup.Orphan]) -> None:
        try:
            s3_cleanup.delete_orphans(self.s3, self.dynamodb, self.job, batch, self.tally, self.job.dry_run)
        except Exception as error:  # noqa: BLE001 - the batch is reported, the run goes on
            self.tally.error("delete_orphans", error, objects=len(batch))
