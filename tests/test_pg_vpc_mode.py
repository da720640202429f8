"""PgCronCleanup's VPC mode: the provisioning Lambda and its CRUD Invocation under the mocks, and the
handler it runs, fed the payloads the Invocation sends, against the test PostgreSQL."""

import json

import pytest

from expiry.components.pg_cron_cleanup import PgCronCleanup
from expiry.runtime.jobs.config import JobConfigError
from expiry.runtime.postgres.provision import handle
from expiry.runtime.postgres.spec import provisioning_code

SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-XyZ"


@pytest.fixture(autouse=True)
def build_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EXPIRY_BUILD_DIR", str(tmp_path_factory.getbasetemp() / "vpc-build"))


def vpc_args(**overrides):
    return {
        "table": "attributes",
        "expiry_column": "ttl_timestamp",
        "host": "db.internal",
        "database": "app",
        "secret_arn": SECRET,
        "subnet_ids": ["subnet-a"],
        "security_group_ids": ["sg-a"],
        **overrides,
    }


def test_vpc_mode_deploys_a_provisioner_and_invokes_it_for_every_lifecycle_event(pulumi_mocks):
    pulumi_mocks.run(lambda: PgCronCleanup("attributes-purge", vpc_args(schedule="0 3 * * *")))
    assert pulumi_mocks.of_type("pulumi-python:dynamic/expiry:PgCronJob") == []
    fn = pulumi_mocks.one("aws:lambda/function:Function").inputs
    assert fn["handler"] == "expiry.runtime.handlers.pg_provision.handler"
    assert fn["vpcConfig"] == {"subnetIds": ["subnet-a"], "securityGroupIds": ["sg-a"]}
    assert len(fn["layers"]) == 1 and "environment" not in fn  # nothing secret in the environment
    invocation = pulumi_mocks.one("aws:lambda/invocation:Invocation").inputs
    assert invocation["lifecycleScope"] == "CRUD"
    payload = json.loads(invocation["input"])
    assert payload["connection"] == {"host": "db.internal", "database": "app", "secret_arn": SECRET, "port": 5432}
    assert payload["cleanup"]["job_name"] == "attributes-purge" and payload["cleanup"]["schedule"] == "0 3 * * *"
    assert payload["provisioning"] == provisioning_code()  # a new Expiry's provisioning code invokes again
    policy = json.loads(pulumi_mocks.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    assert policy["Statement"][1] == {
        "Sid": "DatabaseSecret",
        "Effect": "Allow",
        "Action": ["secretsmanager:GetSecretValue"],
        "Resource": [SECRET],
    }
    assert policy["Statement"][0]["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert len(policy["Statement"]) == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"password": "x"}, "PgCronCleanup: password: is not used in VPC mode"),
        ({"subnet_ids": None}, "PgCronCleanup: subnet_ids: is required in VPC mode"),
        ({"host": None}, "PgCronCleanup: host: is required in VPC mode"),
        ({"architecture": "ppc"}, "PgCronCleanup: architecture: must be one of arm64, x86_64"),
    ],
)
def test_bad_vpc_input(pulumi_mocks, overrides, message):
    args = {key: value for key, value in vpc_args(**overrides).items() if value is not None}
    with pytest.raises(ValueError) as error:
        pulumi_mocks.run(lambda: PgCronCleanup("bad", args))
    assert message in str(error.value)
    assert pulumi_mocks.resources == []


@pytest.fixture
def database(postgres):
    name = postgres.new_database("vpc")
    with postgres.connect(name) as conn:
        conn.execute("CREATE TABLE attributes (id serial, ttl_timestamp bigint)")
        conn.execute("CREATE TABLE sessions (id serial, ttl_timestamp bigint)")
    return name


def payload(postgres, database: str, secret_arn: str, **cleanup) -> dict:
    return {
        "cleanup": {"job_name": "vpc-purge", "table": "attributes", "expiry_column": "ttl_timestamp", **cleanup},
        "connection": {"host": "127.0.0.1", "port": postgres.port, "database": database, "secret_arn": secret_arn},
    }


def scheduled(postgres, job: str):
    with postgres.connect() as cron:
        return cron.execute("SELECT schedule, command FROM cron.job WHERE jobname = %s", (job,)).fetchone()


def test_handler_follows_the_crud_lifecycle(aws_in_process, postgres, database):
    secrets = aws_in_process.client("secretsmanager")
    arn = secrets.create_secret(Name="db", SecretString=json.dumps({"username": "postgres", "password": "x"}))["ARN"]
    first = payload(postgres, database, arn)
    created = handle({**first, "tf": {"action": "create", "prev_input": None}}, lambda: secrets)
    assert created["action"] == "create" and created["cron_database"] == "postgres"
    assert scheduled(postgres, "vpc-purge")[0] == "0 3 * * *"

    changed = payload(postgres, database, arn, schedule="15 * * * *")
    updated = handle({**changed, "tf": {"action": "update", "prev_input": first}}, lambda: secrets)
    assert updated["job_id"] == created["job_id"] and scheduled(postgres, "vpc-purge")[0] == "15 * * * *"

    moved = payload(postgres, database, arn, job_name="vpc-purge-sessions", table="sessions")
    handle({**moved, "tf": {"action": "update", "prev_input": changed}}, lambda: secrets)
    assert scheduled(postgres, "vpc-purge") is None  # the old job went with the old table
    assert scheduled(postgres, "vpc-purge-sessions") is not None

    handle({**moved, "tf": {"action": "delete", "prev_input": moved}}, lambda: secrets)
    assert scheduled(postgres, "vpc-purge-sessions") is None
    with postgres.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'expiry'").fetchone()[0] == 0


def test_handler_refuses_a_bad_payload(aws_in_process, postgres, database):
    secrets = aws_in_process.client("secretsmanager")
    with pytest.raises(JobConfigError, match="payload: missing 'connection'"):
        handle({"cleanup": {"job_name": "j", "table": "t", "expiry_column": "e"}}, lambda: secrets)
    with pytest.raises(JobConfigError, match="payload: cleanup: .*missing 2 required"):
        handle({"cleanup": {}, "connection": {}}, lambda: secrets)
    bad = payload(postgres, database, "arn:x", schedule="every day")
    with pytest.raises(JobConfigError, match="payload: cleanup.schedule: pg_cron needs 5 fields"):
        handle(bad, lambda: secrets)
    assert scheduled(postgres, "vpc-purge") is None
