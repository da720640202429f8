"""An ad-hoc sweep (--table and --s3-* flags, or --job) is refused when it would delete what the deployed
sweep job of its table keeps (issue 19): the CLI finds the deployed job (Lambda ListFunctions and
GetFunctionConfiguration), plans it on the same data with the same clock, and compares the plans. The real
CLI runs against moto_server; the property test runs `main` in-process against moto, a fresh world per
example, on the upload layout (sessions created, uploaded; multipart uploads; an orphan video)."""

import datetime as dt
import io
import json
import time
from typing import Any

import boto3
import pytest
from aws import aws_backend
from botocore.exceptions import ClientError
from hypothesis import event, example, given, note, settings
from hypothesis import strategies as st
from test_cli import ACCOUNT, cli, deploy
from uploads_world import BUCKET, TABLE, create_table, object_keys, put_session, session_ids

from expiry.runtime import cli as cli_module
from expiry.runtime.cli import FAILED, USAGE, main
from expiry.runtime.cli_deployed import plan_deployed
from expiry.runtime.jobs.config import parse_job

NOW = int(time.time())
FUNCTION = "upload-sweeper-prod"
CASCADE = ("--s3-bucket", BUCKET, "--s3-key-attribute", "key")
DEPLOYED_JOB: dict[str, Any] = {
    "kind": "sweep",
    "job_name": "upload-sweeper",
    "table_name": TABLE,
    "key_attributes": ["uploadSessionId"],
    "ttl_attribute": "ttl",
    "s3": {"bucket": BUCKET, "key_attribute": "key", "status_attribute": "status", "keep_statuses": ["uploaded"]},
}
EVERYTHING = 11  # sessions in the simple world


def video(session: str) -> str:
    return f"uploads/{session}.mp4"


def simple_world(aws: Any, job: dict[str, Any] = DEPLOYED_JOB) -> None:
    """An expired `uploaded` session (the deployed job keeps its video), two expired `created` ones, eight
    live ones; TTL on `ttl`; the sweeper Lambda deployed with ``job``."""
    create_table(aws.dynamodb)
    aws.dynamodb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})
    aws.s3.create_bucket(Bucket=BUCKET)
    for session, status in (("done", "uploaded"), ("gone-1", "created"), ("gone-2", "created")):
        aws.s3.put_object(Bucket=BUCKET, Key=video(session), Body=b"x")
        put_session(aws.dynamodb, session, NOW - 3600, key=video(session), status=status)
    for i in range(8):
        put_session(aws.dynamodb, f"live-{i}", NOW + 3600)
    deploy(aws, FUNCTION, {"EXPIRY_JOB": json.dumps(job)})


@pytest.fixture
def served(moto_server):
    with aws_backend("moto_server", moto_server) as aws:
        simple_world(aws)
        yield aws, moto_server.url


@pytest.fixture
def world(aws_in_process):
    simple_world(aws_in_process)
    return aws_in_process


def run(*args: str, stdin: str = "") -> tuple[int, str, str]:
    """`expiry <args>` in-process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), out, err, io.StringIO(stdin))
    return code, out.getvalue(), err.getvalue()


def untouched(aws: Any) -> bool:
    return len(session_ids(aws.dynamodb)) == EVERYTHING and object_keys(aws.s3) == {
        video(s) for s in ("done", "gone-1", "gone-2")
    }


def test_the_cli_refuses_an_adhoc_sweep_that_deletes_the_kept_video_naming_the_fields(served):
    aws, url = served
    result = cli("sweep", "--table", TABLE, *CASCADE, "--yes", endpoint=url)
    assert result.returncode == USAGE, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0] == (
        f"target: region us-east-1  account {ACCOUNT}  endpoint {url}  table {TABLE}  bucket {BUCKET}"
        f"  deployed {FUNCTION}"
    )
    error = lines[-1]
    assert error.startswith(f"expiry: error: this sweep is not the deployed job of {TABLE} ({FUNCTION})")
    assert f"object s3://{BUCKET}/uploads/done.mp4" in error  # the thing it would delete
    assert "settings that differ: s3.status_attribute, s3.keep_statuses" in error  # the fields
    assert f"run the deployed job with --function {FUNCTION}, or give --ignore-deployed" in error
    assert error.endswith("nothing was deleted")
    assert untouched(aws)


def test_with_function_the_deployed_job_runs(world):
    code, out, err = run("sweep", "--function", FUNCTION, "--yes", "--json")
    assert code == 0, err
    assert json.loads(out)["counts"]["items_deleted"] == 3
    assert session_ids(world.dynamodb) == {f"live-{i}" for i in range(8)}
    assert object_keys(world.s3) == {video("done")}


def test_the_override_runs_and_is_shown_on_the_target_line(world):
    code, out, err = run("sweep", "--table", TABLE, *CASCADE, "--yes", "--ignore-deployed", "--json")
    assert code == 0, err
    assert "table upload-sessions  bucket uploads  deployed not checked (--ignore-deployed)" in err
    assert json.loads(out)["target"]["deployed"] == "not checked (--ignore-deployed)"
    assert object_keys(world.s3) == set()  # what it was told: the kept video too


def test_the_override_must_be_spelled_out(world):
    code, _, err = run("sweep", "--table", TABLE, *CASCADE, "--yes", "--ignore")
    assert code == USAGE and err == "expiry: error: --ignore-deployed: must be spelled out in full\n"
    assert untouched(world)


def test_a_dry_run_goes_on_with_the_warning(world):
    code, out, err = run("sweep", "--table", TABLE, *CASCADE, "--dry-run", "--json")
    assert code == 0, err
    assert "expiry: warning: this sweep is not the deployed job of upload-sessions" in err
    assert "(a dry run: nothing is deleted)" in err
    assert json.loads(out)["plan"]["counts"]["objects_to_delete"] == 3
    assert untouched(world)


def test_the_deployed_settings_given_as_a_job_run(world):
    code, out, err = run("sweep", "--job", json.dumps(DEPLOYED_JOB), "--yes", "--json")
    assert code == 0, err
    assert json.loads(out)["counts"]["objects_deleted"] == 2
    assert object_keys(world.s3) == {video("done")}


def test_other_settings_that_delete_nothing_kept_run(world):
    """Without --s3-bucket the sweep deletes the expired items only; the kept video is marked already, so
    nothing the deployed job keeps is lost (settings differ, the plans agree)."""
    world.s3.put_object_tagging(
        Bucket=BUCKET, Key=video("done"), Tagging={"TagSet": [{"Key": "expiry-kept", "Value": "true"}]}
    )
    code, out, err = run("sweep", "--table", TABLE, "--yes", "--json")
    assert code == 0, err
    assert json.loads(out)["counts"]["items_deleted"] == 3
    assert len(object_keys(world.s3)) == 3


def test_deleting_the_item_of_a_video_the_deployed_job_would_mark_is_refused(world):
    code, _, err = run("sweep", "--table", TABLE, "--yes")
    assert code == USAGE
    assert "object s3://uploads/uploads/done.mp4 (its item deleted, the object not marked kept)" in err
    assert "settings that differ: s3" in err
    assert untouched(world)


def test_a_looser_breaker_is_refused_naming_it(world):
    code, _, err = run("sweep", "--job", json.dumps(DEPLOYED_JOB), "--allow-mass-deletion", "--yes")
    assert code == USAGE
    assert "its breaker is looser; settings that differ: breaker.allow_mass_deletion;" in err
    assert untouched(world)


def denying(operation: str) -> type[boto3.Session]:
    class Denying(boto3.Session):
        """A session whose Lambda calls of ``operation`` are denied, as IAM denies them."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.events.register(f"before-call.lambda.{operation}", self.deny)

        @staticmethod
        def deny(**_: Any) -> None:
            error = {"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}}
            raise ClientError(error, operation)  # type: ignore[arg-type]

    return Denying


@pytest.mark.parametrize("operation", ["ListFunctions", "GetFunctionConfiguration"])
def test_a_denied_lookup_fails_closed_unless_overridden(world, monkeypatch, operation):
    monkeypatch.setattr(cli_module.boto3, "Session", denying(operation))
    code, _, err = run("sweep", "--table", TABLE, *CASCADE, "--yes")
    assert code == FAILED
    assert err.splitlines()[-1] == (
        f"expiry: error: cannot check what the deployed sweep jobs of {TABLE} keep: lambda:{operation} was denied "
        f"(AccessDeniedException); grant lambda:{operation}, run the deployed job with --function NAME, "
        "or give --ignore-deployed; nothing was deleted"
    )
    assert untouched(world)
    code, _, err = run("sweep", "--table", TABLE, *CASCADE, "--dry-run")
    assert code == 0 and f"expiry: warning: cannot check what the deployed sweep jobs of {TABLE} keep" in err
    code, _, err = run("sweep", "--table", TABLE, *CASCADE, "--yes", "--ignore-deployed")
    assert code == 0, err
    assert object_keys(world.s3) == set()


def test_a_function_of_another_table_is_not_the_deployed_job(world):
    world.client("lambda").delete_function(FunctionName=FUNCTION)
    deploy(world, "other-sweeper", {"EXPIRY_JOB": json.dumps({**DEPLOYED_JOB, "table_name": "other"})})
    deploy(world, "not-expiry", {"SOMETHING": "else"})
    code, _, err = run("sweep", "--table", TABLE, *CASCADE, "--yes")
    assert code == 0, err
    assert "deployed" not in err.splitlines()[0]


# The property: generated ad-hoc sweeps against the upload layout and a deployed job with kept statuses, a
# stuck rule and orphans. Whatever the CLI does, what the deployed job keeps survives, also the deployed job's
# own next run (an object it keeps must not be left to look like an orphan); and a refused sweep deletes nothing.

RICH_JOB: dict[str, Any] = {
    **DEPLOYED_JOB,
    "s3": {**DEPLOYED_JOB["s3"], "upload_id_attribute": "s3UploadId"},
    "stuck_uploads": {"status": "created", "older_than_seconds": 3600, "since_attribute": "createdAt"},
    "orphaned_objects": {"prefix": "uploads/", "older_than_seconds": 3600, "id_pattern": r"uploads/([^/.]+)\.mp4"},
}
STATUSES = ("created", "uploaded", "partial")


def rich_world(aws: Any) -> None:
    create_table(aws.dynamodb)
    aws.dynamodb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})
    aws.s3.create_bucket(Bucket=BUCKET)
    for session, status, ttl in (
        ("done", "uploaded", NOW - 3600),
        ("gone-1", "created", NOW - 3600),
        ("gone-2", "partial", NOW - 7200),
        ("live-done", "uploaded", NOW + 3600),
    ):
        aws.s3.put_object(Bucket=BUCKET, Key=video(session), Body=b"x")
        put_session(aws.dynamodb, session, ttl, key=video(session), status=status, created=NOW - 86400)
    for session, parts, ttl in (("stuck", 0, NOW + 86400), ("half", 1, NOW + 86400), ("late", 1, NOW - 60)):
        upload = aws.s3.create_multipart_upload(Bucket=BUCKET, Key=video(session))["UploadId"]
        for number in range(1, parts + 1):
            aws.s3.upload_part(Bucket=BUCKET, Key=video(session), UploadId=upload, PartNumber=number, Body=b"p")
        put_session(
            aws.dynamodb, session, ttl, key=video(session), upload_id=upload, status="created", created=NOW - 7200
        )
    for i in range(6):
        put_session(aws.dynamodb, f"live-{i}", NOW + 3600, status="created", created=NOW)
    aws.s3.put_object(Bucket=BUCKET, Key=video("ghost"), Body=b"left behind")  # no session names it
    _age_objects(aws)
    deploy(aws, FUNCTION, {"EXPIRY_JOB": json.dumps(RICH_JOB)})


def _age_objects(aws: Any) -> None:
    """Objects a day old (moto dates them now; the orphan rule wants them older than an hour)."""
    from moto.s3.models import s3_backends

    bucket = s3_backends[ACCOUNT]["global"].buckets[BUCKET]
    for key in bucket.keys.values():
        key.last_modified = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=1)


def snapshot(aws: Any) -> tuple[set[str], set[str], set[str]]:
    """Sessions, objects, and the keys of multipart uploads in progress (ids differ from world to world)."""
    uploads = aws.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    return session_ids(aws.dynamodb), object_keys(aws.s3), {u["Key"] for u in uploads}


def kept_by_the_deployed_job(aws: Any) -> tuple[set[str], set[str], set[str]]:
    """What the deployed job keeps: everything its plan does not delete or abort."""
    job = parse_job(RICH_JOB)
    clients = {"dynamodb": aws.dynamodb, "s3": aws.s3}
    plan = plan_deployed(job, job, clients.__getitem__, time.time(), lambda: False)
    items, objects, uploads = snapshot(aws)
    deleted_items = {d.image["uploadSessionId"]["S"] for d in plan.decisions if d.delete}
    deleted_objects = {d.object_key for d in plan.decisions if d.delete_object} | set(plan.orphans)
    aborted = {d.object_key for d in plan.decisions if d.abort_upload} | {k for k, _ in plan.orphan_uploads}
    return items - deleted_items, objects - deleted_objects, uploads - aborted


TWICE: list[tuple[set[str], set[str], set[str]]] = []


def kept_after_two_deployed_runs() -> tuple[set[str], set[str], set[str]]:
    """What survives two runs of the deployed job alone (a stuck upload marked partial by the first goes in
    the second): in a world of its own, once."""
    if not TWICE:
        with aws_backend("in-process", None) as aws:
            rich_world(aws)
            for _ in range(2):
                code, _, err = run("sweep", "--function", FUNCTION, "--yes")
                assert code == 0, err
            TWICE.append(snapshot(aws))
    return TWICE[0]


s3_sections = st.fixed_dictionaries(
    {
        "bucket": st.just(BUCKET),
        "key_attribute": st.sampled_from(["key", "key", "uploadSessionId"]),
        "upload_id_attribute": st.sampled_from(["s3UploadId", None]),
        "status_attribute": st.sampled_from(["status", "status", None]),
    },
    optional={
        "keep_statuses": st.lists(st.sampled_from(STATUSES), unique=True, max_size=2),
        "keep_marker": st.sampled_from(["tag", "none"]),
    },
).map(lambda s3: {name: value for name, value in s3.items() if value is not None})
jobs = st.fixed_dictionaries(
    {
        "kind": st.just("sweep"),
        "job_name": st.just("adhoc"),
        "table_name": st.just(TABLE),
        "key_attributes": st.just(["uploadSessionId"]),
        "ttl_attribute": st.sampled_from(["ttl", "ttl", "createdAt"]),
    },
    optional={
        "s3": s3_sections,
        "stuck_uploads": st.fixed_dictionaries(
            {"status": st.sampled_from(["created", "partial"])},
            optional={
                "older_than_seconds": st.sampled_from([60, 3600, 86400]),
                "since_attribute": st.sampled_from(["createdAt", "ttl"]),
            },
        ),
        "orphaned_objects": st.fixed_dictionaries(
            {"id_pattern": st.sampled_from([r"uploads/([^/.]+)\.mp4", r"uploads/(.+)"])},
            optional={"prefix": st.sampled_from(["uploads/", ""]), "older_than_seconds": st.just(3600)},
        ),
        "delete_expired": st.booleans(),
        "breaker": st.fixed_dictionaries(
            {}, optional={"allow_mass_deletion": st.booleans(), "max_share": st.sampled_from([0.5, 1.0])}
        ),
        "max_items": st.sampled_from([1, 2, 100]),
    },
)
flags = st.tuples(
    st.sampled_from([(), CASCADE, (*CASCADE, "--s3-upload-id-attribute", "s3UploadId")]),
    st.sampled_from([(), ("--ttl-attribute", "ttl"), ("--ttl-attribute", "createdAt")]),
    st.sampled_from([(), ("--max-items", "1"), ("--max-items", "50")]),
    st.sampled_from([(), ("--allow-mass-deletion",)]),
).map(lambda parts: ("--table", TABLE, *(flag for part in parts for flag in part)))
MUTATIONS: dict[str, Any] = {  # one setting of the deployed job changed: stricter, looser, or neither
    "s3.keep_statuses": st.lists(st.sampled_from(STATUSES), unique=True, max_size=3),
    "s3.keep_marker": st.just("none"),
    "s3.upload_id_attribute": st.just(None),
    "s3.owner_index": st.just(None),
    "stuck_uploads": st.none(),
    "stuck_uploads.older_than_seconds": st.sampled_from([60, 7200, 86400]),
    "stuck_uploads.status": st.just("partial"),
    "orphaned_objects": st.none(),
    "orphaned_objects.id_pattern": st.sampled_from([r"uploads/(.+)", r"uploads/([^/]+)\.mp4"]),
    "delete_expired": st.booleans(),
    "max_items": st.sampled_from([1, 2, 3]),
    "breaker": st.fixed_dictionaries(
        {}, optional={"max_share": st.sampled_from([0.2, 1.0]), "ignore_below": st.sampled_from([0, 100])}
    ),
}


def mutated(changes: dict[str, Any]) -> dict[str, Any]:
    job = json.loads(json.dumps(RICH_JOB))
    for path, value in changes.items():
        *outer, name = path.split(".")
        section = job
        for part in outer:
            section = section.get(part) or {}
        if value is None:
            section.pop(name, None)
        else:
            section[name] = value
    return job


deployed_variants = (
    st.dictionaries(st.sampled_from(sorted(MUTATIONS)), st.none(), min_size=1, max_size=3)
    .flatmap(lambda names: st.fixed_dictionaries({name: MUTATIONS[name] for name in names}))
    .map(mutated)
)
commands = st.one_of(
    flags,
    jobs.map(lambda job: ("--job", json.dumps(job))),
    deployed_variants.map(lambda job: ("--job", json.dumps(job))),
)


@settings(max_examples=30)
@given(command=commands)
@example(command=("--job", json.dumps(RICH_JOB)))  # the deployed job's settings: not refused
@example(command=("--table", TABLE, *CASCADE, "--s3-upload-id-attribute", "s3UploadId"))  # refused
@example(command=("--job", json.dumps({**RICH_JOB, "s3": {**RICH_JOB["s3"], "keep_marker": "none"}})))
def test_whenever_an_adhoc_sweep_is_not_refused_nothing_the_deployed_job_keeps_is_deleted(command):
    kept_after_two_deployed_runs()
    with aws_backend("in-process", None) as aws:
        rich_world(aws)
        kept = kept_by_the_deployed_job(aws)
        before = snapshot(aws)
        code, _, err = run("sweep", *command, "--yes", "--json")
        note(f"{code} {err}")
        after = snapshot(aws)
        refused = "is not the deployed job of" in err
        event("refused: the deployed job keeps it" if refused else f"exit {code}, deleted: {after != before}")
        if refused:
            assert code == USAGE and after == before  # refused before deleting anything
        for kept_things, left in zip(kept, after, strict=True):
            assert kept_things <= left, (command, err)
        # The deployed job's next run keeps what two runs of its own keep (an object the ad-hoc sweep left
        # unmarked would be taken for an orphan).
        follow_up, _, follow_err = run("sweep", "--function", FUNCTION, "--yes", "--json")
        assert follow_up in (0, 3), follow_err
        for kept_things, left in zip(kept_after_two_deployed_runs(), snapshot(aws), strict=True):
            assert kept_things <= left, (command, err, follow_err)
        if command == ("--job", json.dumps(RICH_JOB)):
            assert code == 0 and not refused and after != before, err  # the same rules: it runs and deletes
