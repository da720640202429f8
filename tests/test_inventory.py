"""The orphan pass from an S3 Inventory report (runtime/s3/inventory.py) against moto: reports are
written here in AWS's documented layout and format (moto does not generate them): manifest.json and
manifest.checksum under <prefix>/<source>/<id>/<YYYY-MM-DDTHH-MMZ>/, gzip CSV data files with every
field quoted and keys URL-encoded as a form does."""

import csv
import datetime as dt
import gzip
import hashlib
import io
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest
from aws import make_client
from botocore.exceptions import ClientError
from hypothesis import example, given, settings
from hypothesis import strategies as st
from iam_aws import ACCOUNT, Function, IamServer, bind_role, denied
from moto import mock_aws
from uploads_world import ALLOW, BUCKET, NOW, S3_SETTINGS, create_table, object_keys, put_session, run, sweep_job

from expiry.components.sweeper_policy import Arns, function_policy
from expiry.runtime.handlers.work import sweep_work
from expiry.runtime.jobs import metrics
from expiry.runtime.jobs.config import JobConfigError
from expiry.runtime.jobs.runner import run_job
from expiry.runtime.s3.inventory import InventoryError, Manifest, inventory_objects, latest_manifest, parse_manifest

DEST = "inventory-reports"
PREFIX = "reports"
INVENTORY_ID = "orphans"
ROOT = f"{PREFIX}/{BUCKET}/{INVENTORY_ID}/"
INVENTORY = {"destination_bucket": DEST, "destination_prefix": PREFIX, "inventory_id": INVENTORY_ID}
ORPHANS = {
    "prefix": "uploads/",
    "older_than_seconds": 86400,
    "id_pattern": r"^uploads/\d{4}-\d{2}-\d{2}/(?P<id>[^/]+)\.[^/.]+$",
    "inventory": INVENTORY,
}
COLUMNS = ("Bucket", "Key", "Size", "LastModifiedDate")
CREATED = NOW - 3600  # the report began an hour before the sweep's clock
OLD = NOW - 2 * 86400 - 7200  # written before the report and the grace


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def stamp(epoch: float) -> str:
    moment = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def data_file(rows: list[list[str]]) -> bytes:
    text = io.StringIO()
    csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    return gzip.compress(text.getvalue().encode())


def write_report(
    s3: Any,
    objects: list[tuple[str, float]],
    created: float = CREATED,
    *,
    columns: tuple[str, ...] = COLUMNS,
    rows: list[list[str]] | None = None,
    encode: Any = quote_plus,
    **manifest_fields: Any,
) -> str:
    """A report listing ``objects`` (key, last modified) as S3 writes one; its manifest's key."""
    if rows is None:
        values = {"Bucket": lambda k, t: BUCKET, "Key": lambda k, t: encode(k), "Size": lambda k, t: "1"}
        values["LastModifiedDate"] = lambda k, t: stamp(t)
        rows = [[values[c](key, modified) for c in columns] for key, modified in objects]
    body = data_file(rows)
    data_key = f"{ROOT}data/{uuid.uuid4()}.csv.gz"
    s3.put_object(Bucket=DEST, Key=data_key, Body=body)
    folder = f"{ROOT}{time.strftime('%Y-%m-%dT%H-%MZ', time.gmtime(created))}/"
    manifest = {
        "sourceBucket": BUCKET,
        "destinationBucket": f"arn:aws:s3:::{DEST}",
        "version": "2016-11-30",
        "creationTimestamp": str(int(created * 1000)),
        "fileFormat": "CSV",
        "fileSchema": ", ".join(columns),
        "files": [{"key": data_key, "size": len(body), "MD5checksum": md5(body)}],
        **manifest_fields,
    }
    text = json.dumps(manifest).encode()
    s3.put_object(Bucket=DEST, Key=f"{folder}manifest.json", Body=text)
    s3.put_object(Bucket=DEST, Key=f"{folder}manifest.checksum", Body=f"{md5(text)}\n".encode())
    return f"{folder}manifest.json"


def find(s3: Any, now: float = NOW, max_age: int = 48 * 3600, why: list[str] | None = None) -> Manifest | None:
    return latest_manifest(
        s3, DEST, PREFIX, BUCKET, INVENTORY_ID, now, max_age, why.append if why is not None else None
    )


def clients_of(aws: Any) -> Any:
    return lambda service: {"dynamodb": aws.dynamodb, "s3": aws.s3}[service]


@pytest.fixture
def world(aws):
    create_table(aws.dynamodb)
    aws.s3.create_bucket(Bucket=BUCKET)
    aws.s3.create_bucket(Bucket=DEST)
    return aws


def put(s3: Any, *stems: str) -> list[str]:
    keys = [f"uploads/2025-08-21/{stem}.mp4" for stem in stems]
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    return keys


def sweep(world: Any, **settings: Any) -> Any:
    job = sweep_job(s3=S3_SETTINGS, orphaned_objects={**ORPHANS, **settings.pop("orphans", {})}, **settings)
    return run(job, sweep_work(clients_of(world)))


# The manifest ----------------------------------------------------------------------------------


def test_the_newest_report_with_a_manifest_is_read(world):
    write_report(world.s3, [], CREATED - 86400)
    newest = write_report(world.s3, [("uploads/a", OLD)])
    world.s3.put_object(Bucket=DEST, Key=f"{ROOT}2099-01-01T00-00Z/partial", Body=b"")  # still being delivered
    manifest = find(world.s3)
    assert manifest is not None and manifest.key == newest and manifest.created == CREATED
    assert manifest.columns == COLUMNS and len(manifest.files) == 1
    assert [(o.key, o.size) for o in inventory_objects(world.s3, manifest)] == [("uploads/a", 1)]


def test_no_report_or_a_stale_one_is_none_and_says_why(world):
    why: list[str] = []
    assert find(world.s3, why=why) is None and "no inventory report under" in why[0]
    write_report(world.s3, [], NOW - 50 * 3600)
    why.clear()
    assert find(world.s3, why=why) is None and "hours old (max_age_hours 48)" in why[0]


@pytest.mark.parametrize(
    "tamper, message",
    [
        ({"sourceBucket": "someone-else"}, "sourceBucket"),
        ({"fileFormat": "ORC"}, "fileFormat"),
        ({"fileSchema": "Bucket, Key, Size"}, "fileSchema"),
        ({"creationTimestamp": "yesterday"}, "creationTimestamp"),
        ({"creationTimestamp": str((NOW + 86400) * 1000)}, "in the future"),
        ({"destinationBucket": "arn:aws:s3:::elsewhere"}, "destinationBucket"),
        ({"files": [{"key": "elsewhere/data.csv.gz"}]}, "files[0].key"),
        ({"files": "all"}, "files must be a list"),
    ],
)
def test_a_manifest_failing_a_check_is_refused_naming_it(world, tamper, message):
    write_report(world.s3, [("uploads/a", OLD)], **tamper)
    with pytest.raises(InventoryError, match=re.escape(message)):
        find(world.s3)


def test_a_manifest_not_matching_its_checksum_is_refused(world):
    key = write_report(world.s3, [("uploads/a", OLD)])
    world.s3.put_object(Bucket=DEST, Key=key.replace("manifest.json", "manifest.checksum"), Body=md5(b"other"))
    with pytest.raises(InventoryError, match="manifest.checksum"):
        find(world.s3)


def test_a_data_file_not_matching_its_md5_is_refused(world):
    write_report(world.s3, [("uploads/a", OLD)])
    manifest = find(world.s3)
    assert manifest is not None
    world.s3.put_object(Bucket=DEST, Key=manifest.files[0], Body=data_file([[BUCKET, "uploads%2Fb", "1", stamp(OLD)]]))
    with pytest.raises(InventoryError, match="MD5checksum"):
        list(inventory_objects(world.s3, manifest))


def test_delete_markers_and_older_versions_are_skipped(world):
    columns = ("Bucket", "Key", "VersionId", "IsLatest", "IsDeleteMarker", "Size", "LastModifiedDate")
    rows = [
        [BUCKET, "uploads/live", "v2", "true", "false", "3", stamp(OLD)],
        [BUCKET, "uploads/live", "v1", "false", "false", "2", stamp(OLD - 60)],
        [BUCKET, "uploads/removed", "v3", "true", "true", "", stamp(OLD)],
    ]
    write_report(world.s3, [], columns=columns, rows=rows)
    manifest = find(world.s3)
    assert manifest is not None
    assert [(o.key, o.size) for o in inventory_objects(world.s3, manifest)] == [("uploads/live", 3)]


def test_a_row_of_another_bucket_is_refused(world):
    write_report(world.s3, [], rows=[["someone-else", "uploads/a", "1", stamp(OLD)]])
    manifest = find(world.s3)
    assert manifest is not None
    with pytest.raises(InventoryError, match="of bucket 'someone-else'"):
        list(inventory_objects(world.s3, manifest))


# Pieces of keys that URL-encode oddly: a space and "+" (form encoding), "%" and what looks encoded
# already, dots, quotes and CSV's own characters, non-ASCII and a Unicode line separator.
PIECES = [*"aZ09 .+%&=?#~'\"-_,;:!*()[]{}é漢😀\u00a0\u2028", "%2B", "%20", "+%", "..", "%zz"]
HOSTILE = st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map("".join)


@given(stems=st.lists(HOSTILE, min_size=1, max_size=6, unique=True), slash_safe=st.booleans())
@example(stems=["a b", "a+b", "a%2Bb", "100%", "..", "漢 😀"], slash_safe=True)
def test_hostile_keys_read_back_exactly(aws_in_process, stems, slash_safe):
    s3 = aws_in_process.s3
    if DEST not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=DEST)
    keys = [f"uploads/2025-08-21/{stem}.mp4" for stem in stems]
    write_report(s3, [(key, OLD) for key in keys], encode=lambda k: quote_plus(k, safe="/" if slash_safe else ""))
    manifest = find(s3)
    assert manifest is not None
    assert [o.key for o in inventory_objects(s3, manifest)] == keys


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=8,
)
GOOD = {
    "sourceBucket": BUCKET,
    "destinationBucket": f"arn:aws:s3:::{DEST}",
    "creationTimestamp": str(CREATED * 1000),
    "fileFormat": "CSV",
    "fileSchema": ", ".join(COLUMNS),
    "files": [{"key": f"{ROOT}data/a.csv.gz", "MD5checksum": "0" * 32}],
}


@given(field=st.sampled_from(sorted(GOOD)), value=JSON)
@example(field="creationTimestamp", value=-1)
@example(field="files", value=[{"key": f"{ROOT}data/b.csv.gz", "MD5checksum": "not-md5"}])
def test_a_hostile_manifest_is_read_or_refused_never_misread(field, value):
    """Any value in any field: the manifest parses to what it says, or is refused as InventoryError."""
    body = json.dumps({**GOOD, field: value}).encode()
    try:
        manifest = parse_manifest(body, DEST, f"{ROOT}x/manifest.json", BUCKET, ROOT)
    except InventoryError:
        return
    assert manifest.source_bucket == BUCKET and {"Key", "LastModifiedDate"} <= set(manifest.columns)
    assert all(key.startswith(ROOT) for key in manifest.files) and manifest.created >= 0


# The orphan pass -------------------------------------------------------------------------------


def test_orphans_come_from_the_report_and_owned_objects_stay(world):
    owned, named, orphan, unlisted = put(world.s3, "owned", "named", "orphan", "unlisted")
    put_session(world.dynamodb, "owned", NOW + 86400)
    put_session(world.dynamodb, "someone", NOW + 86400, key=named)  # a live item names it: never deleted
    write_report(world.s3, [(owned, OLD), (named, OLD), (orphan, OLD)])
    result = sweep(world)
    assert object_keys(world.s3) == {owned, named, unlisted}  # not in the report: not judged this run
    assert result.summary["plan"]["orphans_source"]["source"] == "inventory"
    assert result.counts["orphans_deleted"] == 1 and result.emf[metrics.ORPHANS_DELETED] == 1
    assert result.counts["objects_inventoried"] == 3 and "objects_listed" not in result.counts


def test_objects_newer_than_the_report_or_the_grace_are_never_candidates(world):
    listed_new, young, rewritten = put(world.s3, "listed-new", "young", "rewritten")
    # The report says: one written after it began, one within the grace; the third was old when listed
    # but has been written again since the report (moto's clock is real time, before CREATED - 2 days).
    created = time.time() - 60
    now = created + 1.5 * 86400
    rows = [(listed_new, created + 1), (young, now - 3600), (rewritten, created - 3 * 86400)]
    write_report(world.s3, rows, created)
    job = sweep_job(s3=S3_SETTINGS, orphaned_objects=ORPHANS)

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 900_000

    summary = run_job(job, sweep_work(clients_of(world)), Context(), clock=lambda: now, stream=io.StringIO())
    assert object_keys(world.s3) == {listed_new, young, rewritten}
    assert summary["counts"].get("orphans_written_since_inventory") == 1, summary["counts"]
    assert summary["plan"]["counts"]["orphans_to_delete"] == 0


def test_an_object_deleted_since_the_report_is_skipped_without_error(world):
    gone, (orphan, owned) = "uploads/2025-08-21/gone.mp4", put(world.s3, "orphan", "owned")
    put_session(world.dynamodb, "owned", NOW + 86400)
    write_report(world.s3, [(gone, OLD), (orphan, OLD), (owned, OLD)])
    result = sweep(world)
    assert object_keys(world.s3) == {owned}
    assert result.counts["orphans_gone_since_inventory"] == 1 and result.counts["orphans_deleted"] == 1
    assert result.counts.get("errors", 0) == 0


def test_without_a_fresh_report_the_pass_lists_and_says_why(world):
    orphan, owned = put(world.s3, "orphan", "owned")
    put_session(world.dynamodb, "owned", NOW + 86400)
    write_report(world.s3, [(orphan, OLD), (owned, OLD)], NOW - 49 * 3600)
    result = sweep(world)
    source = result.summary["plan"]["orphans_source"]
    assert source["source"] == "listing" and "hours old" in source["reason"]
    assert object_keys(world.s3) == {owned} and result.counts["objects_listed"] == 2


@pytest.mark.parametrize("tamper", ["checksum", "source", "data"])
def test_a_tampered_report_deletes_nothing(world, tamper):
    keys = put(world.s3, "a", "b")
    manifest_key = write_report(world.s3, [(key, OLD) for key in keys], sourceBucket=BUCKET)
    if tamper == "checksum":
        world.s3.put_object(Bucket=DEST, Key=manifest_key.replace(".json", ".checksum"), Body=md5(b"x"))
    elif tamper == "source":
        manifest_key = write_report(world.s3, [(key, OLD) for key in keys], CREATED + 60, sourceBucket="other")
    else:
        manifest = find(world.s3)
        assert manifest is not None
        world.s3.put_object(Bucket=DEST, Key=manifest.files[0], Body=data_file([[BUCKET, keys[0], "1", stamp(OLD)]]))
    result = sweep(world)
    assert object_keys(world.s3) == set(keys)
    assert result.summary["plan"]["orphans_source"]["source"] == "none"
    assert result.summary["plan"]["counts"]["orphans_to_delete"] == 0
    assert result.counts["errors"] == 1 and result.emf[metrics.CLEANUP_ERRORS] == 1


def test_a_later_data_file_failing_its_md5_undoes_the_orphans_of_the_earlier_ones(world):
    # A first file of more orphans than one owner batch: they are planned before the last file is read.
    early = put(world.s3, *(f"early-{i}" for i in range(110)))
    late = put(world.s3, "late")
    rows = [[[BUCKET, quote_plus(key), "1", stamp(OLD)] for key in keys] for keys in (early, late)]
    bodies = [data_file(part) for part in rows]
    keys = [f"{ROOT}data/part-{i}.csv.gz" for i in range(2)]
    for key, body in zip(keys, bodies, strict=True):
        world.s3.put_object(Bucket=DEST, Key=key, Body=body)
    files = [{"key": key, "size": len(body), "MD5checksum": md5(body)} for key, body in zip(keys, bodies, strict=True)]
    files[1]["MD5checksum"] = md5(b"something else")
    write_report(world.s3, [], files=files)
    result = sweep(world, breaker=ALLOW)
    assert object_keys(world.s3) == {*early, *late}
    source = result.summary["plan"]["orphans_source"]
    assert source["source"] == "none" and "part-1.csv.gz: does not match its MD5checksum" in source["reason"]
    assert result.summary["plan"]["counts"]["orphans_to_delete"] == 0


def test_the_dry_run_is_the_plan_the_real_run_carries_out(world):
    keys = put(world.s3, "a", "b", "owned")
    put_session(world.dynamodb, "owned", NOW + 86400)
    write_report(world.s3, [(key, OLD) for key in keys])
    dry = sweep(world, dry_run=True)
    assert object_keys(world.s3) == set(keys)
    real = sweep(world)
    assert dry.summary["plan"] == real.summary["plan"]
    assert object_keys(world.s3) == {keys[2]}


def test_the_setting_is_checked_naming_the_field():
    def job(**inventory: Any) -> Any:
        return sweep_job(s3=S3_SETTINGS, orphaned_objects={**ORPHANS, "inventory": {**INVENTORY, **inventory}})

    for bad, field in [
        ({"destination_bucket": "Not_A_Bucket"}, "orphaned_objects.inventory.destination_bucket"),
        ({"inventory_id": "a/b"}, "orphaned_objects.inventory.inventory_id"),
        ({"destination_prefix": "reports/"}, "orphaned_objects.inventory.destination_prefix"),
        ({"max_age_hours": 2}, "orphaned_objects.inventory.max_age_hours"),
        ({"format": "ORC"}, "orphaned_objects.inventory: unknown settings ['format']"),
    ]:
        with pytest.raises(JobConfigError, match=re.escape(field)):
            job(**bad)
    assert job().orphaned_objects.inventory.max_age_seconds == 48 * 3600


# Hostile worlds ----------------------------------------------------------------------------------

STEMS = st.lists(HOSTILE, min_size=1, max_size=8, unique=True)


@settings(max_examples=30)  # each example is a fresh moto world
@given(stems=STEMS, data=st.data())
def test_hostile_worlds_never_lose_a_named_object(fake_aws_credentials, stems, data):
    """Whatever the report says and whatever happened since: an object a live item names, one not
    listed, one newer than the report or the grace all stay; one deleted since is skipped without
    error; only the report's orphans go, and the dry run plans what the run does."""
    keys = [f"uploads/2025-08-21/{stem}.mp4" for stem in stems]
    fate_names = ["orphan", "owned", "named", "gone", "unlisted", "newer", "young"]
    fates = {key: data.draw(st.sampled_from(fate_names), key) for key in keys}
    # As the report has it: written after the report began, within the grace, or before both.
    modified = {"newer": CREATED + 1, "young": NOW - 3600}
    with mock_aws():
        aws = type("World", (), {"dynamodb": make_client("dynamodb", None), "s3": make_client("s3", None)})()
        create_table(aws.dynamodb)
        aws.s3.create_bucket(Bucket=BUCKET)
        aws.s3.create_bucket(Bucket=DEST)
        for key, fate in fates.items():
            if fate != "gone":
                aws.s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
            if fate == "owned":
                put_session(aws.dynamodb, key.rsplit("/", 1)[1].rsplit(".", 1)[0], NOW + 86400)
            if fate == "named":
                put_session(aws.dynamodb, f"other-{uuid.uuid4()}", NOW + 86400, key=key)
        write_report(aws.s3, [(key, modified.get(fate, OLD)) for key, fate in fates.items() if fate != "unlisted"])
        dry = sweep(aws, dry_run=True, breaker=ALLOW)
        real = sweep(aws, breaker=ALLOW)
        left = object_keys(aws.s3)
    assert dry.summary["plan"] == real.summary["plan"]
    assert left == {key for key, fate in fates.items() if fate not in ("orphan", "gone")}
    assert real.counts.get("errors", 0) == 0


# Under IAM as AWS enforces it --------------------------------------------------------------------


@pytest.fixture(scope="module")
def iam_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamServer]:
    server = IamServer(tmp_path_factory.mktemp("iam"))
    yield server
    server.stop()


@pytest.mark.parametrize("reads", ["granted", "taken away"])
def test_the_pass_runs_under_exactly_its_generated_policy(iam_server, reads):
    """The sweep role's grants (runtime/kinds/sweep.py) are what the inventory pass needs: with them
    it runs clean, denied nothing; without the report reads it fails visibly and deletes nothing."""
    iam_server.reset()
    admin = type("Admin", (), {"dynamodb": make_client("dynamodb", iam_server.url), "s3": None})()
    admin.s3 = make_client("s3", iam_server.url)
    create_table(admin.dynamodb)
    admin.s3.create_bucket(Bucket=BUCKET)
    admin.s3.create_bucket(Bucket=DEST)
    orphan, owned = put(admin.s3, "orphan", "owned")
    put_session(admin.dynamodb, "owned", NOW + 86400)
    write_report(admin.s3, [(orphan, OLD), (owned, OLD), ("uploads/2025-08-21/gone.mp4", OLD)])
    job = sweep_job(s3=S3_SETTINGS, orphaned_objects=ORPHANS)
    table_arn = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/{job.table}"
    policy = function_policy(job, Arns(table_arn, f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:sweep", BUCKET), "")
    if reads == "taken away":
        policy["Statement"] = [s for s in policy["Statement"] if not s["Sid"].startswith("Inventory")]
    trust = json.dumps({"Version": "2012-10-17", "Statement": []})
    function = Function("inventory-sweep", "", Path(), "{}", [json.dumps(policy)], trust)
    bind_role(iam_server.url, function)
    keys = {name.lower(): value for name, value in function.credentials.items()}
    role = type("Role", (), {})()
    role.dynamodb = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=iam_server.url, **keys)
    role.s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=iam_server.url, **keys)
    with iam_server.enforced():
        if reads == "granted":
            result = run(job, sweep_work(clients_of(role)))
        else:
            with pytest.raises(ClientError, match="AccessDenied"):
                run(job, sweep_work(clients_of(role)))
    left = {o["Key"] for o in admin.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    if reads == "granted":
        assert left == {owned} and denied(iam_server, function) == []
        decisions = iam_server.decisions(function.role)
        used = {(d["action"], d["resource"].split(":::")[-1].split("/")[0]) for d in decisions}
        assert {("s3:GetObject", DEST), ("s3:ListBucket", DEST)} <= used
        assert result.summary["plan"]["orphans_source"]["source"] == "inventory"
        assert result.counts["orphans_gone_since_inventory"] == 1 and result.counts.get("errors", 0) == 0
    else:
        assert left == {orphan, owned} and denied(iam_server, function)
