"""Acceptance: the upload system of the cleanup-Lambda document, laid out as the document lays it
out, swept by the archive the stack program builds (dev stack, dry run turned off as a user would),
over moto_server. Nothing live is deleted; the dry run is the plan; counts are of effects."""

import json

import pytest
from aws import make_client
from upload_system import NOW, World, create_table, deploy, invoke, ttl_deletes
from uploads_world import create_ledger

from expiry.runtime.jobs import metrics

HOUR, DAY = 3600, 86400


@pytest.fixture
def endpoint(moto_server):
    moto_server.reset()
    yield moto_server.url
    moto_server.reset()


def world_for(deployed, endpoint) -> World:
    dynamodb, s3 = make_client("dynamodb", endpoint), make_client("s3", endpoint)
    create_table(dynamodb, deployed.table_inputs)
    create_ledger(dynamodb, deployed.job["budget_table_name"])  # the sweepers' shared budget ledger
    s3.create_bucket(Bucket=deployed.bucket)
    return World(dynamodb, s3, deployed.table, deployed.bucket)


def populate(world: World) -> dict[str, set[str]]:
    """A day of the upload system: live sessions in every state, expired ones, orphans."""
    live = {world.session(f"live-{i}", NOW + 6 * HOUR + i, "created") for i in range(20)}
    live |= {world.session(f"live-mp-{i}", NOW + DAY, "created", multipart=True, parts=1) for i in range(5)}
    finished = {world.session(f"done-{i}", NOW + 2 * DAY, "uploaded") for i in range(8)}
    soon = {world.session(f"soon-{i}", NOW + 2 * HOUR, "uploaded") for i in range(3)}  # expires before next run
    expired_done = {world.session(f"old-done-{i}", NOW - 2 * HOUR, "uploaded") for i in range(4)}
    expired = {world.session(f"old-{i}", NOW - 30 * 60, "created") for i in range(5)}
    empty = {
        world.session(f"stuck-{i}", NOW - 2 * HOUR, "created", multipart=True, with_object=False) for i in range(3)
    }
    partial = {
        world.session(f"stuck-parts-{i}", NOW - 2 * HOUR, "created", multipart=True, parts=2, with_object=False)
        for i in range(2)
    }
    # Expired half an hour ago with parts uploaded: not stuck yet, so neither aborted nor marked.
    world.session("recent-parts", NOW - 30 * 60, "created", multipart=True, parts=1, with_object=False)
    orphans = {world.orphan(f"gone-{i}") for i in range(3)}
    world.s3.put_object(Bucket=world.bucket, Key="uploads/README.txt", Body=b"not an upload")
    return {
        "live": live,
        "finished": finished | soon | expired_done,
        "marked_now": soon | expired_done,
        "expired": expired,
        "empty": empty,
        "partial": partial,
        "orphans": orphans,
    }


def ids(keys: set[str]) -> set[str]:
    return {key.rsplit("/", 1)[1].split(".")[0] for key in keys}


def test_nothing_live_is_deleted_and_finished_videos_outlive_their_sessions(
    pulumi_mocks, tmp_path, monkeypatch, endpoint
):
    deployed = deploy(pulumi_mocks, tmp_path, monkeypatch, uploadsCascade="sweep", dryRun=False)
    world = world_for(deployed, endpoint)
    made = populate(world)
    first = invoke(deployed, tmp_path, endpoint)
    assert first.returncode == 0, first.stderr
    objects, items = world.objects(), world.items()
    assert made["live"] | made["finished"] <= objects  # live sessions' and finished videos' objects
    assert "uploads/README.txt" in objects  # the owner rule does not parse it: left alone
    assert not (made["expired"] | made["orphans"]) & objects
    assert ids(made["live"]) <= set(items)
    assert not ids(made["expired"] | made["empty"]) & set(items)
    assert {items[i]["status"]["S"] for i in ids(made["partial"])} == {"partial"}  # kept for a person
    assert items["recent-parts"]["status"]["S"] == "created" and len(world.uploads()) == 5 + 2 + 1
    assert made["marked_now"] <= world.marked()  # expired ones and those expiring before the next run
    assert first.summary["counts"]["objects_deleted"] == 5 and first.emf[metrics.OBJECTS_DELETED] == 5
    assert first.emf[metrics.UPLOADS_ABORTED] == 3 and first.emf[metrics.ORPHANS_DELETED] == 3
    assert first.emf[metrics.ITEMS_MARKED] == 2 and first.emf[metrics.OBJECTS_MARKED_KEPT] == 7
    assert first.emf[metrics.MASS_DELETION_REFUSED] == 0

    # TTL removes every session that has expired by the next runs; finished videos must stay.
    for session_id in ids(made["marked_now"]):
        world.dynamodb.delete_item(TableName=world.table, Key={"uploadSessionId": {"S": session_id}})
    world.dynamodb.delete_item(TableName=world.table, Key={"uploadSessionId": {"S": "live-0"}})
    second = invoke(deployed, tmp_path, endpoint)
    assert second.returncode == 0, second.stderr
    assert made["marked_now"] <= world.objects()
    assert second.summary["counts"]["orphans_kept_marked"] == 7
    # An unmarked object whose session TTL removed is an orphan: deleted once its session is gone.
    assert "uploads/2025-08-21/live-0.mp4" not in world.objects()


def test_the_documented_dry_run_payload_changes_nothing_and_the_real_run_does_the_plan(
    pulumi_mocks, tmp_path, monkeypatch, endpoint
):
    deployed = deploy(pulumi_mocks, tmp_path, monkeypatch, uploadsCascade="sweep", dryRun=False)
    world = world_for(deployed, endpoint)
    populate(world)
    before = world.snapshot()
    dry = invoke(deployed, tmp_path, endpoint, payload={"dryRun": True})  # the document's integration test
    assert dry.returncode == 0, dry.stderr
    assert world.snapshot() == before
    assert dry.summary["dry_run"] is True and dry.emf[metrics.ITEMS_DELETED] == 0
    plan = dry.summary["plan"]

    real = invoke(deployed, tmp_path, endpoint)
    assert real.returncode == 0, real.stderr
    items_before, objects_before, uploads_before, marked_before = before
    items_after, objects_after, uploads_after, marked_after = world.snapshot()
    sample = plan["sample"]
    assert sorted(set(items_before) - set(items_after)) == sorted(
        k["uploadSessionId"] for k in sample["items_to_delete"]
    )
    assert objects_before - objects_after == set(sample["objects_to_delete"]) | set(sample["orphans_to_delete"])
    assert marked_after - marked_before == set(sample["objects_to_mark"])
    marked_partial = {k for k in items_after if items_after[k] != items_before[k]}
    assert marked_partial == {k["uploadSessionId"] for k in sample["items_to_mark"]}
    assert len(uploads_before - uploads_after) == plan["counts"]["uploads_to_abort"]
    counts = real.summary["counts"]
    assert (counts["items_deleted"], counts["objects_deleted"], counts["orphans_deleted"]) == (
        plan["counts"]["items_to_delete"],
        plan["counts"]["objects_to_delete"],
        plan["counts"]["orphans_to_delete"],
    )
    assert real.summary["plan"] == plan  # the same world gives the same plan


def test_a_payload_cannot_turn_a_configured_dry_run_off(pulumi_mocks, tmp_path, monkeypatch, endpoint):
    deployed = deploy(pulumi_mocks, tmp_path, monkeypatch, uploadsCascade="sweep")  # dev: dryRun true
    world = world_for(deployed, endpoint)
    populate(world)
    before = world.snapshot()
    run = invoke(deployed, tmp_path, endpoint, payload={"dryRun": False})
    assert run.returncode == 0, run.stderr
    assert world.snapshot() == before and run.summary["dry_run"] is True
    bad = invoke(deployed, tmp_path, endpoint, payload={"dryRun": "no"})
    assert bad.returncode != 0 and "invocation payload: dryRun: must be true or false" in bad.stderr
    assert world.snapshot() == before and bad.emf[metrics.SWEEP_FAILED] == 1


def test_a_wrong_key_pattern_trips_the_breaker_and_deletes_nothing(pulumi_mocks, tmp_path, monkeypatch, endpoint):
    # The rule that read uploads/2025-08-21/<id>.mp4 as owner "2025-08-21".
    deployed = deploy(
        pulumi_mocks,
        tmp_path,
        monkeypatch,
        uploadsCascade="sweep",
        dryRun=False,
        uploadsKeyPattern=r"^uploads/(?P<id>[^/]+)/.+",
    )
    world = world_for(deployed, endpoint)
    populate(world)
    before = world.snapshot()
    run = invoke(deployed, tmp_path, endpoint)
    assert run.returncode == 0, run.stderr
    assert world.snapshot() == before
    assert run.emf[metrics.MASS_DELETION_REFUSED] == 1
    (line,) = run.errors("breaker")
    assert "orphaned_objects.id_pattern reads owner '2025-08-21'" in line["error"]


def test_too_much_expired_at_once_trips_the_breaker(pulumi_mocks, tmp_path, monkeypatch, endpoint):
    deployed = deploy(pulumi_mocks, tmp_path, monkeypatch, uploadsCascade="sweep", dryRun=False)
    world = world_for(deployed, endpoint)
    for i in range(30):
        world.session(f"old-{i}", NOW - DAY, "created")
    for i in range(10):
        world.session(f"live-{i}", NOW + DAY, "created")
    before = world.snapshot()
    run = invoke(deployed, tmp_path, endpoint)
    assert world.snapshot() == before and run.emf[metrics.MASS_DELETION_REFUSED] == 1
    assert (
        "items: 30 to delete of 40 examined (75%) is more than breaker.max_share (50%)"
        in run.errors("breaker")[0]["error"]
    )

    allowed = deploy(
        pulumi_mocks, tmp_path / "allowed", monkeypatch, uploadsCascade="sweep", dryRun=False, allowMassDeletion=True
    )
    (tmp_path / "allowed").mkdir(exist_ok=True)
    run = invoke(allowed, tmp_path / "allowed", endpoint)
    assert run.returncode == 0, run.stderr
    assert set(world.items()) == {f"live-{i}" for i in range(10)}


def test_lost_replies_are_counted_once_and_cascaded(pulumi_mocks, tmp_path, monkeypatch, endpoint):
    deployed = deploy(pulumi_mocks, tmp_path, monkeypatch, uploadsCascade="sweep", dryRun=False)
    world = world_for(deployed, endpoint)
    expired = {world.session(f"old-{i}", NOW - HOUR // 2, "created") for i in range(8)}
    stuck = {world.session(f"mp-{i}", NOW - 2 * HOUR, "created", multipart=True) for i in range(4)}
    for i in range(30):
        world.session(f"live-{i}", NOW + DAY, "created")
    run = invoke(deployed, tmp_path, endpoint, lose_replies=("DeleteItem", "AbortMultipartUpload"))
    assert run.returncode == 0, run.stderr
    counts = run.summary["counts"]
    assert not (expired | stuck) & world.objects() and world.uploads() == set()
    assert counts["items_deleted"] == 12 and "items_skipped" not in counts and "items_gone" not in counts
    assert counts["objects_deleted"] == 12 and counts["uploads_aborted"] == 4
    assert set(world.items()) == {f"live-{i}" for i in range(30)}


def test_unindexed_items_are_reported(pulumi_mocks, tmp_path, monkeypatch, endpoint):
    # A team that says its writers set the shard, while this application writes none.
    deployed = deploy(
        pulumi_mocks,
        tmp_path,
        monkeypatch,
        uploadsCascade="sweep",
        dryRun=False,
        uploadsWritersSetExpiryShard=True,
        expiryIndexShards=4,
    )
    assert deployed.job["expiry_index_name"] and deployed.job["unindexed_check_items"] > 0
    world = world_for(deployed, endpoint)
    for i in range(6):
        world.session(f"old-{i}", NOW - HOUR // 2, "created")
    run = invoke(deployed, tmp_path, endpoint)
    assert run.returncode == 0, run.stderr
    assert run.emf[metrics.UNINDEXED_EXPIRED] == 6 and run.emf[metrics.ITEMS_DELETED] == 0


def test_the_default_stream_cascade_cleans_after_ttl_and_the_sweeper_deletes_no_session(
    pulumi_mocks, tmp_path, monkeypatch, endpoint
):
    deployed = deploy(pulumi_mocks, tmp_path, monkeypatch, dryRun=False)  # dev, uploadsCascade stream
    assert deployed.cascade_job is not None and deployed.job["delete_expired"] is False
    assert deployed.table_inputs["streamViewType"] == "OLD_IMAGE"
    world = world_for(deployed, endpoint)
    made = populate(world)
    sessions_before = set(world.items())
    swept = invoke(deployed, tmp_path, endpoint)
    assert swept.returncode == 0, swept.stderr
    assert set(world.items()) == sessions_before  # TTL deletes sessions, not the sweeper
    assert made["marked_now"] <= world.marked()  # finished videos marked before TTL can remove them
    assert not made["orphans"] & world.objects()

    expired = ids(made["expired"] | made["empty"] | made["partial"] | made["marked_now"]) | {"recent-parts"}
    cascaded = invoke(deployed, tmp_path, endpoint, payload={"Records": ttl_deletes(world, expired)}, cascade=True)
    assert cascaded.returncode == 0, cascaded.stderr
    assert json.loads(cascaded.stdout.split("RESULT ", 1)[1]) == {"batchItemFailures": []}
    objects = world.objects()
    assert made["live"] | made["finished"] <= objects  # finished videos stay after TTL removed their sessions
    assert not made["expired"] & objects
    assert len(world.uploads()) == 5  # the live sessions' uploads; every expired session's was aborted
    assert cascaded.emf[metrics.OBJECTS_DELETED] == 5 and cascaded.emf[metrics.UPLOADS_ABORTED] == 6
