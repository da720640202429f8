"""ScheduledSweeper's PostgreSQL jobs: the component (layer, VPC, IAM, settings) under the mocks, and
the shipped archive plus the psycopg layer it built, run in a fresh interpreter against the test
PostgreSQL with the password in Secrets Manager (moto_server)."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from expiry.components.psycopg_layer import build_psycopg_layer
from expiry.components.scheduled_sweeper import ScheduledSweeper
from expiry.runtime.jobs.config import parse_job

FUNCTION = "aws:lambda/function:Function"
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf"


@pytest.fixture(scope="module")
def shared_build(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("build")  # one download of each layer for the module


@pytest.fixture(autouse=True)
def build_dir(shared_build, monkeypatch):
    monkeypatch.setenv("EXPIRY_BUILD_DIR", str(shared_build))


def pg_args(**overrides):
    return {
        "kind": "pg-purge",
        "schedule": "cron(0 3 * * ? *)",
        "table_name": "attributes",
        "postgres": {"host": "db.internal", "database": "app", "secret_arn": SECRET},
        "purge": {"expiry_column": "ttl_timestamp", "batch_size": 1000},
        "subnet_ids": ["subnet-1", "subnet-2"],
        "security_group_ids": ["sg-1"],
        **overrides,
    }


def policy(harness) -> dict:
    document = json.loads(harness.one("aws:iam/rolePolicy:RolePolicy", "purge-policy").inputs["policy"])
    return {statement["Sid"]: statement for statement in document["Statement"]}


def test_pg_purge_function_has_the_layer_vpc_and_only_its_secret(pulumi_mocks):
    pulumi_mocks.run(lambda: ScheduledSweeper("purge", pg_args()))
    fn = pulumi_mocks.one(FUNCTION).inputs
    assert fn["handler"] == "expiry.runtime.handlers.pg_purge.handler"
    assert fn["vpcConfig"] == {"subnetIds": ["subnet-1", "subnet-2"], "securityGroupIds": ["sg-1"]}
    layer = pulumi_mocks.one("aws:lambda/layerVersion:LayerVersion").inputs
    assert (layer["compatibleRuntimes"], layer["compatibleArchitectures"]) == (["python3.13"], ["arm64"])
    (layer_arn,) = fn["layers"]
    assert layer_arn.startswith("arn:aws:lambda:") and "purge-psycopg" in layer_arn
    names = zipfile.ZipFile(layer["code"].path).namelist()
    assert "python/psycopg_binary/_psycopg.cpython-313-aarch64-linux-gnu.so" in names
    attachment = pulumi_mocks.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment").inputs
    assert attachment["policyArn"].endswith("AWSLambdaVPCAccessExecutionRole")
    statements = policy(pulumi_mocks)
    assert set(statements) == {"Logs", "Metrics", "DatabaseSecret"}  # no DynamoDB, no S3
    assert statements["DatabaseSecret"]["Resource"] == [SECRET]
    assert statements["DatabaseSecret"]["Action"] == ["secretsmanager:GetSecretValue"]
    env = fn["environment"]["variables"]["EXPIRY_JOB"]
    assert "password" not in env
    job = parse_job(json.loads(env))
    assert job.postgres.secret_arn == SECRET and job.purge["batch_size"] == 1000


def test_pg_monitor_looks_back_over_its_rate(pulumi_mocks):
    pulumi_mocks.run(lambda: ScheduledSweeper("monitor", pg_args(kind="pg-monitor", schedule="rate(15 minutes)")))
    fn = pulumi_mocks.one(FUNCTION).inputs
    job = parse_job(json.loads(fn["environment"]["variables"]["EXPIRY_JOB"]))
    assert job.postgres.lookback_seconds == 900 and fn["handler"] == "expiry.runtime.handlers.pg_monitor.handler"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"postgres": None}, "ScheduledSweeper: postgres: is required for a pg-purge job"),
        ({"purge": {"expiry_column": "e", "batch_size": 0}}, "ScheduledSweeper: purge.batch_size: must be an integer"),
        ({"purge": {"expiry_column": "e", "colour": "x"}}, "ScheduledSweeper: purge: unknown settings ['colour']"),
        ({"security_group_ids": None}, "ScheduledSweeper: security_group_ids: a function in a VPC needs both"),
        ({"postgres": {"host": "h", "database": "d"}}, "ScheduledSweeper: postgres.secret_arn: must be a non-empty"),
    ],
)
def test_bad_pg_input(pulumi_mocks, overrides, message):
    args = {key: value for key, value in pg_args(**overrides).items() if value is not None}
    with pytest.raises(ValueError) as error:
        pulumi_mocks.run(lambda: ScheduledSweeper("purge", args))
    assert message in str(error.value)
    assert pulumi_mocks.resources == []


RUN = """
import json, sys
import psycopg
assert psycopg.__file__.startswith(sys.argv[1]), psycopg.__file__
module_name, function_name = sys.argv[2].rsplit(".", 1)
handler = getattr(__import__(module_name, fromlist=[function_name]), function_name)
print("RESULT " + json.dumps(handler({}, None)))
"""


def test_shipped_purge_runs_with_the_layer(pulumi_mocks, postgres, moto_server, tmp_path, shared_build):
    from aws import aws_backend

    shipped = postgres.new_database("shipped")
    with postgres.connect(shipped) as conn:
        conn.execute("CREATE TABLE attributes (id serial, ttl_timestamp bigint)")
        conn.execute("CREATE INDEX ON attributes (ttl_timestamp)")  # the batches walk it
        conn.execute(
            "INSERT INTO attributes (ttl_timestamp) SELECT extract(epoch from now())::bigint - 5 "
            "FROM generate_series(1, 12)"
        )
        conn.execute("INSERT INTO attributes (ttl_timestamp) VALUES (NULL)")
        conn.execute(
            "INSERT INTO attributes (ttl_timestamp) SELECT extract(epoch from now())::bigint + 3600 "
            "FROM generate_series(1, 12)"
        )
    with aws_backend("moto_server", moto_server) as aws:
        arn = aws.client("secretsmanager").create_secret(
            Name="db", SecretString=json.dumps({"username": "postgres", "password": "x"})
        )["ARN"]
        pulumi_mocks.run(
            lambda: ScheduledSweeper(
                "purge",
                pg_args(
                    postgres={"host": "127.0.0.1", "port": postgres.port, "database": shipped, "secret_arn": arn},
                    purge={"expiry_column": "ttl_timestamp", "batch_size": 5, "target_batch_ms": 0},
                ),
            )
        )
        fn = pulumi_mocks.one(FUNCTION).inputs
        task = tmp_path / "task"
        zipfile.ZipFile(fn["code"].path).extractall(task)
        # This machine runs x86_64 and Python 3.11: the same builder makes the layer for it.
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        zipfile.ZipFile(build_psycopg_layer("x86_64", python, shared_build)).extractall(tmp_path / "layer")
        layer = tmp_path / "layer" / "python"
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": f"{task}:{layer}",
            "PYTHONDONTWRITEBYTECODE": "1",
            "EXPIRY_JOB": fn["environment"]["variables"]["EXPIRY_JOB"],
            "AWS_ENDPOINT_URL": moto_server.url,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "t",
            "AWS_SECRET_ACCESS_KEY": "t",
        }
        result = subprocess.run(
            [sys.executable, "-c", RUN, str(layer), fn["handler"]],
            cwd=task,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert summary["rows_deleted"] == 12 and summary["batches"] == 3 and summary["plan"]["refused"] is None
    with postgres.connect(shipped) as conn:
        assert conn.execute("SELECT count(*) FROM attributes").fetchone()[0] == 13
