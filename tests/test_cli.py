"""The operator CLI (`expiry`, also `python -m expiry`) as an operator runs it: a subprocess against moto_server
over HTTP and against the test PostgreSQL, with its output, exit codes and error lines."""

import io
import json
import os
import subprocess
import sys
import time
import zipfile

import boto3
import pytest
from docs_pages import all_text
from postgres import expiring_table
from tests_support import free_port
from uploads_world import BUCKET, TABLE, create_table, object_keys, put_session, session_ids

from expiry import __version__ as expiry_version
from expiry.runtime.cli import EXIT_CODES, FAILED, INTERRUPTED, NOT_CONFIRMED, REFUSED, USAGE

NOW = int(time.time())
ACCOUNT = "123456789012"  # moto's


def cli(*args: str, endpoint: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess; ``env`` changes its environment (an empty value removes a variable)."""
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        **(env or {}),
    }
    env = {name: value for name, value in env.items() if value}
    command = [sys.executable, "-m", "expiry", *args]
    if endpoint:
        command += ["--endpoint-url", endpoint]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, check=False)


@pytest.fixture
def uploads(moto_server):
    from aws import aws_backend

    with aws_backend("moto_server", moto_server) as aws:
        create_table(aws.dynamodb)
        aws.dynamodb.update_time_to_live(
            TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"}
        )
        aws.s3.create_bucket(Bucket=BUCKET)
        for i in range(30):
            aws.s3.put_object(Bucket=BUCKET, Key=f"uploads/old-{i}/v.mp4", Body=b"x")
            put_session(aws.dynamodb, f"old-{i}", NOW - 3600 - i, key=f"uploads/old-{i}/v.mp4")
        put_session(aws.dynamodb, "live", NOW + 3600)
        yield aws, moto_server.url


def test_status_reports_ttl_backlog_and_oldest_expiry(uploads):
    aws, url = uploads
    items = aws.dynamodb.scan(TableName=TABLE, ProjectionExpression="#t", ExpressionAttributeNames={"#t": "ttl"})
    oldest = min(int(item["ttl"]["N"]) for item in items["Items"] if "ttl" in item)
    before = time.time()
    result = cli("status", "--table", TABLE, "--json", endpoint=url)
    after = time.time()
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["ttl_enabled"] is True and status["ttl_attribute"] == "ttl"
    assert status["expired_backlog"] == 30 and len(status["sample_keys"]) == 10
    # The age as of the CLI's own clock, whenever it ran (a loaded machine delays it, nothing more).
    assert int(before) - oldest - 1 <= status["oldest_expired_age_seconds"] <= after - oldest + 1
    assert session_ids(aws.dynamodb) >= {"live", "old-0"}  # read-only


def test_sweep_refuses_to_run_without_dry_run_or_yes(uploads):
    aws, url = uploads
    result = cli("sweep", "--table", TABLE, endpoint=url)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "expiry: error: sweep deletes data: run it with --dry-run first, then with --yes (or on a terminal)"
    )
    assert len(session_ids(aws.dynamodb)) == 31


def test_dry_run_then_sweep_with_cascade_and_progress(uploads):
    aws, url = uploads
    cascade = ("--s3-bucket", BUCKET, "--s3-key-attribute", "key")
    dry = cli("sweep", "--table", TABLE, "--dry-run", "--json", *cascade, endpoint=url)
    assert dry.returncode == 3, dry.stderr  # 30 of 31 items: the breaker refuses the plan
    plan = json.loads(dry.stdout)["plan"]
    assert plan["counts"]["items_to_delete"] == 30 and "breaker.max_share" in plan["refused"][0]
    assert "30 to delete of 31 examined" in dry.stderr
    assert len(session_ids(aws.dynamodb)) == 31 and len(object_keys(aws.s3)) == 30  # nothing written
    refused = cli("sweep", "--table", TABLE, "--yes", *cascade, endpoint=url)
    assert refused.returncode == 3 and len(session_ids(aws.dynamodb)) == 31 and len(object_keys(aws.s3)) == 30
    real = cli("sweep", "--table", TABLE, "--yes", "--allow-mass-deletion", "--progress", *cascade, endpoint=url)
    assert real.returncode == 0, real.stderr
    assert f"target: region us-east-1  account {ACCOUNT}  endpoint {url}  table {TABLE}" in real.stderr
    assert "planned: 30 items to delete, 30 objects to delete" in real.stderr
    assert "deleted 30/30 (100.0%)" in real.stderr  # the progress line's last state
    assert "counts" in real.stdout and '"items_deleted": 30' in real.stdout
    assert session_ids(aws.dynamodb) == {"live"} and object_keys(aws.s3) == set()


def test_sweep_with_the_settings_a_lambda_runs(uploads, tmp_path):
    aws, url = uploads
    job = {
        "kind": "sweep",
        "job_name": "upload-sweeper",
        "table_name": TABLE,
        "key_attributes": ["uploadSessionId"],
        "ttl_attribute": "ttl",
        "max_items": 5,
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    result = cli("sweep", "--job", f"@{tmp_path / 'job.json'}", "--yes", "--json", endpoint=url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["items_deleted"] == 5 and len(session_ids(aws.dynamodb)) == 26


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ("status", "--table", "no-such-table"),
            1,
            "expiry: error: AWS: An error occurred (ResourceNotFoundException)",
        ),
        (("status",), 2, "expiry: error: give --table (or --job)"),
        (("sweep", "--job", '{"kind": "sweep"}', "--yes"), 2, "expiry: error: --job: key_attributes: must name"),
        (("sweep", "--job", "{not json", "--yes"), 2, "expiry: error: --job: is not valid JSON"),
        (("frobnicate",), 2, "expiry: error: argument command: invalid choice: 'frobnicate'"),
        (("sweep", "--table", TABLE, "--yes", "--max-items", "0"), 2, "expiry: error: options: max_items: must be an"),
        (("sweep", "--table", TABLE, "--yes", "--workers", "0"), 2, "expiry: error: options: workers: must be an"),
    ],
)
def test_errors_are_one_line_and_a_non_zero_exit(uploads, args, code, message):
    aws, url = uploads
    result = cli(*args, endpoint=url)
    assert result.returncode == code
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert len(session_ids(aws.dynamodb)) == 31  # nothing was deleted


@pytest.fixture
def pg_table(postgres):
    return postgres, expiring_table(postgres, expired=40)


def test_postgres_status_and_sweep(pg_table):
    postgres, database = pg_table
    target = ("--postgres", postgres.dsn(database), "--table", "attributes", "--expiry-column", "ttl_timestamp")
    status = cli("status", *target, "--json")
    assert status.returncode == 0, status.stderr
    found = json.loads(status.stdout)
    assert (found["expired_rows"], found["live_rows"], found["permanent_rows"]) == (40, 1, 1)
    assert found["oldest_expired_age_seconds"] >= 140 and found["expiry_column_indexed"] is False
    dry = cli("sweep", *target, "--dry-run", "--json")
    assert dry.returncode == 3 and json.loads(dry.stdout)["expired_rows"] == 40  # refused by the breaker
    assert json.loads(dry.stdout)["refused"].startswith("mass-deletion breaker: 40 of 42 rows examined")
    refused = cli("sweep", *target, "--yes", "--json")
    assert refused.returncode == 3 and "nothing was deleted" in refused.stderr
    swept = cli("sweep", *target, "--yes", "--allow-mass-deletion", "--batch-size", "15", "--json", "--progress")
    assert swept.returncode == 0, swept.stderr
    summary = json.loads(swept.stdout)
    assert (summary["rows_deleted"], summary["out_of_time"], summary["target"]["table"]) == (
        40,
        False,
        "public.attributes",
    )
    assert "rows deleted 40/40 (100.0%)" in swept.stderr
    with postgres.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM attributes").fetchone()[0] == 2


def test_postgres_errors_are_one_line(pg_table):
    postgres, database = pg_table
    missing = cli("status", "--postgres", postgres.dsn(database), "--table", "attributes", "--expiry-column", "nope")
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "expiry: error: expiry_column: no column 'nope' in table public.attributes of this database"
    )
    down = cli(
        "status",
        "--postgres",
        "host=127.0.0.1 port=9 dbname=x user=x connect_timeout=2",
        "--table",
        "t",
        "--expiry-column",
        "e",
    )
    assert down.returncode == 1 and down.stderr.startswith("expiry: error: OperationalError:")
    assert len(down.stderr.strip().splitlines()) == 1


def test_status_shows_the_last_runs_from_the_log_group(uploads):
    aws, url = uploads
    logs = aws.client("logs")
    logs.create_log_group(logGroupName="/expiry/expiry/prod/upload-sweeper")
    logs.create_log_stream(logGroupName="/expiry/expiry/prod/upload-sweeper", logStreamName="s")
    now_ms = int(time.time() * 1000)
    lines = [
        {
            "level": "INFO",
            "event": "cleanup_summary",
            "job": "upload-sweeper",
            "dry_run": False,
            "duration_ms": 12,
            "stopped_early": False,
            "counts": {"items_deleted": run},
        }
        for run in range(7)
    ]
    events = [{"timestamp": now_ms - 60_000 * (10 - i), "message": json.dumps(line)} for i, line in enumerate(lines)]
    wrapped = {"timestamp": "x", "level": "INFO", "message": json.dumps({**lines[0], "counts": {"items_deleted": 99}})}
    events.append({"timestamp": now_ms - 1000, "message": json.dumps(wrapped)})  # Lambda's JSON log format
    events.append({"timestamp": now_ms - 500, "message": '{"_aws": {}, "ItemsDeleted": 3}'})  # EMF, not a summary
    logs.put_log_events(logGroupName="/expiry/expiry/prod/upload-sweeper", logStreamName="s", logEvents=events)
    result = cli(
        "status", "--table", TABLE, "--log-group", "/expiry/expiry/prod/upload-sweeper", "--json", endpoint=url
    )
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)["last_runs"]
    assert [r["counts"]["items_deleted"] for r in runs] == [99, 6, 5, 4, 3]  # newest first, five of them


DEPLOYED_JOB = {
    "kind": "sweep",
    "job_name": "upload-sweeper",
    "table_name": TABLE,
    "key_attributes": ["uploadSessionId"],
    "ttl_attribute": "ttl",
    "s3": {
        "bucket": BUCKET,
        "key_attribute": "key",
        "status_attribute": "status",
        "keep_statuses": ["uploaded"],
    },
}


def deploy(aws, name: str, variables: dict[str, str]) -> None:
    """A Lambda function in moto_server whose environment holds ``variables``."""
    iam, functions = aws.client("iam"), aws.client("lambda")
    role = iam.create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("handler.py", "def handler(event, context):\n    return None\n")
    functions.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=role,
        Handler="handler.handler",
        Code={"ZipFile": archive.getvalue()},
        Environment={"Variables": variables},
    )


@pytest.fixture
def deployed(moto_server):
    """The upload layout with an expired `uploaded` session (its video stays), two expired `created` ones
    and live ones; the sweeper Lambda's job keeps the videos of `uploaded` sessions."""
    from aws import aws_backend

    with aws_backend("moto_server", moto_server) as aws:
        create_table(aws.dynamodb)
        aws.s3.create_bucket(Bucket=BUCKET)
        for session, status in (("done", "uploaded"), ("gone-1", "created"), ("gone-2", "created")):
            aws.s3.put_object(Bucket=BUCKET, Key=f"uploads/{session}.mp4", Body=b"x")
            put_session(aws.dynamodb, session, NOW - 3600, key=f"uploads/{session}.mp4", status=status)
        for i in range(8):
            put_session(aws.dynamodb, f"live-{i}", NOW + 3600)
        deploy(aws, "upload-sweeper-prod", {"EXPIRY_JOB": json.dumps(DEPLOYED_JOB)})
        yield aws, moto_server.url


def test_sweep_on_function_runs_the_deployed_job_and_keeps_what_it_keeps(deployed):
    aws, url = deployed
    dry = cli("sweep", "--function", "upload-sweeper-prod", "--dry-run", "--json", endpoint=url)
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)["plan"]["counts"]
    assert (planned["items_to_delete"], planned["objects_to_delete"]) == (3, 2)  # not the `uploaded` video
    result = cli("sweep", "--function", "upload-sweeper-prod", "--yes", "--json", endpoint=url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["job"] == "upload-sweeper"
    assert session_ids(aws.dynamodb) == {f"live-{i}" for i in range(8)}
    assert object_keys(aws.s3) == {"uploads/done.mp4"}  # the deployed job keeps it; --s3-bucket would not


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--table", TABLE), 2, "--function runs the deployed job as it is: --table would change what it deletes"),
        (("--allow-mass-deletion", "--max-items", "1"), 2, ": --max-items, --allow-mass-deletion would change"),
        (("--s3-bucket", BUCKET, "--s3-key-attribute", "key"), 2, ": --s3-bucket, --s3-key-attribute would"),
        (("--function", "no-such-function"), 1, "expiry: error: AWS: An error occurred (ResourceNotFoundException)"),
        (("--function", "plain"), 2, "expiry: error: --function plain: has no EXPIRY_JOB in its environment"),
        (("--function", "monitor"), 2, "--function monitor: kind: sweep runs sweep and "),
    ],
)
def test_sweep_on_function_refuses_what_would_change_the_deployed_job(deployed, args, code, message):
    aws, url = deployed
    deploy(aws, "plain", {"OTHER": "1"})
    deploy(aws, "monitor", {"EXPIRY_JOB": json.dumps({**DEPLOYED_JOB, "kind": "ttl-monitor"})})
    result = cli("sweep", "--function", "upload-sweeper-prod", *args, "--yes", endpoint=url)
    assert result.returncode == code
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert len(session_ids(aws.dynamodb)) == 11 and len(object_keys(aws.s3)) == 3  # nothing was deleted


def test_yes_on_a_dry_run_job_says_it_deletes_nothing(uploads):
    aws, url = uploads
    job = {"kind": "sweep", "job_name": "quiet", "table_name": TABLE, "key_attributes": ["uploadSessionId"]}
    job |= {"ttl_attribute": "ttl", "dry_run": True, "breaker": {"allow_mass_deletion": True}}
    result = cli("sweep", "--job", json.dumps(job), "--yes", "--json", endpoint=url)
    assert result.returncode == 0, result.stderr
    assert "expiry: job quiet is a dry run (dry_run: true): --yes deletes nothing" in result.stderr
    assert json.loads(result.stdout)["dry_run"] is True and len(session_ids(aws.dynamodb)) == 31


def test_the_target_shows_the_account_and_the_endpoint_from_the_environment(uploads):
    _, url = uploads
    env = {"AWS_ENDPOINT_URL": url}
    shown = cli("sweep", "--table", TABLE, "--dry-run", env=env)
    assert f"target: region us-east-1  account {ACCOUNT}  endpoint {url}  table {TABLE}" in shown.stderr
    no_sts = {**env, "AWS_ENDPOINT_URL_STS": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    unknown = cli("sweep", "--table", TABLE, "--dry-run", "--call-timeout", "2", env=no_sts)
    assert f"target: region us-east-1  account unknown  endpoint {url}  table {TABLE}" in unknown.stderr


def test_version_profile_and_help(uploads, tmp_path):
    _, url = uploads
    version = cli("--version")
    assert (version.returncode, version.stdout) == (0, f"expiry {expiry_version}\n")
    config = tmp_path / "config"
    config.write_text("[profile ops]\nregion = eu-west-2\naws_access_key_id = x\naws_secret_access_key = y\n")
    boto3.client("dynamodb", region_name="eu-west-2", endpoint_url=url).create_table(
        TableName="in-london",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    env = {"AWS_CONFIG_FILE": str(config), "AWS_DEFAULT_REGION": "", "AWS_ACCESS_KEY_ID": "", "AWS_SESSION_TOKEN": ""}
    status = cli("status", "--profile", "ops", "--table", "in-london", "--json", endpoint=url, env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["target"]["region"] == "eu-west-2"
    missing = cli("status", "--profile", "nope", "--table", TABLE, endpoint=url)
    assert missing.returncode == 2
    assert missing.stderr == "expiry: error: --profile: The config profile (nope) could not be found\n"
    helped = cli("sweep", "--help")
    assert "expiry sweep --function upload-sweeper-prod --dry-run" in helped.stdout


def test_the_exit_codes_are_one_table_in_help_and_readme():
    readme = all_text()  # README.md and docs/*.md
    rows = EXIT_CODES.splitlines()[1:]
    assert [int(row.split()[0]) for row in rows] == [0, FAILED, USAGE, REFUSED, NOT_CONFIRMED, INTERRUPTED]
    assert len({FAILED, USAGE, REFUSED, NOT_CONFIRMED, INTERRUPTED}) == 5
    for row in rows:
        code, meaning = row.split(maxsplit=1)
        assert f"| {code} | {meaning} |" in readme, row
    assert EXIT_CODES in cli("status", "--help").stdout
