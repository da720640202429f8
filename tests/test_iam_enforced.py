"""IAM as AWS enforces it: every job the stack program builds runs from the archive its component
built, with a role holding exactly the policy the component generated, against moto_server with IAM
enforced (iam_moto.py: resources, conditions, and S3's 403 for a HeadObject of a missing key without
s3:ListBucket), on the seed systems' layouts. A call its policy does not allow fails the run."""

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws import make_client
from botocore.exceptions import ClientError
from iam_aws import IamServer, Stack, bind_role, create_tables, denied, deploy_stack, invoke, without_actions
from upload_system import NOW, Invocation, World, ttl_deletes

from expiry.runtime.dynamodb.ttl import expiry_shard
from expiry.runtime.jobs import metrics
from expiry.runtime.postgres.connection import Connector
from expiry.runtime.postgres.provision import provision, unprovision
from expiry.runtime.postgres.spec import PurgeSpec

HOUR, DAY = 3600, 86400
SYSTEM = "_actingweb_oauth2"
TOKEN_BUCKETS = {"_access_token_index": "mcp_tokens", "_refresh_token_index": "mcp_refresh_tokens"}
# The calls Lambda makes with the function's role, not the handler: its logs, the stream it reads
# for the event source mapping and the mapping's on-failure queue.
SERVICE_ACTIONS = {
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:ListStreams",
    "sqs:SendMessage",
}


@pytest.fixture(scope="module")
def iam_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamServer]:
    server = IamServer(tmp_path_factory.mktemp("iam"))
    yield server
    server.stop()


@pytest.fixture
def server(iam_server: IamServer) -> Iterator[IamServer]:
    iam_server.reset()
    yield iam_server
    iam_server.reset()


def failures(run: Invocation) -> list[str]:
    """What went wrong in a run: its traceback, its error lines, its stream records to retry."""
    found = [line["error"] for line in run.lines if line.get("event") in ("cleanup_error", "cleanup_failed")]
    if run.returncode:
        found.append(run.stderr[-2000:])
    if "RESULT " in run.stdout:
        result = json.loads(run.stdout.split("RESULT ", 1)[1].splitlines()[0])
        found += [f"retry {f}" for f in result.get("batchItemFailures", [])]
    return found


class Seeds:
    """The seed systems' data in the deployed tables and buckets, written as their applications write it."""

    def __init__(self, stack: Stack, endpoint: str) -> None:
        self.stack = stack
        self.dynamodb, self.s3 = make_client("dynamodb", endpoint), make_client("s3", endpoint)
        create_tables(self.dynamodb, stack)
        buckets = set()
        for function in stack.functions.values():
            settings = function.settings
            buckets |= {settings["s3"]["bucket"]} if "s3" in settings else set()
            buckets |= {settings["archive_bucket"]} if "archive_bucket" in settings else set()
        for bucket in sorted(buckets):
            self.s3.create_bucket(Bucket=bucket)

    def table(self, prefix: str) -> str:
        (name,) = [name for name in self.stack.tables if name.startswith(prefix)]
        return name

    def shards(self, table: str) -> int:
        """The table's expiry-index shards (0: no expiry index)."""
        for function in self.stack.functions.values():
            settings = function.settings
            if settings["table_name"] == table and settings.get("expiry_index_name"):
                return int(settings["expiry_index_shards"])
        return 0

    def checkpoints(self) -> dict[str, int]:
        """Chat checkpoints (thread_id {user}#{session}, expires_at), expired and live."""
        table = self.table("collections-checkpoints-")
        shards = self.shards(table)
        for i in range(10):
            thread = f"user{i % 3}#session{i}"
            item = {
                "thread_id": {"S": thread},
                "checkpoint_id": {"S": f"checkpoint{i}"},
                "expires_at": {"N": str(NOW - HOUR * (i + 1) if i < 6 else NOW + DAY)},
                "user_id": {"S": f"user{i % 3}"},
                "last_activity": {"N": str(NOW - 2 * DAY)},
            }
            if shards:
                item["expiry_shard"] = {"S": expiry_shard(thread, shards)}
            self.dynamodb.put_item(TableName=table, Item=item)
        return {"expired": 6, "live": 4}

    def uploads(self) -> tuple[World, dict[str, set[str]]]:
        """Upload sessions in every state, their objects and uploads, orphans, and expired sessions
        whose object is missing (a HeadObject answered 404 or 403)."""
        table = self.table("upload-sessions-")
        sweeper = self.stack.functions["upload-sweeper"].settings
        world = World(self.dynamodb, self.s3, table, sweeper["s3"]["bucket"])
        made: dict[str, set[str]] = {
            "live": {world.session(f"live-{i}", NOW + 6 * HOUR + i, "created") for i in range(20)},
            "live_uploads": {world.session(f"live-mp-{i}", NOW + DAY, "created", multipart=True) for i in range(3)},
            "finished": {world.session(f"done-{i}", NOW + 2 * DAY, "uploaded") for i in range(6)},
            "expired_finished": {world.session(f"old-done-{i}", NOW - 2 * HOUR, "uploaded") for i in range(3)},
            "expired": {world.session(f"old-{i}", NOW - 30 * 60, "created") for i in range(4)},
            "missing": {world.session(f"lost-{i}", NOW - 30 * 60, "created", with_object=False) for i in range(3)},
            "stuck": {
                world.session(f"stuck-{i}", NOW - 2 * HOUR, "created", multipart=True, with_object=False)
                for i in range(2)
            },
            "partial": {
                world.session("stuck-parts", NOW - 2 * HOUR, "created", multipart=True, parts=1, with_object=False)
            },
            "orphans": {world.orphan(f"gone-{i}") for i in range(2)},
        }
        shards = self.shards(table)
        if shards:
            for session_id in world.items():
                self.dynamodb.update_item(
                    TableName=table,
                    Key={"uploadSessionId": {"S": session_id}},
                    UpdateExpression="SET expiry_shard = :s",
                    ExpressionAttributeValues={":s": {"S": expiry_shard(session_id, shards)}},
                )
        return world, made

    def attributes(self) -> None:
        """ActingWeb's attributes: live tokens and their index entries, entries whose token is gone."""
        table = self.table("actingweb_")

        def put(actor: str, bucket: str, name: str, data: Any, ttl: int | None) -> None:
            item = {"id": {"S": actor}, "bucket_name": {"S": f"{bucket}:{name}"}, "data": {"S": json.dumps(data)}}
            if ttl is not None:
                item["ttl_timestamp"] = {"N": str(ttl)}
            self.dynamodb.put_item(TableName=table, Item=item)

        for i, (index, bucket) in enumerate(TOKEN_BUCKETS.items()):
            for n in range(4):
                put("actor-1", bucket, f"live{i}{n}", {"actor_id": "actor-1"}, NOW + DAY)
                put(SYSTEM, index, f"live{i}{n}", "actor-1", NOW + DAY + 7200)
            put(SYSTEM, index, f"gone{i}", "actor-2", NOW + DAY + 7200)  # actor-2 was deleted
        put("actor-1", "_properties", "email", "a@example.com", None)


def ids(keys: set[str]) -> set[str]:
    return {key.rsplit("/", 1)[1].split(".")[0] for key in keys}


@dataclass
class Deployment:
    """A deployed stack with the seed systems' data, each function bound to its role."""

    stack: Stack
    server: IamServer
    tmp_path: Path
    world: World
    made: dict[str, set[str]]
    runs: dict[str, Invocation] = field(default_factory=dict)

    def run(self, name: str, payload: dict[str, Any] | None = None) -> Invocation:
        return invoke(self.stack.functions[name], self.tmp_path, self.server, payload)

    def cascade(self) -> Invocation:
        """TTL deletes every session that expired, including one finished after the sweeper's last
        run; the application then writes one of them anew with the same object; the cascade runs."""
        late = self.world.session("late-done", NOW - 60, "uploaded")  # the cascade marks it itself
        made = self.made
        expired = made["expired"] | made["missing"] | made["stuck"] | made["partial"] | made["expired_finished"]
        records = ttl_deletes(self.world, ids(expired | {late}) & set(self.world.items()))
        renewed = min(ids(made["expired"]))
        made["renewed"] = {self.world.session(renewed, NOW + DAY, "created")}  # its object must stay
        made["late"] = {late}
        return self.run("upload-cascade", {"Records": records})


def prepare(
    stack: Stack, tmp_path: Path, server: IamServer, policies: dict[str, list[str]] | None = None
) -> Deployment:
    """Seed every system; bind each function to a role with its generated policy (or ``policies``)."""
    seeds = Seeds(stack, server.url)
    stack.create_secrets(server.url)
    for name, function in stack.functions.items():
        bind_role(server.url, function, (policies or {}).get(name))
    seeds.checkpoints()
    seeds.attributes()
    world, made = seeds.uploads()
    return Deployment(stack, server, tmp_path, world, made)


def run_every_job(deployment: Deployment) -> dict[str, Invocation]:
    """Each job once, as the schedules and the stream would run them."""
    names = set(deployment.stack.functions) - {"upload-cascade"}
    assert {"checkpoints-monitor", "upload-sweeper", "attribute-index-cleanup"} <= names, sorted(names)
    runs = {name: deployment.run(name) for name in sorted(names)}
    if "upload-cascade" in deployment.stack.functions:
        runs["upload-cascade"] = deployment.cascade()
    assert set(runs) == set(deployment.stack.functions), "a job the program builds was not run"
    return runs


CONFIGURATIONS: dict[str, dict[str, Any]] = {
    # dev as it is deployed: sweepers only report (dry run); TTL and the stream cascade delete.
    "dev-dry-run": {},
    # real deletions: the sweeper marks finished videos and removes orphans, the cascade cleans after TTL.
    "stream-cascade": {"dryRun": False, "uploadsArchiveExpired": True},
    # the sweeper deletes expired sessions itself, with the stuck-upload rule.
    "sweep-deletes": {"dryRun": False, "uploadsCascade": "sweep"},
    # writers set expiry_shard: the monitor and the sweeper query the expiry index.
    "expiry-index": {
        "dryRun": False,
        "uploadsCascade": "sweep",
        "expiryIndexShards": 4,
        "uploadsWritersSetExpiryShard": True,
    },
    # prod (real deletions, deletion protection) with the PostgreSQL monitor in a VPC.
    "prod": {"stack": "prod", "postgresHost": "127.0.0.1", "postgresUser": "postgres", "postgresPassword": "trusted"},
}
USED: dict[str, dict[str, set[str]]] = {}  # configuration -> job -> the actions its runs were allowed
GRANTED: dict[str, dict[str, set[str]]] = {}  # configuration -> job -> the actions its policy grants


def run_configuration(
    harness: Any, tmp_path: Path, monkeypatch: Any, server: IamServer, config: str, **overrides: Any
) -> Deployment:
    """Every job of ``config`` (and ``overrides``), each required to succeed without a refused call;
    records what each was allowed."""
    settings = {**CONFIGURATIONS[config], **overrides}
    stack = deploy_stack(harness, tmp_path, monkeypatch, settings.pop("stack", "dev"), **settings)
    deployment = prepare(stack, tmp_path, server)
    runs = run_every_job(deployment)
    for name, run in runs.items():
        assert failures(run) == [], f"{config} {name}: {failures(run)}"
        assert denied(server, stack.functions[name]) == [], f"{config} {name}"
    USED[config] = {
        name: {d["action"] for d in server.decisions(f.role) if d["allowed"]} for name, f in stack.functions.items()
    }
    GRANTED[config] = {name: {a for s in f.statements() for a in s["Action"]} for name, f in stack.functions.items()}
    deployment.runs = runs
    return deployment


@pytest.mark.parametrize("config", [c for c in CONFIGURATIONS if c != "prod"])
def test_every_job_runs_under_exactly_its_generated_policy(pulumi_mocks, tmp_path, monkeypatch, server, config):
    deployment = run_configuration(pulumi_mocks, tmp_path, monkeypatch, server, config)
    runs = deployment.runs
    world, made, overrides = deployment.world, deployment.made, CONFIGURATIONS[config]
    monitor = runs["checkpoints-monitor"].summary
    assert monitor["expired_backlog"] == 6 and monitor["ttl_enabled"] is True
    objects = world.objects()
    assert made["live"] | made["finished"] | made["expired_finished"] <= objects
    if overrides.get("dryRun") is not False:
        return
    assert not made["orphans"] & objects and made["expired_finished"] <= world.marked()
    assert runs["attribute-index-cleanup"].summary["counts"]["orphans_deleted"] == 2
    if overrides.get("uploadsCascade") == "sweep":
        counts = runs["upload-sweeper"].summary["counts"]
        assert not made["expired"] & objects and counts["objects_deleted"] == len(made["expired"])
        assert counts["uploads_aborted"] == len(made["stuck"])
        assert not ids(made["missing"]) & set(world.items())  # its object missing: the session still goes
        return
    cascade = runs["upload-cascade"].emf
    assert made["renewed"] <= objects and not (made["expired"] - made["renewed"]) & objects
    assert cascade[metrics.OBJECTS_DELETED] == len(made["expired"]) - 1
    assert cascade[metrics.UPLOADS_ABORTED] == len(made["stuck"]) + len(made["partial"])
    assert made["late"] <= world.marked()


def test_the_server_enforces_iam_as_aws_does(server):
    """The emulation itself: table and index ARNs, s3:prefix conditions, per-key DeleteObjects, and
    S3's 403 for a missing key unless the caller may list it."""
    admin = {service: make_client(service, server.url) for service in ("dynamodb", "s3", "iam", "sts")}
    admin["dynamodb"].create_table(
        TableName="sessions",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "id", "AttributeType": "S"},
            {"AttributeName": "k", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-k",
                "KeySchema": [{"AttributeName": "k", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    admin["s3"].create_bucket(Bucket="videos")
    for key in ("uploads/a.mp4", "uploads/b.mp4", "other/c.mp4"):
        admin["s3"].put_object(Bucket="videos", Key=key, Body=b"v")
    table = "arn:aws:dynamodb:us-east-1:123456789012:table/sessions"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["dynamodb:GetItem"], "Resource": [table]},
            {"Effect": "Allow", "Action": ["dynamodb:Query"], "Resource": [f"{table}/index/by-k"]},
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:DeleteObject"],
                "Resource": ["arn:aws:s3:::videos/uploads/*"],
            },
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": ["arn:aws:s3:::videos"],
                "Condition": {"StringLike": {"s3:prefix": ["uploads/*"]}},
            },
        ],
    }
    from iam_aws import Function

    function = Function(
        "probe", "", Path(), "{}", [json.dumps(policy)], json.dumps({"Version": "2012-10-17", "Statement": []})
    )
    bind_role(server.url, function)
    keys = {
        "aws_access_key_id": function.credentials["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": function.credentials["AWS_SECRET_ACCESS_KEY"],
        "aws_session_token": function.credentials["AWS_SESSION_TOKEN"],
    }
    dynamodb = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=server.url, **keys)
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=server.url, **keys)

    def status(call: Any) -> int:
        try:
            call()
        except ClientError as error:
            return int(error.response["ResponseMetadata"]["HTTPStatusCode"])
        return 200

    with server.enforced():
        assert status(lambda: dynamodb.get_item(TableName="sessions", Key={"id": {"S": "x"}})) == 200
        assert status(lambda: dynamodb.scan(TableName="sessions")) == 403  # granted on no resource
        query = {
            "TableName": "sessions",
            "KeyConditionExpression": "k = :k",
            "ExpressionAttributeValues": {":k": {"S": "v"}},
        }
        assert status(lambda: dynamodb.query(IndexName="by-k", **query)) == 200
        assert status(lambda: dynamodb.query(**query)) == 403  # the table, not its index
        assert status(lambda: s3.list_objects_v2(Bucket="videos", Prefix="uploads/")) == 200
        assert status(lambda: s3.list_objects_v2(Bucket="videos", Prefix="other/")) == 403
        assert status(lambda: s3.list_objects_v2(Bucket="videos")) == 403  # no s3:prefix: the condition fails
        assert status(lambda: s3.head_object(Bucket="videos", Key="uploads/a.mp4")) == 200
        assert status(lambda: s3.head_object(Bucket="videos", Key="uploads/gone.mp4")) == 404  # may list it
        assert status(lambda: s3.head_object(Bucket="videos", Key="other/gone.mp4")) == 403
        assert status(lambda: s3.list_multipart_uploads(Bucket="videos", Prefix="uploads/")) == 403
        deleted = s3.delete_objects(Bucket="videos", Delete={"Objects": [{"Key": "uploads/a.mp4"}]})
        refused = s3.delete_objects(Bucket="videos", Delete={"Objects": [{"Key": "other/c.mp4"}]})
    assert "Errors" not in deleted and [e["Code"] for e in refused["Errors"]] == ["AccessDenied"]
    assert {o["Key"] for o in admin["s3"].list_objects_v2(Bucket="videos")["Contents"]} == {
        "uploads/b.mp4",
        "other/c.mp4",
    }
    implicit = [d for d in server.decisions(function.role) if d["implicit"]]
    assert [(d["context"], d["allowed"]) for d in implicit] == [({"s3:prefix": "uploads/gone.mp4"}, True)]
    # Without the ListBucket grant, S3 answers 403 for a missing key it could read.
    server.reset()
    bare = {**policy, "Statement": policy["Statement"][:3]}
    function = Function("bare", "", Path(), "{}", [json.dumps(bare)], function.assume_role_policy)
    admin["s3"].create_bucket(Bucket="videos")
    bind_role(server.url, function)
    keys = {k.lower(): v for k, v in function.credentials.items()}
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=server.url, **keys)
    with server.enforced():
        assert status(lambda: s3.head_object(Bucket="videos", Key="uploads/gone.mp4")) == 403


LIST_BUCKET_CASES = [("sweep-deletes", "upload-sweeper"), ("stream-cascade", "upload-cascade")]


@pytest.mark.parametrize(("config", "job"), LIST_BUCKET_CASES, ids=[job for _, job in LIST_BUCKET_CASES])
def test_without_list_bucket_a_missing_object_fails_the_run(pulumi_mocks, tmp_path, monkeypatch, server, config, job):
    """Issue 18: without s3:ListBucket, S3 answers HeadObject of a missing key with 403 and listing the
    key is denied: the run fails (the cascade reports the records for retry, until they reach the
    on-failure queue). The generated policy grants it, scoped to the prefix."""
    stack = deploy_stack(pulumi_mocks, tmp_path, monkeypatch, **CONFIGURATIONS[config])
    function = stack.functions[job]
    deployment = prepare(stack, tmp_path, server, {job: without_actions(function, {"s3:ListBucket"})})
    run = deployment.cascade() if job == "upload-cascade" else deployment.run(job)
    refused = {d["context"]["s3:prefix"] for d in denied(server, function) if d["implicit"]}
    assert refused and refused <= deployment.made["missing"] | deployment.made["stuck"] | deployment.made["partial"]
    # HeadObject answers 403; the runtime then lists the key to tell missing from denied, which
    # needs the same s3:ListBucket and is denied too.
    assert any("ListObjectsV2" in f and "AccessDenied" in f for f in failures(run)), failures(run)
    if job == "upload-cascade":
        assert json.loads(run.stdout.split("RESULT ", 1)[1])["batchItemFailures"]


ACTINGWEB_DDL = """CREATE TABLE attributes (
    id varchar(255) NOT NULL, bucket_name varchar(255) NOT NULL, bucket varchar(255) NOT NULL,
    name varchar(255) NOT NULL, data jsonb, timestamp timestamp, ttl_timestamp bigint,
    PRIMARY KEY (id, bucket_name))"""


def test_prod_with_postgres_runs_every_job_under_its_generated_policy(
    pulumi_mocks, tmp_path, monkeypatch, server, postgres
):
    """prod builds the PostgreSQL monitor too: it reads its password from Secrets Manager with its role."""
    database = postgres.new_database("actingweb")
    with postgres.connect(database) as conn:
        conn.execute(ACTINGWEB_DDL)
        conn.execute(
            "INSERT INTO attributes SELECT 'actor-' || n, 'mcp_tokens:t' || n, 'mcp_tokens', 't' || n, NULL, "
            "NULL, extract(epoch from now())::bigint + CASE WHEN n <= 4 THEN -7200 ELSE 7200 END "
            "FROM generate_series(1, 10) n"
        )
    spec = PurgeSpec(job_name="attributes-purge", table="attributes", expiry_column="ttl_timestamp")
    connector = Connector(postgres.dsn(database), database)
    provision(connector, spec)
    try:
        deployment = run_configuration(
            pulumi_mocks, tmp_path, monkeypatch, server, "prod", postgresPort=postgres.port, postgresDatabase=database
        )
    finally:
        unprovision(connector, spec)
    monitor = deployment.runs["attributes-pg-monitor"].summary
    assert monitor["expired_rows"] == 4 and monitor["job_scheduled"] is True
    function = deployment.stack.functions["attributes-pg-monitor"]
    assert [d["action"] for d in deployment.server.decisions(function.role)] == ["secretsmanager:GetSecretValue"]
    assert GRANTED["prod"][function.name] - SERVICE_ACTIONS - UNUSED == {"secretsmanager:GetSecretValue"}
    # Network interfaces for the VPC are Lambda's own calls, under AWS's managed policy (moto has none).
    assert function.managed_policies == ["arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"]


# Grants of the jobs that clean S3, each taken away in turn: the run must fail, and say so (s3:ListBucket:
# test_without_list_bucket_a_missing_object_fails_the_run).
NEEDED = {
    ("sweep-deletes", "upload-sweeper"): (
        "s3:ListBucketMultipartUploads",
        "dynamodb:Query",
        "s3:GetObjectTagging",
        "dynamodb:DeleteItem",
    ),
    ("stream-cascade", "upload-cascade"): (
        "dynamodb:Query",
        "dynamodb:GetItem",
        "s3:PutObjectTagging",
        "s3:DeleteObject",
    ),
}

TAKEN_AWAY = [(config, job, action) for (config, job), actions in NEEDED.items() for action in actions]


@pytest.mark.parametrize(("config", "job", "action"), TAKEN_AWAY, ids=[f"{j}-{a}" for _, j, a in TAKEN_AWAY])
def test_a_grant_taken_away_fails_the_run(pulumi_mocks, tmp_path, monkeypatch, server, config, job, action):
    """The harness can fail: a run whose role lacks one action it needs reports an error."""
    stack = deploy_stack(pulumi_mocks, tmp_path, monkeypatch, **CONFIGURATIONS[config])
    function = stack.functions[job]
    deployment = prepare(stack, tmp_path, server, {job: without_actions(function, {action})})
    run = deployment.cascade() if job == "upload-cascade" else deployment.run(job)
    assert action in {d["action"] for d in denied(server, function)}
    assert failures(run), f"{job} without {action} reported no failure"


# Granted, never called by a handler: metrics leave as Embedded Metric Format log lines (Lambda's
# log agent publishes them), so no job calls cloudwatch:PutMetricData.
UNUSED = {"cloudwatch:PutMetricData"}
COVERING = ("dev-dry-run", "stream-cascade", "expiry-index")  # together, every path of every job


def test_every_granted_action_is_used(pulumi_mocks, tmp_path, monkeypatch, server):
    """Least privilege: an action no run of any job calls is flagged (the matrix above records what
    each run was allowed; run here when it did not run first)."""
    for config in COVERING:
        if config not in USED:
            server.reset()
            run_configuration(pulumi_mocks, tmp_path / config, monkeypatch, server, config)
    jobs: set[str] = set().union(*(GRANTED[c] for c in COVERING))
    unused = {
        job: set[str]().union(*(GRANTED[c].get(job, set()) for c in COVERING))
        - set[str]().union(*(USED[c].get(job, set()) for c in COVERING))
        - SERVICE_ACTIONS
        for job in jobs
    }
    assert unused == dict.fromkeys(unused, UNUSED)
