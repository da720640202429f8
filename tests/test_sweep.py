"""The sweep job against moto (in-process and moto_server): expired items, their S3 objects and
uploads, stuck uploads, orphaned objects, dry run, early stop, renewal races and metrics."""

import io
import json
import sys
from typing import Any

import pytest
from botocore.exceptions import ClientError
from uploads_world import (
    ALLOW,
    BUCKET,
    INDEX_SETTINGS,
    NOW,
    S3_SETTINGS,
    TABLE,
    create_table,
    object_keys,
    put_session,
    run,
    session_ids,
    sweep_job,
    upload_ids,
)

from expiry.runtime.handlers.work import sweep_work
from expiry.runtime.jobs import metrics
from expiry.runtime.jobs.runner import run_job


class Proxy:
    """A client whose chosen methods are wrapped; everything else passes through."""

    def __init__(self, inner: Any, **wrappers: Any) -> None:
        self._inner, self._wrappers = inner, wrappers

    def __getattr__(self, name: str) -> Any:
        if name in self._wrappers:
            return lambda **kwargs: self._wrappers[name](self._inner, **kwargs)
        return getattr(self._inner, name)


def clients_of(aws, dynamodb: Any = None, s3: Any = None):
    return lambda service: {"dynamodb": dynamodb or aws.dynamodb, "s3": s3 or aws.s3}[service]


@pytest.fixture
def world(aws):
    create_table(aws.dynamodb)
    aws.s3.create_bucket(Bucket=BUCKET)
    return aws


def test_nothing_expired(world):
    put_session(world.dynamodb, "live", NOW + 3600)
    put_session(world.dynamodb, "no-ttl", None)
    result = run(sweep_job(), sweep_work(clients_of(world)))
    assert result.counts.get("items_deleted", 0) == 0
    assert session_ids(world.dynamodb) == {"live", "no-ttl"}
    assert result.emf[metrics.SWEEP_SUCCEEDED] == 1 and result.emf[metrics.ITEMS_DELETED] == 0


@pytest.mark.parametrize("expiry_index", [False, True], ids=["scan", "expiry-index"])
def test_many_pages_deletes_only_expired(world, expiry_index):
    if expiry_index:
        world.dynamodb.delete_table(TableName=TABLE)
        create_table(world.dynamodb, expiry_index=True)
    for i in range(120):
        put_session(world.dynamodb, f"old-{i}", NOW - 60 - i, shard=True)
    for i in range(80):
        put_session(world.dynamodb, f"live-{i}", NOW + 60 + i, shard=True)
    job = sweep_job(page_size=25, **(INDEX_SETTINGS if expiry_index else {}), breaker=ALLOW)
    result = run(job, sweep_work(clients_of(world)))
    assert result.counts["items_deleted"] == 120
    assert session_ids(world.dynamodb) == {f"live-{i}" for i in range(80)}
    assert result.counts["read_calls"] > 4  # paged
    if expiry_index:
        assert result.counts["items_read"] == 120  # the index holds and returns only what expired
    else:
        assert result.counts["items_read"] == 200  # a scan reads every item


def test_parallel_scan_segments_find_everything(world):
    for i in range(90):
        put_session(world.dynamodb, f"old-{i}", NOW - 10)
    result = run(sweep_job(scan_segments=4, page_size=10, breaker=ALLOW), sweep_work(clients_of(world)))
    assert result.counts["items_deleted"] == 90 and session_ids(world.dynamodb) == set()


def test_cascade_deletes_object_and_aborts_upload(world):
    s3 = world.s3
    s3.put_object(Bucket=BUCKET, Key="uploads/a/video.mp4", Body=b"x")
    s3.put_object(Bucket=BUCKET, Key="uploads/done/video.mp4", Body=b"x")
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="uploads/b/video.mp4")["UploadId"]
    put_session(world.dynamodb, "a", NOW - 10, key="uploads/a/video.mp4", status="uploading")
    put_session(world.dynamodb, "b", NOW - 10, key="uploads/b/video.mp4", upload_id=upload, status="uploading")
    put_session(world.dynamodb, "gone-upload", NOW - 10, key="uploads/c/video.mp4", upload_id="no-such-upload")
    put_session(world.dynamodb, "missing-object", NOW - 10, key="uploads/never/video.mp4")
    put_session(world.dynamodb, "done", NOW - 10, key="uploads/done/video.mp4", status="uploaded")
    result = run(sweep_job(s3=S3_SETTINGS), sweep_work(clients_of(world)))
    assert session_ids(world.dynamodb) == set()
    assert object_keys(s3) == {"uploads/done/video.mp4"}  # uploaded: kept, and marked
    tags = s3.get_object_tagging(Bucket=BUCKET, Key="uploads/done/video.mp4")["TagSet"]
    assert {"Key": "expiry-kept", "Value": "true"} in tags
    assert upload_ids(s3) == set()
    assert result.counts["items_deleted"] == 5
    assert result.counts["uploads_aborted"] == 1  # NoSuchUpload is not an error, nor an abort
    assert result.counts.get("errors", 0) == 0
    # Counts of effects: one object existed and was deleted, one upload existed and was aborted.
    assert result.emf[metrics.OBJECTS_DELETED] == 1 and result.emf[metrics.UPLOADS_ABORTED] == 1
    assert result.emf[metrics.OBJECTS_MARKED_KEPT] == 1


def test_item_renewed_between_find_and_delete_is_kept_with_its_object(world):
    world.s3.put_object(Bucket=BUCKET, Key="uploads/r/video.mp4", Body=b"x")
    put_session(world.dynamodb, "renewed", NOW - 10, key="uploads/r/video.mp4")
    put_session(world.dynamodb, "expired", NOW - 10)

    def renew_then_delete(inner: Any, **kwargs: Any) -> Any:
        if kwargs["Key"]["uploadSessionId"]["S"] == "renewed":
            inner.update_item(
                TableName=TABLE,
                Key=kwargs["Key"],
                UpdateExpression="SET #t = :t",
                ExpressionAttributeNames={"#t": "ttl"},
                ExpressionAttributeValues={":t": {"N": str(NOW + 86400)}},
            )
        return inner.delete_item(**kwargs)

    dynamodb = Proxy(world.dynamodb, delete_item=renew_then_delete)
    result = run(sweep_job(s3=S3_SETTINGS), sweep_work(clients_of(world, dynamodb=dynamodb)))
    assert session_ids(world.dynamodb) == {"renewed"}
    assert object_keys(world.s3) == {"uploads/r/video.mp4"}
    assert (result.counts["items_deleted"], result.counts["items_skipped"]) == (1, 1)
    assert result.emf[metrics.ITEMS_SKIPPED] == 1


STUCK_SINCE_CREATED = {"status": "created", "older_than_seconds": 3600, "since_attribute": "createdAt"}


def test_stuck_uploads_abort_or_mark_for_review(world):
    s3 = world.s3
    empty = s3.create_multipart_upload(Bucket=BUCKET, Key="uploads/e/v.mp4")["UploadId"]
    partial = s3.create_multipart_upload(Bucket=BUCKET, Key="uploads/p/v.mp4")["UploadId"]
    s3.upload_part(Bucket=BUCKET, Key="uploads/p/v.mp4", UploadId=partial, PartNumber=1, Body=b"x" * 10)
    young = s3.create_multipart_upload(Bucket=BUCKET, Key="uploads/y/v.mp4")["UploadId"]
    old = NOW - 2 * 3600
    put_session(
        world.dynamodb, "empty", NOW + 86400, key="uploads/e/v.mp4", upload_id=empty, status="created", created=old
    )
    put_session(
        world.dynamodb,
        "partial",
        NOW + 86400,
        key="uploads/p/v.mp4",
        upload_id=partial,
        status="created",
        created="2020-01-01T00:00:00Z",
    )
    put_session(
        world.dynamodb, "young", NOW + 86400, key="uploads/y/v.mp4", upload_id=young, status="created", created=NOW - 60
    )
    job = sweep_job(s3=S3_SETTINGS, stuck_uploads=STUCK_SINCE_CREATED)
    result = run(job, sweep_work(clients_of(world)))
    items = {i["uploadSessionId"]["S"]: i for i in world.dynamodb.scan(TableName=TABLE)["Items"]}
    assert "empty" not in items  # aborted, and its session deleted as the document does
    assert items["partial"]["status"]["S"] == "partial"  # kept for review, upload untouched
    assert items["young"]["status"]["S"] == "created"
    assert upload_ids(s3) == {partial, young}
    assert (result.counts["uploads_aborted"], result.counts["items_marked"]) == (1, 1)
    assert result.emf[metrics.ITEMS_MARKED] == 1


def test_stuck_upload_that_moved_on_is_left_alone(world):
    upload = world.s3.create_multipart_upload(Bucket=BUCKET, Key="uploads/m/v.mp4")["UploadId"]
    put_session(
        world.dynamodb,
        "moving",
        NOW + 86400,
        key="uploads/m/v.mp4",
        upload_id=upload,
        status="created",
        created=NOW - 7200,
    )

    def complete_first(inner: Any, **kwargs: Any) -> Any:
        inner.update_item(
            TableName=TABLE,
            Key=kwargs["Key"],
            UpdateExpression="SET #s = :s",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":s": {"S": "uploaded"}},
        )
        return inner.delete_item(**kwargs)

    dynamodb = Proxy(world.dynamodb, delete_item=complete_first)
    job = sweep_job(s3=S3_SETTINGS, stuck_uploads=STUCK_SINCE_CREATED)
    result = run(job, sweep_work(clients_of(world, dynamodb=dynamodb)))
    assert upload_ids(world.s3) == {upload}
    assert result.counts["items_skipped"] == 1 and result.counts.get("uploads_aborted", 0) == 0


ORPHANS = {
    "prefix": "uploads/",
    "older_than_seconds": 86400,
    "id_pattern": r"^uploads/\d{4}-\d{2}-\d{2}/(?P<id>[^/]+)\.[^/.]+$",
}


def test_orphaned_objects_are_deleted_and_owned_ones_kept(world):
    for owner in ("owned", "orphan-1", "orphan-2"):
        world.s3.put_object(Bucket=BUCKET, Key=f"uploads/2025-08-21/{owner}.mp4", Body=b"x")
    world.s3.put_object(Bucket=BUCKET, Key="other/2025-08-21/orphan-3.mp4", Body=b"x")  # outside the prefix
    world.s3.put_object(Bucket=BUCKET, Key="uploads/notes.txt", Body=b"x")  # the rule does not parse it
    put_session(world.dynamodb, "owned", NOW + 86400)
    result = run(sweep_job(s3=S3_SETTINGS, orphaned_objects=ORPHANS), sweep_work(clients_of(world)))
    assert object_keys(world.s3) == {
        "uploads/2025-08-21/owned.mp4",
        "other/2025-08-21/orphan-3.mp4",
        "uploads/notes.txt",
    }
    assert result.counts["orphans_deleted"] == 2 and result.emf[metrics.ORPHANS_DELETED] == 2
    assert result.counts["objects_unparsed"] == 1


def test_young_objects_are_not_orphans(world):
    world.s3.put_object(Bucket=BUCKET, Key="uploads/2025-08-21/new.mp4", Body=b"x")
    job = sweep_job(s3=S3_SETTINGS, orphaned_objects={**ORPHANS, "older_than_seconds": 4 * 86400})
    run(job, sweep_work(clients_of(world)))
    assert object_keys(world.s3) == {"uploads/2025-08-21/new.mp4"}


def test_an_object_marked_kept_is_never_an_orphan(world):
    key = "uploads/2025-08-21/finished.mp4"
    world.s3.put_object(Bucket=BUCKET, Key=key, Body=b"x", Tagging="expiry-kept=true")
    world.s3.put_object(Bucket=BUCKET, Key="uploads/2025-08-21/junk.mp4", Body=b"x")
    world.s3.put_object(Bucket=BUCKET, Key="uploads/2025-08-21/live.mp4", Body=b"x")
    put_session(world.dynamodb, "live", NOW + 86400)
    result = run(sweep_job(s3=S3_SETTINGS, orphaned_objects=ORPHANS), sweep_work(clients_of(world)))
    assert object_keys(world.s3) == {key, "uploads/2025-08-21/live.mp4"}
    assert result.counts["orphans_kept_marked"] == 1 and result.counts["orphans_deleted"] == 1


def test_orphans_are_kept_when_the_existence_check_fails(aws_in_process):
    aws = aws_in_process
    create_table(aws.dynamodb)
    aws.s3.create_bucket(Bucket=BUCKET)
    aws.s3.put_object(Bucket=BUCKET, Key="uploads/2025-08-21/x.mp4", Body=b"x")

    def failing(inner: Any, **kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": "InternalServerError", "Message": "boom"}}, "BatchGetItem")

    dynamodb = Proxy(aws.dynamodb, batch_get_item=failing)
    result = run(sweep_job(s3=S3_SETTINGS, orphaned_objects=ORPHANS), sweep_work(clients_of(aws, dynamodb=dynamodb)))
    assert object_keys(aws.s3) == {"uploads/2025-08-21/x.mp4"}
    assert result.counts["errors"] == 1 and result.emf[metrics.CLEANUP_ERRORS] == 1
    assert any(line.get("event") == "cleanup_error" and line["action"] == "check_owner" for line in result.lines)


def test_dry_run_writes_nothing(world):
    s3 = world.s3
    s3.put_object(Bucket=BUCKET, Key="uploads/2025-08-21/a.mp4", Body=b"x")
    s3.put_object(Bucket=BUCKET, Key="uploads/2025-08-21/orphan.mp4", Body=b"x")
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="uploads/2025-08-21/s.mp4")["UploadId"]
    put_session(world.dynamodb, "a", NOW - 10, key="uploads/2025-08-21/a.mp4")
    put_session(
        world.dynamodb,
        "s",
        NOW + 86400,
        key="uploads/2025-08-21/s.mp4",
        upload_id=upload,
        status="created",
        created=NOW - 7200,
    )
    before = (world.dynamodb.scan(TableName=TABLE)["Items"], object_keys(s3), upload_ids(s3))
    job = sweep_job(
        dry_run=True,
        s3=S3_SETTINGS,
        orphaned_objects=ORPHANS,
        stuck_uploads=STUCK_SINCE_CREATED,
    )
    result = run(job, sweep_work(clients_of(world)))
    after = (world.dynamodb.scan(TableName=TABLE)["Items"], object_keys(s3), upload_ids(s3))
    assert sorted(map(json.dumps, before[0])) == sorted(map(json.dumps, after[0])) and before[1:] == after[1:]
    assert result.summary["dry_run"] is True
    counts = result.summary["plan"]["counts"]
    assert (counts["items_to_delete"], counts["objects_to_delete"], counts["uploads_to_abort"]) == (2, 1, 1)
    assert counts["orphans_to_delete"] == 1
    assert result.summary["plan"]["sample"]["orphans_to_delete"] == ["uploads/2025-08-21/orphan.mp4"]
    assert result.emf[metrics.ITEMS_DELETED] == 0


def test_stops_before_the_deadline_and_the_next_run_continues(world):
    for i in range(60):
        put_session(world.dynamodb, f"old-{i}", NOW - 10)
    first = run(sweep_job(page_size=10, workers=1, breaker=ALLOW), sweep_work(clients_of(world)), stop_after=20)
    assert first.summary["stopped_early"] is True and first.emf[metrics.STOPPED_EARLY] == 1
    left = len(session_ids(world.dynamodb))
    assert 0 < left < 60
    second = run(sweep_job(page_size=10, breaker=ALLOW), sweep_work(clients_of(world)))
    assert second.summary["stopped_early"] is False
    assert second.counts["items_deleted"] == left and session_ids(world.dynamodb) == set()


def test_max_items_bounds_a_run(world):
    for i in range(30):
        put_session(world.dynamodb, f"old-{i}", NOW - 10)
    result = run(sweep_job(max_items=12), sweep_work(clients_of(world)))
    assert result.counts["items_deleted"] == 12 and len(session_ids(world.dynamodb)) == 18


def test_one_failing_item_is_counted_and_the_run_goes_on(aws_in_process):
    aws = aws_in_process
    create_table(aws.dynamodb)
    for i in range(5):
        put_session(aws.dynamodb, f"old-{i}", NOW - 10)

    def fail_one(inner: Any, **kwargs: Any) -> Any:
        if kwargs["Key"]["uploadSessionId"]["S"] == "old-3":
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "bad"}}, "DeleteItem")
        return inner.delete_item(**kwargs)

    result = run(sweep_job(), sweep_work(clients_of(aws, dynamodb=Proxy(aws.dynamodb, delete_item=fail_one))))
    assert session_ids(aws.dynamodb) == {"old-3"}
    assert result.counts["items_deleted"] == 4 and result.counts["errors"] == 1
    assert result.emf[metrics.SWEEP_SUCCEEDED] == 1 and result.emf[metrics.CLEANUP_ERRORS] == 1


def test_throttling_is_retried_with_backoff(moto_server):
    # Over HTTP, so that the injected answer replaces the request (in-process moto answers first).
    from aws import aws_backend

    with aws_backend("moto_server", moto_server) as aws:
        throttled_run(aws)


def throttled_run(aws: Any) -> None:
    create_table(aws.dynamodb)
    put_session(aws.dynamodb, "old", NOW - 10)
    throttled = {"n": 0}

    def throttle_twice(request: Any, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        if throttled["n"] < 2:
            throttled["n"] += 1
            body = json.dumps({"__type": "ThrottlingException", "message": "slow down"}).encode()
            raw = type("Raw", (), {"stream": lambda self, **k: iter([body])})()
            return AWSResponse(request.url, 400, {"x-amzn-RequestId": "t"}, raw)
        return None

    aws.dynamodb.meta.events.register_first("before-send.dynamodb.DeleteItem", throttle_twice)
    result = run(sweep_job(), sweep_work(clients_of(aws)))
    assert throttled["n"] == 2
    assert result.counts["items_deleted"] == 1 and result.counts.get("errors", 0) == 0


def test_a_failed_run_emits_its_failure_metric_and_raises(aws):
    stream = io.StringIO()
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        run_job(sweep_job(), sweep_work(clients_of(aws)), None, clock=lambda: NOW, stream=stream)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    emf = next(line for line in lines if "_aws" in line)
    assert emf[metrics.SWEEP_FAILED] == 1 and metrics.SWEEP_SUCCEEDED not in emf
    assert any(line.get("event") == "cleanup_failed" for line in lines)


def test_emf_line_shape(world):
    put_session(world.dynamodb, "old", NOW - 10)
    emf = run(sweep_job(namespace="Team/Cleanup"), sweep_work(clients_of(world))).emf
    directive = emf["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "Team/Cleanup"
    assert directive["Dimensions"] == [["Job", "Table"]]
    assert (emf["Job"], emf["Table"]) == ("video-sweeper", TABLE)
    names = [metric["Name"] for metric in directive["Metrics"]]
    assert set(names) <= set(metrics.ALL_METRICS)
    assert all(isinstance(emf[name], int | float) for name in names)
    assert abs(emf["_aws"]["Timestamp"] / 1000 - __import__("time").time()) < 60


def test_hook_sees_each_expired_item_first_and_can_keep_it(world, tmp_path, monkeypatch):
    (tmp_path / "expiry_hooks.py").write_text(
        "SEEN = []\n"
        "def before_delete(item, job):\n"
        "    SEEN.append(item['uploadSessionId'])\n"
        "    return item.get('status') != 'legal-hold'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("expiry_hooks", None)
    put_session(world.dynamodb, "plain", NOW - 10)
    put_session(world.dynamodb, "held", NOW - 10, status="legal-hold")
    result = run(sweep_job(hooks_path="keep_hook.py"), sweep_work(clients_of(world)))
    import expiry_hooks

    assert sorted(expiry_hooks.SEEN) == ["held", "plain"]
    assert session_ids(world.dynamodb) == {"held"}
    assert result.counts["items_kept_by_hook"] == 1
    sys.modules.pop("expiry_hooks", None)
