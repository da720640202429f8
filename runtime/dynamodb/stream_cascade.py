"""The TTL-stream cascade: what TTL cannot delete, cleaned from the old images of TTL's own deletions.

DynamoDB delivers every item TTL deletes on the table's stream as a REMOVE record by the service
principal dynamodb.amazonaws.com, with the item's last image. This reads no table items to find
work and deletes none (TTL did); for each such record it archives the image (optional), marks the
object of an item in a kept status, or aborts the item's multipart upload and deletes its object,
but only as the ownership rule allows (runtime/ownership.py): an object that any item names (the
expired one written anew, or another item sharing the key) or that is marked kept stays. Every step
is idempotent and each archived image has its own object, so a retried batch repeats nothing
harmful; a record that fails is reported by its sequence number (partial batch response) and Lambda
retries from it."""

import datetime as dt
import gzip
import hashlib
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from expiry.runtime.dynamodb.items import plain, text_value
from expiry.runtime.jobs.config import Job
from expiry.runtime.jobs.run_control import Tally
from expiry.runtime.ownership import NAMED, Ownership
from expiry.runtime.s3 import objects

Record = dict[str, Any]
TTL_PRINCIPAL = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
# The event source mapping's filter: only TTL's deletions reach the function.
TTL_DELETIONS_FILTER = {
    "eventName": ["REMOVE"],
    "userIdentity": {"type": ["Service"], "principalId": ["dynamodb.amazonaws.com"]},
}


def is_ttl_deletion(record: Record) -> bool:
    return record.get("eventName") == "REMOVE" and record.get("userIdentity") == TTL_PRINCIPAL


def archive_key(prefix: str, record: Record) -> str:
    """One object per expired item, named by its record (sequence number and event id): a retried
    batch, whatever records it starts from, writes the same keys again instead of second copies."""
    when = dt.datetime.fromtimestamp(float(record["dynamodb"]["ApproximateCreationDateTime"]), tz=dt.UTC)
    event_id = hashlib.sha256(record.get("eventID", "").encode()).hexdigest()[:12]
    return f"{prefix}dt={when:%Y-%m-%d}/{record['dynamodb']['SequenceNumber']}-{event_id}.jsonl.gz"


def archive_lines(records: list[Record]) -> bytes:
    """The old images as JSON lines (plain values), gzip-compressed with a fixed timestamp."""
    lines = [
        json.dumps(
            {
                "expired_at": float(r["dynamodb"]["ApproximateCreationDateTime"]),
                "sequence": r["dynamodb"]["SequenceNumber"],
                "item": plain(r["dynamodb"]["OldImage"]),
            },
            default=str,
            sort_keys=True,
        )
        for r in records
    ]
    return gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)


class StreamCascade:
    """One batch of stream records."""

    def __init__(self, job: Job, dynamodb: Any, s3: Any, tally: Tally, should_stop: Callable[[], bool]) -> None:
        self.job, self.dynamodb, self.s3, self.tally, self.should_stop = job, dynamodb, s3, tally, should_stop
        self.ownership = Ownership(job, dynamodb, s3, tally, should_stop) if job.s3 else None
        self.decided: set[str] = set()  # objects a record of this batch has taken a decision on
        self._lock = threading.Lock()

    def _kept(self, old: dict[str, Any]) -> bool:
        s3 = self.job.s3
        return bool(s3 and text_value(old, s3.status_attribute) in s3.keep_statuses)

    def _first_decision(self, key: str) -> bool:
        """One decision per object per batch: True for the first record naming ``key``."""
        with self._lock:
            first = key not in self.decided
            self.decided.add(key)
            return first

    def run(self, records: list[Record]) -> dict[str, Any]:
        """Handle ``records``; the sequence numbers to retry from (the earliest failure, if any)."""
        expired = []
        for record in records:
            if not is_ttl_deletion(record):
                self.tally.add("records_not_ttl")  # the filter should let none through: never acted on
            elif "OldImage" not in record.get("dynamodb", {}):
                self.tally.error("stream", RuntimeError("no OldImage: the stream view must carry old images"))
            else:
                expired.append(record)
        self.tally.add("ttl_deletions", len(expired))
        if expired and self.job.archive:
            self.archive(expired)  # before any cascade: a failed archive fails the batch, which is retried
        failed: list[str] = []
        if expired and self.job.s3:
            # Records of kept items first: their objects are marked before a record of another item
            # naming the same object (both gone in this batch) could take it for unowned.
            kept = [r for r in expired if self._kept(r["dynamodb"]["OldImage"])]
            ordered = kept + [r for r in expired if not self._kept(r["dynamodb"]["OldImage"])]
            with ThreadPoolExecutor(max_workers=self.job.workers) as pool:
                outcomes = list(pool.map(self.cascade, kept)) + list(pool.map(self.cascade, ordered[len(kept) :]))
            failed = [r["dynamodb"]["SequenceNumber"] for r, ok in zip(ordered, outcomes, strict=True) if not ok]
        first_failure = min(failed, key=int) if failed else None
        return {"batch_item_failures": [{"itemIdentifier": first_failure}] if first_failure else []}

    def archive(self, records: list[Record]) -> None:
        archive = self.job.archive
        assert archive is not None
        if self.job.dry_run:
            self.tally.add("items_to_archive", len(records))
            return

        def put(record: Record) -> None:
            self.s3.put_object(
                Bucket=archive.bucket,
                Key=archive_key(archive.prefix, record),
                Body=archive_lines([record]),
                ContentType="application/x-ndjson",
                ContentEncoding="gzip",
            )
            self.tally.add("items_archived")

        with ThreadPoolExecutor(max_workers=self.job.workers) as pool:
            list(pool.map(put, records))  # the first failure raises: the batch is retried

    def cascade(self, record: Record) -> bool:
        """Clean or keep what one expired item pointed at; False when it failed (logged)."""
        old = record["dynamodb"]["OldImage"]
        try:
            self._cascade(old)
        except Exception as error:  # noqa: BLE001 - reported as a batch item failure, retried by Lambda
            key = {name: old.get(name) for name in self.job.key_attributes}
            self.tally.error("stream_cascade", error, key=plain({k: v for k, v in key.items() if v}))
            return False
        return True

    def _cascade(self, old: dict[str, Any]) -> None:
        s3 = self.job.s3
        assert s3 is not None and self.ownership is not None
        key = text_value(old, s3.key_attribute)
        if not key:
            return
        if not self._first_decision(key):
            self.tally.add("objects_decided_in_batch")  # another record of the batch names it: its call
            return
        if self._kept(old):
            if s3.keep_marker == "tag" and objects.object_exists(self.s3, s3.bucket, key):
                if self.job.dry_run:  # what the real run would count: only an object not marked yet
                    self.tally.add("objects_to_mark", not objects.is_marked_kept(self.s3, s3.bucket, key))
                elif objects.mark_kept(self.s3, s3.bucket, key):
                    self.tally.add("objects_marked_kept")
            return
        released = [{name: old[name] for name in self.job.key_attributes}]
        if reason := self.ownership.refusal(key, released):
            # An item names it (ItemsSkipped: the expired item written anew, or another sharing the key),
            # or it carries the keep mark.
            self.tally.add("items_skipped" if reason == NAMED else "objects_kept_marked")
            return
        upload_id = text_value(old, s3.upload_id_attribute)
        exists = objects.object_exists(self.s3, s3.bucket, key)
        if self.job.dry_run:  # what the real run would count: only an upload that still exists
            self.tally.add("uploads_to_abort", bool(upload_id) and self._upload_exists(key, upload_id))
            self.tally.add("objects_to_delete", exists)
            return
        if upload_id and objects.abort_upload(self.s3, s3.bucket, key, upload_id):
            self.tally.add("uploads_aborted")
        if exists:
            self.s3.delete_object(Bucket=s3.bucket, Key=key)
            self.tally.add("objects_deleted")

    def _upload_exists(self, key: str, upload_id: str | None) -> bool:
        s3 = self.job.s3
        assert s3 is not None and upload_id
        return objects.upload_has_parts(self.s3, s3.bucket, key, upload_id) is not None
