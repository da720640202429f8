"""The Lambda archive the component builds: deterministic, expiry/runtime/ only, and it runs.

Each handler is imported from the unzipped archive in a fresh interpreter (with only boto3 beside
it) and run against moto_server over HTTP: the code tested is the code shipped."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from tests_support import emf_totals
from uploads_world import BUCKET, NOW, TABLE, create_ledger, create_table, put_session, session_ids

from expiry.components.lambda_bundle import build_bundle, default_build_dir
from expiry.components.scheduled_sweeper import ScheduledSweeper

TABLE_ARN = f"arn:aws:dynamodb:us-east-1:123456789012:table/{TABLE}"


def built_archive(harness, tmp_path: Path, monkeypatch, **args) -> tuple[Path, dict]:
    monkeypatch.setenv("EXPIRY_BUILD_DIR", str(tmp_path / "build"))
    harness.run(
        lambda: ScheduledSweeper(
            "job",
            {
                "kind": "sweep",
                "schedule": "rate(1 hour)",
                "table_name": TABLE,
                "table_arn": TABLE_ARN,
                "key_attributes": ["uploadSessionId"],
                "ttl_attribute": "ttl",
                **args,
            },
        )
    )
    function = harness.one("aws:lambda/function:Function").inputs
    (archive,) = (tmp_path / "build").glob("*.zip")
    return archive, function


def test_archive_holds_runtime_sources_only_and_hashes_the_same_twice(tmp_path):
    first = build_bundle(None, "test", tmp_path / "a")
    second = build_bundle(None, "test", tmp_path / "b")
    assert first.sha256_base64 == second.sha256_base64
    assert first.path.read_bytes() == second.path.read_bytes()
    names = zipfile.ZipFile(first.path).namelist()
    assert {"expiry/__init__.py", "expiry/runtime/__init__.py", "expiry/runtime/handlers/sweep.py"} <= set(names)
    assert all(
        name.startswith("expiry/runtime/") and name.endswith(".py") for name in names if name != "expiry/__init__.py"
    )
    assert not any("__pycache__" in name or "tests" in name for name in names)
    assert {info.date_time for info in zipfile.ZipFile(first.path).infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_archives_go_to_the_override_else_the_user_cache_never_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EXPIRY_BUILD_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert build_bundle(None, "test").path.parent == tmp_path / "home" / ".cache" / "expiry"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_build_dir() == tmp_path / "xdg" / "expiry"
    monkeypatch.setenv("EXPIRY_BUILD_DIR", str(tmp_path / "mine"))
    assert default_build_dir() == tmp_path / "mine"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["home"]


def test_hooks_change_the_hash(tmp_path):
    hooks = tmp_path / "hooks.py"
    hooks.write_text("def before_delete(item, job):\n    return True\n")
    with_hooks = build_bundle(str(hooks), "test", tmp_path / "a")
    assert "expiry_hooks.py" in zipfile.ZipFile(with_hooks.path).namelist()
    assert with_hooks.sha256_base64 != build_bundle(None, "test", tmp_path / "a").sha256_base64


def test_component_points_the_function_at_the_archive(pulumi_mocks, tmp_path, monkeypatch):
    archive, function = built_archive(pulumi_mocks, tmp_path, monkeypatch)
    assert function["sourceCodeHash"] == build_bundle(None, "test", tmp_path / "again").sha256_base64
    assert function["code"].path == str(archive)


RUN_HANDLER = """
import json, sys
import expiry.runtime
assert expiry.runtime.__file__.startswith(sys.argv[1]), expiry.runtime.__file__
module_name, function_name = sys.argv[2].rsplit(".", 1)  # as Lambda reads "module.function"
handler = getattr(__import__(module_name, fromlist=[function_name]), function_name)
class Context:
    def get_remaining_time_in_millis(self):
        return 300_000
result = handler(json.loads(sys.argv[3]), Context())
assert "pulumi" not in sys.modules, "the archive's expiry package imported pulumi"
print("RESULT " + json.dumps(result))
"""


def run_from_archive(
    archive: Path, tmp_path: Path, handler: str, job: dict, endpoint: str, event: dict | None = None
) -> subprocess.CompletedProcess:
    unpacked = tmp_path / "task"
    zipfile.ZipFile(archive).extractall(unpacked)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(unpacked),
        "PYTHONDONTWRITEBYTECODE": "1",
        "EXPIRY_JOB": json.dumps(job),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    return subprocess.run(
        [sys.executable, "-c", RUN_HANDLER, str(unpacked), handler, json.dumps(event or {"source": "test"})],
        cwd=unpacked,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_shipped_sweep_handler_runs_against_moto_server(pulumi_mocks, tmp_path, monkeypatch, moto_server):
    from aws import aws_backend

    hooks = tmp_path / "hooks.py"
    hooks.write_text("def before_delete(item, job):\n    return item['uploadSessionId'] != 'held'\n")
    archive, function = built_archive(
        pulumi_mocks, tmp_path, monkeypatch, hooks_path=str(hooks), s3={"bucket": BUCKET, "key_attribute": "key"}
    )
    job = json.loads(function["environment"]["variables"]["EXPIRY_JOB"])
    job_at_now = {**job, "ttl_attribute": "ttl"}
    with aws_backend("moto_server", moto_server) as aws:
        create_table(aws.dynamodb)
        create_ledger(aws.dynamodb, job["budget_table_name"])
        aws.s3.create_bucket(Bucket=BUCKET)
        aws.s3.put_object(Bucket=BUCKET, Key="uploads/old/v.mp4", Body=b"x")
        put_session(aws.dynamodb, "old", 1_000_000_000, key="uploads/old/v.mp4")  # 2001: expired now
        put_session(aws.dynamodb, "held", 1_000_000_000)
        put_session(aws.dynamodb, "live", NOW)
        result = run_from_archive(archive, tmp_path, function["handler"], job_at_now, moto_server.url)
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout.split("RESULT ", 1)[1])
        assert summary["counts"]["items_deleted"] == 1 and summary["counts"]["items_kept_by_hook"] == 1
        assert session_ids(aws.dynamodb) == {"held", "live"}
        assert aws.s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
        emf = emf_totals([json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"_aws"')])
        assert emf["ItemsDeleted"] == 1 and emf["ObjectsDeleted"] == 1


@pytest.mark.parametrize("kind", ["ttl-monitor", "orphaned-references"])
def test_shipped_handlers_of_other_kinds_run(pulumi_mocks, tmp_path, monkeypatch, moto_server, kind):
    from aws import aws_backend

    extra: dict = {}
    if kind == "orphaned-references":
        extra = {
            "key_attributes": ["uploadSessionId", "ref"],
            "references": {
                "hash_value": "idx",
                "owner_attribute": "owner",
                "indexes": [{"range_prefix": "r:", "target": ["{owner}", "r:{token}"]}],
            },
        }
    archive, function = built_archive(pulumi_mocks, tmp_path, monkeypatch, kind=kind, **extra)
    job = json.loads(function["environment"]["variables"]["EXPIRY_JOB"])
    with aws_backend("moto_server", moto_server) as aws:
        if kind == "orphaned-references":
            create_table(aws.dynamodb, range_key="ref")
            create_ledger(aws.dynamodb, job["budget_table_name"])
            for ref, owner in (("r:1", "nobody"), ("r:2", "someone")):
                aws.dynamodb.put_item(
                    TableName=TABLE,
                    Item={"uploadSessionId": {"S": "idx"}, "ref": {"S": ref}, "owner": {"S": owner}},
                )
            aws.dynamodb.put_item(TableName=TABLE, Item={"uploadSessionId": {"S": "someone"}, "ref": {"S": "r:2"}})
        else:
            create_table(aws.dynamodb)
            put_session(aws.dynamodb, "old", 1_000_000_000)
        result = run_from_archive(archive, tmp_path, function["handler"], job, moto_server.url)
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout.split("RESULT ", 1)[1])
        if kind == "ttl-monitor":
            assert summary["expired_backlog"] == 1 and summary["ttl_enabled"] is False
        else:
            assert summary["counts"]["orphans_deleted"] == 1
            remaining = {
                (i["uploadSessionId"]["S"], i["ref"]["S"]) for i in aws.dynamodb.scan(TableName=TABLE)["Items"]
            }
            assert remaining == {("idx", "r:2"), ("someone", "r:2")}


def test_shipped_handler_refuses_bad_configuration_at_cold_start(pulumi_mocks, tmp_path, monkeypatch, moto_server):
    archive, function = built_archive(pulumi_mocks, tmp_path, monkeypatch)
    result = run_from_archive(
        archive, tmp_path, function["handler"], {"kind": "sweep", "key_attributes": ["id"]}, moto_server.url
    )
    assert result.returncode != 0
    assert "EXPIRY_JOB: table_name: must be a non-empty string" in result.stderr
