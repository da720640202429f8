"""S3 calls of the sweep: objects and multipart uploads items point to, the mark that keeps an
object of a finished item from ever being taken for an orphan, and orphan candidates."""

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from expiry.runtime.aws_clients import retried
from expiry.runtime.jobs.config import OrphanedObjects
from expiry.runtime.jobs.run_control import Tally

DELETE_BATCH = 1000
KEEP_TAG = {"Key": "expiry-kept", "Value": "true"}
MISSING = ("404", "NoSuchKey", "NotFound")
DENIED = ("403", "AccessDenied", "Forbidden")


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def listed(s3: Any, bucket: str, key: str) -> bool:
    """Whether ``key`` exists, by listing it (what a prefix-scoped s3:ListBucket always allows)."""
    page = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    return any(obj["Key"] == key for obj in page.get("Contents", []))


def object_exists(s3: Any, bucket: str, key: str) -> bool:
    """HeadObject; S3 answers a missing key with 403 instead of 404 unless the caller may list the
    bucket, and whether a prefix-scoped grant counts there is not documented: a 403 is settled by
    listing the key."""
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error_code(error) in MISSING:
            return False
        if error_code(error) in DENIED:
            return listed(s3, bucket, key)
        raise
    return True


def last_modified(s3: Any, bucket: str, key: str) -> float | None:
    """When the object was last written (epoch seconds), or None when it does not exist: HeadObject,
    a 403 settled by listing the key as in ``object_exists``."""
    try:
        stamp: dt.datetime = s3.head_object(Bucket=bucket, Key=key)["LastModified"]
    except ClientError as error:
        if error_code(error) in MISSING:
            return None
        if error_code(error) not in DENIED:
            raise
        page = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        found = [obj["LastModified"] for obj in page.get("Contents", []) if obj["Key"] == key]
        if not found:
            return None
        stamp = found[0]
    return stamp.timestamp()


def is_marked_kept(s3: Any, bucket: str, key: str) -> bool:
    """Whether the object carries the keep mark (False for a missing object)."""
    try:
        tags = s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    except ClientError as error:
        if error_code(error) in MISSING:
            return False
        if error_code(error) in DENIED and not listed(s3, bucket, key):
            return False
        raise
    return KEEP_TAG in tags


def mark_kept(s3: Any, bucket: str, key: str) -> bool:
    """Add the keep mark to the object's tags (S3 replaces the whole set, so the others are kept);
    False when it was already marked."""
    tags = s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    if KEEP_TAG in tags:
        return False
    s3.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": [*tags, KEEP_TAG]})
    return True


def upload_has_parts(s3: Any, bucket: str, key: str, upload_id: str) -> bool | None:
    """Whether a multipart upload has parts; None when the upload no longer exists."""
    try:
        return bool(s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id, MaxParts=1).get("Parts"))
    except ClientError as error:
        if error_code(error) in ("NoSuchUpload", "404"):
            return None
        raise


def abort_upload(s3: Any, bucket: str, key: str, upload_id: str) -> bool:
    """Abort a multipart upload; False when it was already gone before this call."""
    try:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except ClientError as error:
        if error_code(error) in ("NoSuchUpload", "404"):
            return retried(error)  # a first attempt whose reply was lost did abort it
        raise
    return True


def age_seconds(value: Any, now: float) -> float | None:
    """Age of a time held as epoch seconds (N) or ISO-8601 text (S); None if unreadable."""
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


def orphan_candidates(
    s3: Any, bucket: str, settings: OrphanedObjects, now: float, tally: Tally, skip: Callable[[str], bool]
) -> Iterator[Orphan]:
    """Objects under the prefix, old enough, not ``skip``ped, whose key the owner rule parses.
    A key the rule does not parse is never a candidate: it is counted and left alone."""
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=settings.prefix):
        for obj in page.get("Contents", []):
            tally.add("objects_listed")
            if now - obj["LastModified"].timestamp() < settings.older_than_seconds or skip(obj["Key"]):
                continue
            owner = settings.owner(obj["Key"])
            if not owner:
                tally.add("objects_unparsed")
                continue
            yield Orphan(obj["Key"], owner)


def delete_objects(s3: Any, bucket: str, keys: list[str], tally: Tally) -> int:
    """Delete up to 1,000 objects in one call; the number S3 did not report as failed."""
    assert len(keys) <= DELETE_BATCH
    response = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True})
    errors = response.get("Errors", [])
    for error in errors:
        tally.error("delete_orphan", RuntimeError(error.get("Code")), key=error.get("Key"))
    return len(keys) - len(errors)


@dataclass(frozen=True)
class PendingUpload:
    key: str
    upload_id: str
    owner_id: str


def orphan_upload_candidates(
    s3: Any, bucket: str, settings: OrphanedObjects, now: float, tally: Tally, decided: set[str]
) -> Iterator[PendingUpload]:
    """Multipart uploads under the prefix, started longer than the grace ago, on keys no decision of
    the run covers, whose key the owner rule parses (others are counted and left alone)."""
    paginator = s3.get_paginator("list_multipart_uploads")
    for page in paginator.paginate(Bucket=bucket, Prefix=settings.prefix):
        for upload in page.get("Uploads", []):
            tally.add("uploads_listed")
            if now - upload["Initiated"].timestamp() < settings.older_than_seconds or upload["Key"] in decided:
                continue
            owner = settings.owner(upload["Key"])
            if not owner:
                tally.add("uploads_unparsed")
                continue
            yield PendingUpload(upload["Key"], upload["UploadId"], owner)
