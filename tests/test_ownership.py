"""The one ownership rule, on every deleting path: an object (or an upload on its key) goes only if
no item names it by its key attribute, checked at delete time, and it is not marked kept. Issue 18's
findings 1, 2 and 8 as fixed cases, with and without the owner index."""

import io
from typing import Any

import pytest
from botocore.exceptions import ClientError
from test_stream_cascade import ARCHIVE, cascade_job, expire
from test_sweep import Proxy
from uploads_world import (
    BUCKET,
    NOW,
    OWNER_INDEX,
    S3_SETTINGS,
    create_table,
    object_keys,
    put_session,
    run,
    sweep_job,
    upload_ids,
)

from expiry.runtime.handlers.work import stream_work, sweep_work
from expiry.runtime.jobs.config import parse_job
from expiry.runtime.jobs.run_control import Tally
from expiry.runtime.jobs.runner import run_job
from expiry.runtime.ownership import MARKED, NAMED, Ownership

DAY = "2025-08-21"
ORPHANS = {
    "prefix": "uploads/",
    "older_than_seconds": 86400,
    "id_pattern": r"^uploads/\d{4}-\d{2}-\d{2}/(?P<id>[^/]+)\.[^/.]+$",  # the stack's default
}
OLD_DEFAULT = r"^uploads/\d{4}-\d{2}-\d{2}/(?P<id>[^/.]+)\.[^/]+$"  # read `take.2` as `take`


@pytest.fixture(params=["owner-index", "scan"])
def world(aws, request):
    create_table(aws.dynamodb, owner_index=request.param == "owner-index")
    aws.s3.create_bucket(Bucket=BUCKET)
    aws.s3.create_bucket(Bucket=ARCHIVE)
    aws.method = request.param
    return aws


def s3_settings(world: Any) -> dict[str, Any]:
    return {**S3_SETTINGS, **({"owner_index": OWNER_INDEX} if world.method == "owner-index" else {})}


def clients(world: Any):
    return lambda service: {"dynamodb": world.dynamodb, "s3": world.s3}[service]


def cascade(world: Any, records: list[dict[str, Any]], dry_run: bool = False) -> dict[str, Any]:
    """A stream-cascade batch with the world's ownership method."""
    job = cascade_job(s3=s3_settings(world), dry_run=dry_run)
    return run_job(job, stream_work(clients(world), records), None, lambda: NOW, io.StringIO())


def video(world: Any, name: str) -> str:
    key = f"uploads/{DAY}/{name}.mp4"
    world.s3.put_object(Bucket=BUCKET, Key=key, Body=b"video")
    return key


def test_the_stream_keeps_an_object_a_live_session_names(world):
    """Finding 1: an expired intruder naming a live session's video deleted it."""
    key = video(world, "owner-live")
    put_session(world.dynamodb, "owner-live", NOW + 30 * 86400, key=key, status="uploaded")
    put_session(world.dynamodb, "intruder-1", NOW - 86400, key=key, status="created")
    summary = cascade(world, [expire(world, "intruder-1")])
    assert object_keys(world.s3) == {key}
    assert summary["counts"]["items_skipped"] == 1 and "objects_deleted" not in summary["counts"]


def test_the_stream_keeps_the_finished_video_of_an_expired_uploaded_session(world):
    """Finding 1, second form: the finished video of an expired (not yet TTL-deleted) uploaded session."""
    key = video(world, "done")
    put_session(world.dynamodb, "done", NOW - 60, key=key, status="uploaded")
    put_session(world.dynamodb, "intruder-2", NOW - 86400, key=key, status="created")
    cascade(world, [expire(world, "intruder-2")])
    assert object_keys(world.s3) == {key}


def test_the_stream_never_deletes_an_object_marked_kept(world):
    key = video(world, "finished")
    world.s3.put_object_tagging(Bucket=BUCKET, Key=key, Tagging={"TagSet": [{"Key": "expiry-kept", "Value": "true"}]})
    put_session(world.dynamodb, "stale", NOW - 60, key=key, status="created")
    summary = cascade(world, [expire(world, "stale")])
    assert object_keys(world.s3) == {key} and summary["counts"]["objects_kept_marked"] == 1


def test_the_sweep_keeps_an_object_another_session_names(world):
    key = video(world, "owner-live")
    upload = world.s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    put_session(world.dynamodb, "owner-live", NOW + 30 * 86400, key=key, upload_id=upload, status="created")
    put_session(world.dynamodb, "intruder-1", NOW - 86400, key=key, upload_id=upload, status="created")
    put_session(world.dynamodb, "alone", NOW - 86400, key=video(world, "alone"), status="created")
    job = sweep_job(s3=s3_settings(world))
    dry = run(sweep_job(s3=s3_settings(world), dry_run=True), sweep_work(clients(world)))
    result = run(job, sweep_work(clients(world)))
    assert object_keys(world.s3) == {key} and upload_ids(world.s3) == {upload}
    assert result.counts["items_deleted"] == 2 and result.counts["objects_deleted"] == 1
    assert dry.summary["plan"]["counts"] == result.summary["plan"]["counts"]
    assert dry.summary["plan"]["counts"]["objects_to_delete"] == 1


def test_an_object_named_again_after_the_plan_is_kept_at_delete_time(world):
    key = video(world, "gone")
    put_session(world.dynamodb, "gone", NOW - 60, key=key, status="created")
    original = world.dynamodb.delete_item

    def delete_then_rename(**kwargs: Any) -> Any:
        response = original(**kwargs)  # right after the item's delete, a new session takes the key
        put_session(world.dynamodb, "newcomer", NOW + 86400, key=key, status="created")
        return response

    proxy = type("Proxy", (), {"__getattr__": lambda _, name: getattr(world.dynamodb, name)})()
    proxy.delete_item = delete_then_rename
    result = run(sweep_job(s3=s3_settings(world)), sweep_work(lambda s: {"dynamodb": proxy, "s3": world.s3}[s]))
    assert object_keys(world.s3) == {key}
    assert result.counts["items_deleted"] == 1 and result.counts["objects_kept_at_delete"] == 1


@pytest.mark.parametrize("session_id", ["take.2", "a b", "c+d", "e%20f", "видео.1", "x.y.z"])
def test_an_orphan_pass_keeps_the_live_video_of_a_session_id_with_a_dot(world, session_id):
    """Finding 2: the old default pattern read `take.2` as `take`, found no such session, and deleted
    the live video. Both the fixed pattern and the rule by the key attribute keep it."""
    key = video(world, session_id)
    put_session(world.dynamodb, session_id, NOW + 86400, key=key, status="created")
    for plain in ("plain-1", "plain-2", "plain-3"):  # owners the rule finds: no "found no owner" refusal
        put_session(world.dynamodb, plain, NOW + 86400, key=video(world, plain), status="created")
    orphan = video(world, "nobody")
    for pattern in (OLD_DEFAULT, ORPHANS["id_pattern"]):
        job = sweep_job(s3=s3_settings(world), orphaned_objects={**ORPHANS, "id_pattern": pattern})
        run(job, sweep_work(clients(world)))
        assert key in object_keys(world.s3)
    assert orphan not in object_keys(world.s3)


def test_the_default_pattern_reads_every_id_the_layout_allows():
    job = sweep_job(s3=S3_SETTINGS, orphaned_objects=ORPHANS)
    assert job.orphaned_objects is not None
    for session_id in ("take.2", "a b", "c+d", "e%20f", "видео.1", "x.y.z", "trailing."):
        assert job.orphaned_objects.owner(f"uploads/{DAY}/{session_id}.mp4") == session_id
    for unparsed in (f"uploads/{DAY}/noext", f"uploads/{DAY}/a/b.mp4", f"x/uploads/{DAY}/a.mp4"):
        assert job.orphaned_objects.owner(unparsed) is None


def test_pending_uploads_whose_session_is_gone_are_aborted(world):
    """Finding 9: an upload of a session deleted before a crash stayed pending until the lifecycle rule."""
    left = f"uploads/{DAY}/crashed.mp4"
    orphaned = world.s3.create_multipart_upload(Bucket=BUCKET, Key=left)["UploadId"]
    live_key = f"uploads/{DAY}/live.2.mp4"
    live = world.s3.create_multipart_upload(Bucket=BUCKET, Key=live_key)["UploadId"]
    put_session(world.dynamodb, "live.2", NOW + 86400, key=live_key, upload_id=live, status="created")
    job = sweep_job(s3=s3_settings(world), orphaned_objects=ORPHANS)
    dry = run(sweep_job(s3=s3_settings(world), orphaned_objects=ORPHANS, dry_run=True), sweep_work(clients(world)))
    assert dry.summary["plan"]["counts"]["orphan_uploads_to_abort"] == 1 and upload_ids(world.s3) == {orphaned, live}
    result = run(job, sweep_work(clients(world)))
    assert upload_ids(world.s3) == {live}
    assert result.counts["uploads_aborted"] == 1 == result.emf["UploadsAborted"]


def test_the_stream_dry_run_counts_only_objects_it_would_mark(world):
    """Finding 8: the dry run counted objects already marked as objects to mark."""
    names = [f"done-{n}" for n in range(4)]
    for name in names:
        put_session(world.dynamodb, name, NOW - 60, key=video(world, name), status="uploaded")
    for name in names[:2]:
        mark = {"TagSet": [{"Key": "expiry-kept", "Value": "true"}]}
        world.s3.put_object_tagging(Bucket=BUCKET, Key=f"uploads/{DAY}/{name}.mp4", Tagging=mark)
    records = [expire(world, name) for name in names]
    planned = cascade(world, records, dry_run=True)["counts"]
    done = cascade(world, records)["counts"]
    assert planned["objects_to_mark"] == done["objects_marked_kept"] == 2


def test_the_rule_itself(world):
    key = video(world, "mine")
    put_session(world.dynamodb, "mine", NOW + 60, key=key)
    job = parse_job(
        {"kind": "sweep", "job_name": "j", "table_name": "upload-sessions", "key_attributes": ["uploadSessionId"]}
        | {"ttl_attribute": "ttl", "s3": s3_settings(world)}
    )
    rule = Ownership(job, world.dynamodb, world.s3, Tally())
    mine = {"uploadSessionId": {"S": "mine"}}
    assert rule.holders(key) == [mine]
    assert rule.refusal(key) == NAMED
    assert rule.refusal(key, released=[mine], confirm=False) is None  # planning: the item will go first
    assert rule.refusal(key, released=[mine]) == NAMED  # delete time: it is still there
    world.dynamodb.delete_item(TableName="upload-sessions", Key=mine)
    assert rule.refusal(key, released=[mine]) is None
    world.s3.put_object_tagging(Bucket=BUCKET, Key=key, Tagging={"TagSet": [{"Key": "expiry-kept", "Value": "true"}]})
    assert rule.refusal(key) == MARKED
    assert rule.named_among([key, "uploads/none.mp4"]) == set()


def test_a_403_for_a_missing_object_is_settled_by_listing_the_key(aws_in_process):
    """Finding 7: real S3 answers HeadObject (and GetObjectTagging) of a missing key with 403 when the
    caller may not list the bucket for that key; the sweep then errored on every run."""
    world = aws_in_process
    create_table(world.dynamodb, owner_index=True)
    world.s3.create_bucket(Bucket=BUCKET)
    put_session(world.dynamodb, "present", NOW - 60, key=video(world, "present"), status="created")
    put_session(world.dynamodb, "missing", NOW - 60, key=f"uploads/{DAY}/missing.mp4", status="created")

    def denied_when_missing(call: Any) -> Any:
        def wrapped(**kwargs: Any) -> Any:
            try:
                return call(**kwargs)
            except ClientError as error:
                if error.response["Error"]["Code"] in ("404", "NoSuchKey"):
                    raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadObject") from None
                raise

        return wrapped

    s3 = Proxy(
        world.s3,
        head_object=lambda inner, **kw: denied_when_missing(inner.head_object)(**kw),
        get_object_tagging=lambda inner, **kw: denied_when_missing(inner.get_object_tagging)(**kw),
    )
    settings = {**S3_SETTINGS, "owner_index": OWNER_INDEX}
    result = run(sweep_job(s3=settings), sweep_work(lambda s: {"dynamodb": world.dynamodb, "s3": s3}[s]))
    assert "errors" not in result.counts
    assert result.counts["items_deleted"] == 2 and result.counts["objects_deleted"] == 1
    assert object_keys(world.s3) == set()


def test_the_index_still_showing_the_deleted_item_does_not_keep_its_object(aws_in_process):
    """The consistency window, one side: a global secondary index may show an item for a moment after
    its delete. The rule confirms a released item with a consistent GetItem, so the lag keeps nothing
    that is gone; an item the index does not show yet is the window the rule relies on (README)."""
    world = aws_in_process
    create_table(world.dynamodb, owner_index=True)
    world.s3.create_bucket(Bucket=BUCKET)
    key = video(world, "lagging")
    put_session(world.dynamodb, "lagging", NOW - 60, key=key, status="created")
    stale = {"Items": [{"uploadSessionId": {"S": "lagging"}}], "Count": 1, "ScannedCount": 1}
    dynamodb = Proxy(
        world.dynamodb, query=lambda inner, **kw: stale if kw.get("IndexName") == OWNER_INDEX else inner.query(**kw)
    )
    settings = {**S3_SETTINGS, "owner_index": OWNER_INDEX}
    result = run(sweep_job(s3=settings), sweep_work(lambda s: {"dynamodb": dynamodb, "s3": world.s3}[s]))
    assert result.counts["items_deleted"] == 1 and result.counts["objects_deleted"] == 1
    assert object_keys(world.s3) == set()


@pytest.mark.parametrize("order", ["kept-last", "kept-first"])
def test_a_batch_with_a_finished_and_a_stale_session_of_one_object_keeps_and_marks_it(world, order):
    """Both sessions are gone by the time the batch runs: no item names the object any more. The kept
    record is handled first, so the finished video is marked before the other record is judged."""
    key = video(world, "finished")
    put_session(world.dynamodb, "finished", NOW - 60, key=key, status="uploaded")
    put_session(world.dynamodb, "stale", NOW - 60, key=key, status="created")
    names = ["stale", "finished"] if order == "kept-last" else ["finished", "stale"]
    records = [expire(world, name) for name in names]
    planned = cascade(world, records, dry_run=True)["counts"]
    done = cascade(world, records)["counts"]
    assert object_keys(world.s3) == {key}
    tags = world.s3.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]
    assert {"Key": "expiry-kept", "Value": "true"} in tags
    assert planned["objects_to_mark"] == done["objects_marked_kept"] == 1
    assert planned.get("objects_to_delete", 0) == done.get("objects_deleted", 0) == 0
