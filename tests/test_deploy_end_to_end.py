"""Issue 19: each stack file deployed end to end on an AWS emulator.

__main__.py runs under Pulumi's mocks with Pulumi.dev.yaml and Pulumi.prod.yaml as on disk (prod plus
the one value its README tells the operator to set: the database password, a secret); every AWS
resource it registered is created in moto_server (iam_moto.py) over HTTP with boto3, in dependency
order (deploy_emulator.py), and a reference in any resource's inputs to something not created fails
the deployment. Then each function's handler runs from the archive its component built, with the
environment moto holds for it and the credentials of a session of its own role, IAM enforced, on the
seed systems' layouts (chat checkpoints, upload sessions, ActingWeb attributes).

Not created, each with its reason: deploy_emulator.NOT_CREATABLE (the pg_cron dynamic resource, the
Logs query definitions). External inputs from stack config, not resources of the stack: prod's
subnets and security group (moto's Lambda stores them unchecked) and its PostgreSQL host."""

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest
from deploy_emulator import (
    FUNCTION,
    MAPPING,
    NOT_CREATABLE,
    TABLE,
    DeploymentError,
    Emulator,
    Program,
    run_program,
)
from iam_aws import Function, IamServer, assume_role, invoke
from upload_system import NOW, Invocation, World, ttl_deletes

HOUR, DAY = 3600, 86400
SYSTEM = "_actingweb_oauth2"
TOKEN_BUCKETS = {"_access_token_index": "mcp_tokens", "_refresh_token_index": "mcp_refresh_tokens"}
# What the README asks of a prod operator: pulumi config set --secret expiry:postgresPassword ...
OPERATOR_SETS = {"dev": {}, "prod": {"postgresPassword": "set-by-the-operator"}}


@functools.cache
def program(stack: str) -> Program:
    """The stack's program, run once per test session (plain data once run)."""
    return run_program(stack, **OPERATOR_SETS[stack])


@pytest.fixture(scope="module")
def iam_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamServer]:
    """moto_server enforcing IAM, with AWS's managed policies loaded (prod attaches one)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
        server = IamServer(tmp_path_factory.mktemp("deploy"))
    yield server
    server.stop()


@pytest.fixture
def server(iam_server: IamServer) -> Iterator[IamServer]:
    iam_server.reset()
    yield iam_server
    iam_server.reset()


def deploy(stack: str, server: IamServer, built: Program | None = None) -> Emulator:
    built = built or program(stack)
    emulator = Emulator(server.url, built.region)
    emulator.deploy(built)
    return emulator


def test_prod_as_on_disk_asks_for_the_password_first(pulumi_mocks):
    with pytest.raises(pulumi.ConfigMissingError, match="expiry:postgresPassword"):
        run_program("prod")


def check_created(emulator: Emulator, stack: str) -> None:
    """Every registered resource was created (or is listed as not creatable), as the program gave it."""
    built = program(stack)
    aws_types = {r.type for r in built.resources if not r.type.startswith("expiry:index:")}
    created = {t for t, _ in emulator.deployed}
    assert aws_types == created | {t for t, _ in emulator.not_created}
    assert {t for t, _ in emulator.not_created} <= set(NOT_CREATABLE)
    assert len(emulator.deployed) + len(emulator.not_created) + len(emulator.components) == len(built.resources)
    lam, dynamodb = emulator.client("lambda"), emulator.client("dynamodb")
    # The archive a component built is the code deployed.
    for function in emulator.of_type(FUNCTION):
        config = lam.get_function_configuration(FunctionName=function.state["name"])
        assert config["CodeSha256"] == function.inputs["sourceCodeHash"], function.name
        assert config["Environment"]["Variables"] == function.inputs["environment"]["variables"]
        assert config["Role"].startswith(f"arn:aws:iam::123456789012:role/{function.name.removesuffix('-function')}")
    # The stream cascade's mapping: on the sessions table's real stream, with its filter.
    (mapping,) = emulator.of_type(MAPPING)
    held = lam.get_event_source_mapping(UUID=mapping.state["uuid"])
    (table,) = [t for t in emulator.of_type(TABLE) if t.state["name"].startswith("upload-sessions-")]
    assert held["EventSourceArn"] == table.state["streamArn"]
    assert dynamodb.describe_table(TableName=table.state["name"])["Table"]["LatestStreamArn"] == held["EventSourceArn"]
    pattern = json.loads(held["FilterCriteria"]["Filters"][0]["Pattern"])
    assert pattern["userIdentity"]["principalId"] == ["dynamodb.amazonaws.com"]
    for made in emulator.of_type(TABLE):
        ttl = dynamodb.describe_time_to_live(TableName=made.state["name"])["TimeToLiveDescription"]
        assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": made.inputs["ttl"]["attributeName"]}
        protected = dynamodb.describe_table(TableName=made.state["name"])["Table"]["DeletionProtectionEnabled"]
        assert protected is (stack == "prod")
    schedules = emulator.client("scheduler").list_schedules()["Schedules"]
    assert len(schedules) == len(emulator.of_type("aws:scheduler/schedule:Schedule")) >= 3


@pytest.mark.parametrize(
    ("dropped", "expected"),
    [
        (
            (TABLE, "deletion-budget"),
            ["upload-sweeper-function EXPIRY_JOB.budget_table_name -> table expiry-deletion-budget-dev"],
        ),
        ((FUNCTION, "upload-cascade-function"), ["EventSourceMapping upload-cascade-stream: An error occurred"]),
        (("aws:cloudwatch/logGroup:LogGroup", "upload-sweeper-logs"), ["QueryDefinition cleanup-alarms-query"]),
    ],
    ids=["table", "mapped-function", "log-group"],
)
def test_a_reference_to_a_resource_not_created_fails_the_deployment(server, dropped, expected):
    """The check can fail: leave one resource out and what names it is reported."""
    with pytest.raises(DeploymentError) as raised:
        deploy("dev", server, program("dev").without(*dropped))
    for text in expected:
        assert text in str(raised.value), str(raised.value)


# -- the handlers, run as deployed ---------------------------------------------------------------------


class Seeded:
    """The seed systems' data in the deployed tables and bucket, as their applications write it."""

    def __init__(self, emulator: Emulator) -> None:
        self.dynamodb, self.s3 = emulator.client("dynamodb"), emulator.client("s3")

    def checkpoints(self, table: str) -> None:
        """Chat checkpoints (thread_id {user}#{session}, expires_at): six expired, four live."""
        for i in range(10):
            item = {
                "thread_id": {"S": f"user{i % 3}#session{i}"},
                "checkpoint_id": {"S": f"checkpoint{i}"},
                "expires_at": {"N": str(NOW - HOUR * (i + 1) if i < 6 else NOW + DAY)},
                "user_id": {"S": f"user{i % 3}"},
                "last_activity": {"N": str(NOW - 2 * DAY)},
            }
            self.dynamodb.put_item(TableName=table, Item=item)

    def uploads(self, table: str, bucket: str) -> tuple[World, dict[str, set[str]]]:
        """Upload sessions (uploadSessionId, key uploads/YYYY-MM-DD/<id>.mp4, status, ttl) in each state."""
        world = World(self.dynamodb, self.s3, table, bucket)
        made = {
            "live": {world.session(f"live-{i}", NOW + 6 * HOUR + i, "created") for i in range(20)},
            "finished": {world.session(f"done-{i}", NOW + 2 * DAY, "uploaded") for i in range(6)},
            "expired_finished": {world.session(f"old-done-{i}", NOW - 2 * HOUR, "uploaded") for i in range(3)},
            "expired": {world.session(f"old-{i}", NOW - 30 * 60, "created") for i in range(4)},
            "stuck": {
                world.session(f"stuck-{i}", NOW - 2 * HOUR, "created", multipart=True, with_object=False)
                for i in range(2)
            },
            "orphans": {world.orphan(f"gone-{i}") for i in range(2)},
        }
        return world, made

    def attributes(self, table: str) -> None:
        """ActingWeb attributes: live tokens with their index entries, two entries whose actor is gone."""

        def put(actor: str, bucket: str, name: str, data: Any, ttl: int | None) -> None:
            item = {"id": {"S": actor}, "bucket_name": {"S": f"{bucket}:{name}"}, "data": {"S": json.dumps(data)}}
            if ttl is not None:
                item["ttl_timestamp"] = {"N": str(ttl)}
            self.dynamodb.put_item(TableName=table, Item=item)

        for i, (index, bucket) in enumerate(TOKEN_BUCKETS.items()):
            for n in range(4):
                put("actor-1", bucket, f"live{i}{n}", {"actor_id": "actor-1"}, NOW + DAY)
                put(SYSTEM, index, f"live{i}{n}", "actor-1", NOW + DAY + 7200)
            put(SYSTEM, index, f"gone{i}", "actor-2", NOW + DAY + 7200)

    def count(self, table: str) -> int:
        return int(self.dynamodb.scan(TableName=table, Select="COUNT")["Count"])


def run_deployed(emulator: Emulator, server: IamServer, tmp_path: Path, name: str, payload: Any = None) -> Invocation:
    """The function as moto holds it (handler, environment, role), its code the archive deployed."""
    deployed = emulator.one(FUNCTION, f"{name}-function")
    config = emulator.client("lambda").get_function_configuration(FunctionName=deployed.state["name"])
    environment = config["Environment"]["Variables"]
    function = Function(
        name=name,
        handler=config["Handler"],
        archive=Path(deployed.inputs["code"].path),
        job=environment["EXPIRY_JOB"],
        policies=[],
        assume_role_policy="",
        credentials=assume_role(server.url, config["Role"]),
    )
    environment = {**environment, "AWS_REGION": emulator.region, "AWS_LAMBDA_FUNCTION_NAME": config["FunctionName"]}
    return invoke(function, tmp_path, server, payload, region=emulator.region, environment=environment)


def refused(server: IamServer, emulator: Emulator, name: str) -> list[dict[str, Any]]:
    role = emulator.one(FUNCTION, f"{name}-function").inputs["role"].rsplit("/", 1)[1]
    return [d for d in server.decisions(role) if not d["allowed"]]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_stack_deploys_and_every_function_runs_under_its_role(server, tmp_path, stack):
    """Deployed without a dangling reference; then each function runs as deployed, IAM enforced."""
    emulator = deploy(stack, server)
    check_created(emulator, stack)
    jobs = {
        f.name.removesuffix("-function"): json.loads(f.inputs["environment"]["variables"]["EXPIRY_JOB"])
        for f in emulator.of_type(FUNCTION)
    }
    dry_run = stack == "dev"
    assert {job["dry_run"] for job in jobs.values()} == {dry_run}
    seeded = Seeded(emulator)
    seeded.checkpoints(jobs["checkpoints-monitor"]["table_name"])
    seeded.attributes(jobs["attribute-index-cleanup"]["table_name"])
    sweeper = jobs["upload-sweeper"]
    world, made = seeded.uploads(sweeper["table_name"], sweeper["s3"]["bucket"])
    before = world.snapshot()
    attributes_before = seeded.count(jobs["attribute-index-cleanup"]["table_name"])

    runs = {name: run_deployed(emulator, server, tmp_path, name) for name in sorted(jobs) if name != "upload-cascade"}
    expired = made["expired"] | made["stuck"] | made["expired_finished"]
    records = ttl_deletes(world, {key.rsplit("/", 1)[1].split(".")[0] for key in expired})
    runs["upload-cascade"] = run_deployed(emulator, server, tmp_path, "upload-cascade", {"Records": records})
    assert set(runs) == set(jobs), "a function the program deploys was not run"

    pg_jobs = {name for name, job in jobs.items() if job["kind"] == "pg-monitor"}
    for name, run in runs.items():
        assert refused(server, emulator, name) == [], f"{stack} {name}: IAM refused a call"
        assert "AccessDenied" not in run.stdout + run.stderr, f"{stack} {name}: {run.stderr[-2000:]}"
        if name not in pg_jobs:
            assert run.returncode == 0, f"{stack} {name}: {run.stderr[-2000:]}"
            assert run.summary["dry_run"] is dry_run, name

    monitor = runs["checkpoints-monitor"].summary
    assert monitor["expired_backlog"] == 6 and monitor["ttl_enabled"] is True
    assert seeded.count(jobs["checkpoints-monitor"]["table_name"]) == 10  # the monitor deletes nothing
    cascade = json.loads(runs["upload-cascade"].stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert cascade.get("batchItemFailures", []) == []
    objects = world.objects()
    assert made["live"] | made["finished"] | made["expired_finished"] <= objects
    if dry_run:  # dev reports and deletes nothing: the sweep, the cascade and the index cleanup alike
        assert made["orphans"] | made["expired"] <= objects and world.uploads() == before[2]
        assert seeded.count(jobs["attribute-index-cleanup"]["table_name"]) == attributes_before
        return
    assert not (made["orphans"] | made["expired"]) & objects and not world.uploads()
    assert made["expired_finished"] <= world.marked()
    assert runs["attribute-index-cleanup"].summary["counts"]["orphans_deleted"] == 2
    assert seeded.count(jobs["attribute-index-cleanup"]["table_name"]) == attributes_before - 2
    # The PostgreSQL monitor: its role reads the database secret (moto holds it); the database is the
    # operator's private host (actingweb-db.internal.example.com), unreachable here, so the run fails at
    # connect and says so. Its SQL runs against a real PostgreSQL in test_iam_enforced.py and test_pg_*.
    (pg,) = pg_jobs
    role = emulator.one(FUNCTION, f"{pg}-function").inputs["role"].rsplit("/", 1)[1]
    assert [(d["action"], d["allowed"]) for d in server.decisions(role)] == [("secretsmanager:GetSecretValue", True)]
    assert runs[pg].returncode != 0 and "actingweb-db.internal.example.com" in runs[pg].stdout + runs[pg].stderr
