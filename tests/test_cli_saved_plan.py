"""Plans are binding (issue 18): `expiry sweep` carries out the plan it showed, and a plan saved with
--plan-out is carried out later by --plan exactly as listed, or refused whole. The CLI runs in-process
(`main`) against moto in-process and moto_server; a person at a "terminal" changes the world between
seeing the plan and answering."""

import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from uploads_world import BUCKET, S3_SETTINGS, TABLE, create_table, object_keys, put_session, session_ids, sweep_job

from expiry.runtime.cli import main
from expiry.runtime.dynamodb import saved_plan
from expiry.runtime.dynamodb.sweep import Decision, Plan

NOW = int(time.time())
CASCADE = ("--s3-bucket", BUCKET, "--s3-key-attribute", "key")
PLANNED = 10


def key(session_id: str) -> str:
    return f"uploads/2024-05-01/{session_id}.mp4"


def expired(aws, session_id: str, ttl: int = NOW - 3600) -> None:
    aws.s3.put_object(Bucket=BUCKET, Key=key(session_id), Body=b"x")
    put_session(aws.dynamodb, session_id, ttl, key=key(session_id))


def build(aws):
    """Ten expired upload sessions with their objects, and a live one."""
    create_table(aws.dynamodb)
    aws.dynamodb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})
    aws.s3.create_bucket(Bucket=BUCKET)
    for i in range(PLANNED):
        expired(aws, f"old-{i}", NOW - 3600 - i)
    put_session(aws.dynamodb, "live", NOW + 3600)
    return aws


@pytest.fixture
def world(aws):
    return build(aws)


@pytest.fixture
def world_in_process(aws_in_process):
    """The world in moto in-process only: for what a plan file's text decides."""
    return build(aws_in_process)


def meanwhile(aws) -> Callable[[], None]:
    """What happens between planning and deleting: ten more sessions expire, old-3 is renewed."""

    def change() -> None:
        for i in range(PLANNED):
            expired(aws, f"new-{i}")
        put_session(aws.dynamodb, "old-3", NOW + 86400, key=key("old-3"))

    return change


SURVIVORS = {"live", "old-3", *(f"new-{i}" for i in range(PLANNED))}


class Terminal(io.StringIO):
    """A person at a terminal who, while the question is shown, waits for ``before`` to happen, then answers."""

    def __init__(self, reply: str, before: Callable[[], None]) -> None:
        super().__init__()
        self.reply, self.before = reply, before

    def isatty(self) -> bool:
        return True

    def readline(self, size: int | None = -1) -> str:
        self.before()
        return f"{self.reply}\n"


def sweep(aws, *args: str, stdin: io.StringIO | None = None) -> tuple[int, dict[str, Any], str]:
    """Exit code, the JSON printed, the error stream of `expiry sweep --table ... <args> --json`."""
    out, err = io.StringIO(), io.StringIO()
    endpoint = ("--endpoint-url", aws.endpoint) if aws.endpoint else ()
    code = main(["sweep", "--table", TABLE, *CASCADE, "--json", *endpoint, *args], out, err, stdin or io.StringIO())
    return code, json.loads(out.getvalue() or "{}"), err.getvalue()


def untouched(aws) -> bool:
    return len(session_ids(aws.dynamodb)) == PLANNED + 1 and len(object_keys(aws.s3)) == PLANNED


def test_the_prompt_deletes_the_plan_it_showed_not_a_new_one(world):
    code, summary, err = sweep(world, "--allow-mass-deletion", stdin=Terminal("yes", meanwhile(world)))
    assert code == 0, err
    assert "planned: 10 items to delete, 10 objects to delete" in err
    assert summary["plan"]["counts"]["items_to_delete"] == PLANNED  # the plan carried out is the one shown
    counts = summary["counts"]
    assert (counts["items_deleted"], counts["items_skipped"], counts["objects_deleted"]) == (9, 1, 9)
    assert session_ids(world.dynamodb) == SURVIVORS  # renewed and new sessions stay
    assert object_keys(world.s3) == {key(s) for s in SURVIVORS - {"live"}}


def test_a_saved_plan_deletes_only_what_it_lists_that_is_still_as_read(world, tmp_path):
    path = tmp_path / "plan.json"
    code, dry, err = sweep(world, "--plan-out", str(path))
    assert code == 0, err
    assert untouched(world)  # a plan is written by a dry run
    assert dry["dry_run"] is True and dry["plan_file"] == str(path)
    saved = json.loads(path.read_text())
    assert (saved["format"], saved["version"], saved["refused"], saved["orphans"]) == ("expiry-sweep-plan", 1, [], [])
    assert saved["target"] == {
        "region": "us-east-1",
        "account": "123456789012",
        "endpoint": world.endpoint or "AWS",
        "table": TABLE,
        "bucket": BUCKET,
    }
    assert saved["job"]["table"] == TABLE and saved["job"]["s3"]["key_attribute"] == "key"
    assert abs(saved["planned_at"] - time.time()) < 60
    first = min(saved["decisions"], key=lambda d: d["image"]["uploadSessionId"]["S"])
    assert first == {
        "image": {
            "uploadSessionId": {"S": "old-0"},
            "ttl": {"N": str(NOW - 3600)},
            "key": {"S": key("old-0")},
        },  # as read: the attributes a decision needs
        "delete": True,
        "mark_partial": False,
        "abort_upload": None,
        "object_key": key("old-0"),
        "delete_object": True,
        "mark_object": False,
    }
    meanwhile(world)()
    code, done, err = sweep(world, "--plan", str(path), "--yes")
    assert code == 0, err
    assert done["plan"]["counts"] == dry["plan"]["counts"]  # the dry run's summary is the plan carried out
    counts = done["counts"]
    assert (counts["items_deleted"], counts["items_skipped"], counts["objects_deleted"]) == (9, 1, 9)
    assert counts.get("items_read", 0) == 0  # nothing was planned again
    assert session_ids(world.dynamodb) == SURVIVORS
    assert object_keys(world.s3) == {key(s) for s in SURVIVORS - {"live"}}


def test_a_saved_plan_on_a_terminal_shows_its_counts_and_keys_and_asks(world, tmp_path):
    path = tmp_path / "plan.json"
    assert sweep(world, "--plan-out", str(path))[0] == 0
    code, _, err = sweep(world, "--plan", str(path), stdin=Terminal("y", lambda: None))
    assert code == 4 and "not confirmed; nothing was deleted" in err  # only "yes" or the table's name, in full
    assert f"planned: 10 items to delete, 10 objects to delete (saved plan {path}, made " in err
    assert '\nitems to delete (10):\n  {"uploadSessionId": "old-0"}\n' in err  # the keys of the saved plan
    assert f"\nobjects to delete (10):\n  {key('old-0')}\n" in err and "more" not in err
    assert f"Delete as planned from {TABLE}? Type yes or {TABLE} to delete: " in err
    assert untouched(world)


@pytest.mark.parametrize("reply", ["yes", TABLE, " yes ", "y", "YES", "", "other-table", f"{TABLE}s"])
def test_the_prompt_takes_yes_or_the_tables_name_typed_in_full(world_in_process, reply):
    code, summary, err = sweep(world_in_process, "--allow-mass-deletion", stdin=Terminal(reply, lambda: None))
    if reply.strip() in ("yes", TABLE):
        assert code == 0, err
        assert summary["counts"]["items_deleted"] == PLANNED and session_ids(world_in_process.dynamodb) == {"live"}
    else:
        assert code == 4 and summary == {"error": "not confirmed; nothing was deleted", "exit_code": 4}
        assert untouched(world_in_process)


def edit(field: str, change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        saved = json.loads(path.read_text())
        change(saved)
        path.write_text(json.dumps(saved))

    apply.__name__ = field
    return apply


def first_decision(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    return lambda saved: change(saved["decisions"][0])


REFUSED = [
    (lambda path: path.write_text('{"format": "expiry-sweep-plan", "version": 1,'), (), "is not valid JSON"),
    (lambda path: path.write_text("[]"), (), "must be a JSON object"),
    (edit("format", lambda s: s.update(format="something-else")), (), ": format: "),
    (edit("version", lambda s: s.update(version=2)), (), ": version: 2 is not"),
    (edit("unknown", lambda s: s.update(note="hi")), (), ": note: unknown"),
    (edit("missing", lambda s: s.pop("orphans")), (), ": orphans: missing"),
    (edit("table", lambda s: s["target"].update(table="other-table")), (), ": target.table: the plan is for"),
    (edit("bucket", lambda s: s["target"].update(bucket="other")), (), ": target.bucket: the plan is for"),
    (edit("region", lambda s: s["target"].update(region="eu-west-1")), (), ": target.region: the plan is for"),
    (edit("job", lambda s: None), ("--max-items", "5"), ": job.max_items: the plan was made with 100000"),
    (edit("job-breaker", lambda s: None), ("--allow-mass-deletion",), ": job.breaker.allow_mass_deletion: "),
    (edit("planned_at", lambda s: s.update(planned_at="today")), (), ": planned_at: must be"),
    (edit("decision-key", first_decision(lambda d: d.update(why="x"))), (), ": decisions[0].why: unknown"),
    (edit("flag", first_decision(lambda d: d.update(delete="yes"))), (), ": decisions[0].delete: must be"),
    (edit("image", first_decision(lambda d: d["image"].pop("uploadSessionId"))), (), ": decisions[0].image: "),
    (edit("value", first_decision(lambda d: d["image"].update(ttl=5))), (), ": decisions[0].image.ttl: "),
    (
        edit("object", first_decision(lambda d: d.update(object_key="uploads/elsewhere.mp4"))),
        (),
        ": decisions[0].object_key: ",
    ),
    (
        edit("live", first_decision(lambda d: d["image"].update(ttl={"N": str(NOW + 86400)}))),
        (),
        ": decisions[0].delete: ",
    ),
    (edit("orphan", lambda s: s.update(orphans=["uploads/x.mp4"])), (), ": orphans[0]: listed, but"),
]


@pytest.mark.parametrize(("damage", "args", "message"), REFUSED, ids=[d.__name__ for d, _, _ in REFUSED])
def test_an_unfit_plan_file_is_refused_whole(world_in_process, tmp_path, damage, args, message):
    world = world_in_process
    path = tmp_path / "plan.json"
    assert sweep(world, "--plan-out", str(path))[0] == 0
    damage(path)
    code, summary, err = sweep(world, "--plan", str(path), "--yes", *args)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"expiry: error: --plan {path}") and message in err, err
    assert err.strip().endswith("nothing was deleted"), err
    assert summary == {"error": err.strip().removeprefix("expiry: error: "), "exit_code": 2}
    assert untouched(world)


def test_a_missing_plan_file_and_contradictory_flags_are_refused(world, tmp_path):
    code, _, err = sweep(world, "--plan", str(tmp_path / "none.json"), "--yes")
    assert code == 2 and f"--plan {tmp_path / 'none.json'}: cannot be read" in err
    code, _, err = sweep(world, "--plan", "a.json", "--plan-out", "b.json")
    assert code == 2 and "not allowed with argument" in err
    assert untouched(world)


def test_a_saved_plan_carries_out_its_orphans(world, tmp_path):
    """The plan's orphans go through the run's orphan deletion; an object it does not list stays."""
    settings = {
        "kind": "sweep",
        "job_name": "upload-sweeper",
        "table_name": TABLE,
        "key_attributes": ["uploadSessionId"],
        "ttl_attribute": "ttl",
        "s3": {"bucket": BUCKET, "key_attribute": "key"},
        "orphaned_objects": {"prefix": "uploads/", "id_pattern": r"uploads/\d{4}-\d{2}-\d{2}/(?P<id>[^/]+)\.mp4"},
    }
    job = tmp_path / "job.json"
    job.write_text(json.dumps(settings))
    path = tmp_path / "plan.json"
    out, err = io.StringIO(), io.StringIO()
    endpoint = ["--endpoint-url", world.endpoint] if world.endpoint else []
    assert main(["sweep", "--job", f"@{job}", "--plan-out", str(path), *endpoint], out, err) == 0, err.getvalue()
    for ghost in ("ghost-1", "ghost-2"):
        world.s3.put_object(Bucket=BUCKET, Key=key(ghost), Body=b"x")  # owners gone: orphans
    edit("orphans", lambda s: s.update(orphans=[key("ghost-1")]))(path)
    command = ["sweep", "--job", f"@{job}", "--plan", str(path), "--yes", "--json", *endpoint]
    out, err = io.StringIO(), io.StringIO()
    assert main(command, out, err) == 0, err.getvalue()
    counts = json.loads(out.getvalue())["counts"]
    assert (counts["items_deleted"], counts["orphans_deleted"]) == (PLANNED, 1)
    assert object_keys(world.s3) == {key("ghost-2")}


def test_a_plan_file_keeps_every_kind_of_value_and_list(tmp_path):
    job = sweep_job(
        s3=S3_SETTINGS, orphaned_objects={"prefix": "uploads/", "id_pattern": r"uploads/(?P<id>[^/]+)\.mp4"}
    )
    image = {
        "uploadSessionId": {"S": "a"},
        "ttl": {"N": "1"},
        "key": {"S": "uploads/a.mp4"},
        "s3UploadId": {"S": "u-1"},
        "blob": {"B": b"\x00\xff"},
        "blobs": {"BS": [b"x", b"\n"]},
        "more": {"M": {"list": {"L": [{"BOOL": False}, {"NULL": True}, {"NS": ["1", "2"]}, {"SS": ["s"]}]}}},
    }
    decision = Decision(image, delete=True, abort_upload="u-1", object_key="uploads/a.mp4", delete_object=True)
    plan = Plan([decision], orphans=["uploads/b.mp4"], orphan_uploads=[("uploads/c.mp4", "u-2")], refused=["why"])
    target = {"region": "us-east-1", "endpoint": "AWS", "table": TABLE, "bucket": BUCKET}
    path = tmp_path / "plan.json"
    path.write_text(saved_plan.dumps(plan, job, target, 1234.5))
    assert json.loads(path.read_text())["decisions"][0]["image"]["blob"] == {"B": "AP8="}  # base64, as the AWS CLI
    assert saved_plan.load(str(path), job, target, time.time()) == (plan, 1234.5)
