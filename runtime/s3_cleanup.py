"""What TTL cannot delete: the S3 objects and multipart uploads items point to, stuck uploads and
objects whose owning item is gone."""

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from runtime.job_config import Job, OrphanedObjects, S3Cascade
from runtime.run_control import Tally

Item = dict[str, Any]
DELETE_BATCH = 1000
BATCH_GET = 100


def text_value(item: Item, attribute: str | None) -> str | None:
    value = item.get(attribute) if attribute else None
    return value.get("S") if isinstance(value, dict) else None


def error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def abort_upload(s3: Any, bucket: str, key: str, upload_id: str) -> bool:
    """Abort a multipart upload; False when it no longer exists (not an error)."""
    try:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except ClientError as error:
        if error_code(error) in ("NoSuchUpload", "404"):
            return False
        raise
    return True


def cascade(s3: Any, settings: S3Cascade, item: Item, tally: Tally, dry_run: bool) -> None:
    """Abort the item's multipart upload and delete its object unless its status says keep it."""
    key = text_value(item, settings.key_attribute)
    if not key:
        return
    upload_id = text_value(item, settings.upload_id_attribute)
    keep = text_value(item, settings.status_attribute) in settings.keep_statuses
    if dry_run:
        tally.add("uploads_to_abort", bool(upload_id))
        tally.add("objects_to_delete", not keep)
        return
    if upload_id and abort_upload(s3, settings.bucket, key, upload_id):
        tally.add("uploads_aborted")
    if not keep:
        s3.delete_object(Bucket=settings.bucket, Key=key)  # a missing key is a success in S3
        tally.add("objects_deleted")


def age_seconds(value: Any, now: float) -> float | None:
    """Age of a creation time held as epoch seconds (N) or ISO-8601 text (S); None if unreadable."""
    if isinstance(value, dict) and "N" in value:
        return now - float(Decimal(value["N"]))
    if isinstance(value, dict) and "S" in value:
        try:
            moment = dt.datetime.fromisoformat(value["S"].replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return now - moment.timestamp()
    return None


@dataclass(frozen=True)
class Orphan:
    key: str
    owner_id: str


def orphan_candidates(s3: Any, bucket: str, settings: OrphanedObjects, now: float, tally: Tally) -> Iterator[Orphan]:
    """Objects under the prefix, older than the threshold, whose key names an owner id."""
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=settings.prefix):
        for obj in page.get("Contents", []):
            tally.add("objects_listed")
            if now - obj["LastModified"].timestamp() < settings.older_than_seconds:
                continue
            match = settings.id_pattern.search(obj["Key"])
            if not match:
                continue
            owner = match.group("id") if "id" in settings.id_pattern.groupindex else match.group(1)
            if owner:
                yield Orphan(obj["Key"], owner)


def existing_ids(dynamodb: Any, job: Job, ids: set[str], tally: Tally) -> set[str]:
    """Which of ``ids`` still have an item. An id whose check failed counts as existing (kept)."""
    (hash_key,) = job.key_attributes
    found: set[str] = set()
    ordered = sorted(ids)
    for start in range(0, len(ordered), BATCH_GET):
        chunk = ordered[start : start + BATCH_GET]
        request = {
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


def delete_orphans(s3: Any, dynamodb: Any, job: Job, batch: list[Orphan], tally: Tally, dry_run: bool) -> None:
    """Check the owners of up to 1,000 candidates just before deleting those still without one."""
    assert job.s3 is not None and len(batch) <= DELETE_BATCH
    owners = existing_ids(dynamodb, job, {orphan.owner_id for orphan in batch}, tally)
    doomed = [orphan.key for orphan in batch if orphan.owner_id not in owners]
    tally.add("orphans_kept", len(batch) - len(doomed))
    if not doomed:
        return
    if dry_run:
        tally.add("orphans_to_delete", len(doomed))
        return
    response = s3.delete_objects(
        Bucket=job.s3.bucket, Delete={"Objects": [{"Key": key} for key in doomed], "Quiet": True}
    )
    errors = response.get("Errors", [])
    for error in errors:
        tally.error("delete_orphan", RuntimeError(error.get("Code")), key=error.get("Key"))
    tally.add("orphans_deleted", len(doomed) - len(errors))
