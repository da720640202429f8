"""The TTL-stream cascade against moto (in-process and moto_server): records shaped as DynamoDB
Streams delivers TTL's deletions (REMOVE by dynamodb.amazonaws.com, with the old image), on the
upload document's layout. moto's TTL never deletes, so the tests delete and hand over the records."""

import gzip
import io
import json
from itertools import count
from typing import Any

import pytest
from tests_support import emf_totals
from uploads_world import BUCKET, NOW, S3_SETTINGS, TABLE, create_table, object_keys, put_session, upload_ids

from expiry.runtime.dynamodb.stream_cascade import TTL_DELETIONS_FILTER, archive_key, is_ttl_deletion
from expiry.runtime.handlers.work import stream_work
from expiry.runtime.jobs import metrics
from expiry.runtime.jobs.config import parse_job
from expiry.runtime.jobs.runner import run_job

ARCHIVE = "archive-bucket"
SEQUENCE = count(1000)


def cascade_job(**settings: Any):
    raw = {
        "kind": "stream-cascade",
        "job_name": "upload-cascade",
        "table_name": TABLE,
        "key_attributes": ["uploadSessionId"],
        "ttl_attribute": "ttl",
        "s3": S3_SETTINGS,
        "archive_bucket": ARCHIVE,
        "archive_prefix": "expired/",
        "workers": 4,
        **settings,
    }
    return parse_job({k: v for k, v in raw.items() if v is not None})


def expire(aws, session_id: str, by_ttl: bool = True) -> dict[str, Any]:
    """Delete the item as TTL would and return the stream record DynamoDB would deliver."""
    key = {"uploadSessionId": {"S": session_id}}
    old = aws.dynamodb.delete_item(TableName=TABLE, Key=key, ReturnValues="ALL_OLD")["Attributes"]
    sequence = next(SEQUENCE)
    record: dict[str, Any] = {
        "eventID": f"event-{sequence}",
        "eventName": "REMOVE",
        "eventSource": "aws:dynamodb",
        "dynamodb": {
            "ApproximateCreationDateTime": NOW,
            "Keys": key,
            "OldImage": old,
            "SequenceNumber": str(sequence),
            "SizeBytes": 120,
            "StreamViewType": "OLD_IMAGE",
        },
    }
    if by_ttl:
        record["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    return record


def cascade(aws, records: list[dict[str, Any]], s3: Any = None, **settings: Any) -> dict[str, Any]:
    stream = io.StringIO()
    clients = {"dynamodb": aws.dynamodb, "s3": s3 or aws.s3}
    summary = run_job(cascade_job(**settings), stream_work(clients.__getitem__, records), None, lambda: NOW, stream)
    summary["emf"] = emf_totals([json.loads(line) for line in stream.getvalue().splitlines()])
    return summary


@pytest.fixture
def world(aws):
    create_table(aws.dynamodb)
    aws.s3.create_bucket(Bucket=BUCKET)
    aws.s3.create_bucket(Bucket=ARCHIVE)
    return aws


def video(aws, name: str) -> str:
    key = f"uploads/2025-08-21/{name}.mp4"
    aws.s3.put_object(Bucket=BUCKET, Key=key, Body=b"video")
    return key


def test_ttl_deletions_cascade_keep_finished_videos_and_archive(world):
    s3 = world.s3
    put_session(world.dynamodb, "created", NOW - 60, key=video(world, "created"), status="created")
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="uploads/2025-08-21/mp.mp4")["UploadId"]
    put_session(world.dynamodb, "mp", NOW - 60, key="uploads/2025-08-21/mp.mp4", upload_id=upload, status="created")
    put_session(world.dynamodb, "done", NOW - 60, key=video(world, "done"), status="uploaded")
    put_session(world.dynamodb, "live", NOW + 3600, key=video(world, "live"), status="created")
    records = [expire(world, name) for name in ("created", "mp", "done")]
    summary = cascade(world, records)
    assert object_keys(s3) == {"uploads/2025-08-21/done.mp4", "uploads/2025-08-21/live.mp4"}
    assert upload_ids(s3) == set()
    tags = s3.get_object_tagging(Bucket=BUCKET, Key="uploads/2025-08-21/done.mp4")["TagSet"]
    assert {"Key": "expiry-kept", "Value": "true"} in tags  # no later orphan pass will take it
    emf = summary["emf"]
    assert (emf[metrics.OBJECTS_DELETED], emf[metrics.UPLOADS_ABORTED], emf[metrics.OBJECTS_MARKED_KEPT]) == (1, 1, 1)
    assert emf[metrics.ITEMS_ARCHIVED] == 3 and summary["batch_item_failures"] == []
    archived = s3.list_objects_v2(Bucket=ARCHIVE)["Contents"]  # one object per expired item
    assert len(archived) == 3 and all(a["Key"].startswith("expired/dt=") for a in archived)
    lines = []
    for record in records:
        body = s3.get_object(Bucket=ARCHIVE, Key=archive_key("expired/", record))["Body"].read()
        lines += [json.loads(line) for line in gzip.decompress(body).decode().splitlines()]
    assert [line["item"]["uploadSessionId"] for line in lines] == ["created", "mp", "done"]
    assert lines[2]["item"]["status"] == "uploaded" and lines[0]["expired_at"] == NOW


def test_a_retried_batch_repeats_nothing_harmful(world):
    put_session(world.dynamodb, "a", NOW - 60, key=video(world, "a"), status="created")
    put_session(world.dynamodb, "b", NOW - 60, key=video(world, "b"), status="uploaded")
    records = [expire(world, "a"), expire(world, "b")]
    first = cascade(world, records)
    again = cascade(world, records)
    assert object_keys(world.s3) == {"uploads/2025-08-21/b.mp4"}
    assert first["emf"][metrics.OBJECTS_DELETED] == 1 and again["emf"][metrics.OBJECTS_DELETED] == 0
    assert again["emf"][metrics.OBJECTS_MARKED_KEPT] == 0  # already marked
    assert len(world.s3.list_objects_v2(Bucket=ARCHIVE)["Contents"]) == 2  # the same keys, written again
    cascade(world, records[1:])  # Lambda retries from a failed record: a batch that starts elsewhere
    assert len(world.s3.list_objects_v2(Bucket=ARCHIVE)["Contents"]) == 2


def test_only_ttl_deletions_are_acted_on(world):
    put_session(world.dynamodb, "user-deleted", NOW - 60, key=video(world, "user-deleted"), status="created")
    record = expire(world, "user-deleted", by_ttl=False)  # an application's DeleteItem, not TTL
    summary = cascade(world, [record])
    assert object_keys(world.s3) == {"uploads/2025-08-21/user-deleted.mp4"}
    assert summary["counts"]["records_not_ttl"] == 1 and "items_archived" not in summary["counts"]


def test_an_object_whose_item_was_written_anew_is_kept(world):
    key = video(world, "again")
    put_session(world.dynamodb, "again", NOW - 60, key=key, status="created")
    record = expire(world, "again")
    put_session(world.dynamodb, "again", NOW + 3600, key=key, status="created")  # the session came back
    summary = cascade(world, [record])
    assert object_keys(world.s3) == {key} and summary["emf"][metrics.ITEMS_SKIPPED] == 1


def test_dry_run_writes_nothing(world):
    put_session(world.dynamodb, "a", NOW - 60, key=video(world, "a"), status="created")
    put_session(world.dynamodb, "b", NOW - 60, key=video(world, "b"), status="uploaded")
    records = [expire(world, "a"), expire(world, "b")]
    summary = cascade(world, records, dry_run=True)
    assert object_keys(world.s3) == {"uploads/2025-08-21/a.mp4", "uploads/2025-08-21/b.mp4"}
    assert "Contents" not in world.s3.list_objects_v2(Bucket=ARCHIVE)
    counts = summary["counts"]
    assert (counts["objects_to_delete"], counts["objects_to_mark"], counts["items_to_archive"]) == (1, 1, 2)


def test_the_dry_run_counts_what_the_real_run_does(world):
    s3 = world.s3
    put_session(world.dynamodb, "a", NOW - 60, key=video(world, "a"), status="created")
    put_session(world.dynamodb, "b", NOW - 60, key=video(world, "b"), status="uploaded")
    live = s3.create_multipart_upload(Bucket=BUCKET, Key="uploads/2025-08-21/mp.mp4")["UploadId"]
    put_session(world.dynamodb, "mp", NOW - 60, key="uploads/2025-08-21/mp.mp4", upload_id=live, status="created")
    put_session(world.dynamodb, "gone", NOW - 60, key="uploads/2025-08-21/gone.mp4", upload_id="aborted-already")
    records = [expire(world, name) for name in ("a", "b", "mp", "gone")]
    planned = cascade(world, records, dry_run=True)["counts"]
    done = cascade(world, records)["counts"]
    assert (planned["objects_to_delete"], planned["objects_to_mark"], planned["uploads_to_abort"]) == (1, 1, 1)
    assert (done["objects_deleted"], done["objects_marked_kept"], done["uploads_aborted"]) == (1, 1, 1)
    assert planned["items_to_archive"] == done["items_archived"] == 4


def test_a_failing_record_is_reported_and_the_rest_go_on(aws_in_process):
    aws = aws_in_process
    create_table(aws.dynamodb)
    aws.s3.create_bucket(Bucket=BUCKET)
    aws.s3.create_bucket(Bucket=ARCHIVE)
    for name in ("a", "b", "c"):
        put_session(aws.dynamodb, name, NOW - 60, key=video(aws, name), status="created")
    records = [expire(aws, name) for name in ("a", "b", "c")]

    class FailingS3:
        def __getattr__(self, name: str) -> Any:
            return getattr(aws.s3, name)

        def delete_object(self, **kwargs: Any) -> Any:
            if kwargs["Key"].endswith("/b.mp4"):
                raise ConnectionError("reset")
            return aws.s3.delete_object(**kwargs)

    summary = cascade(aws, records, s3=FailingS3())
    assert object_keys(aws.s3) == {"uploads/2025-08-21/b.mp4"}
    assert summary["batch_item_failures"] == [{"itemIdentifier": records[1]["dynamodb"]["SequenceNumber"]}]
    assert summary["emf"][metrics.CLEANUP_ERRORS] == 1


def test_the_filter_and_the_check_agree():
    ttl = {"eventName": "REMOVE", "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"}}
    assert is_ttl_deletion(ttl)
    assert not is_ttl_deletion({**ttl, "eventName": "MODIFY"})
    assert not is_ttl_deletion({"eventName": "REMOVE"})
    assert TTL_DELETIONS_FILTER["userIdentity"]["principalId"] == ["dynamodb.amazonaws.com"]


def test_a_stream_job_needs_something_to_do():
    with pytest.raises(ValueError, match="EXPIRY_JOB: s3: a stream-cascade job needs s3"):
        cascade_job(s3=None, archive_bucket=None, archive_prefix=None)
    with pytest.raises(ValueError, match="EXPIRY_JOB: archive_prefix: must be a key prefix ending in '/'"):
        cascade_job(archive_prefix="expired")
