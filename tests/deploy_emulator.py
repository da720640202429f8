"""A stand-in for `pulumi up` against an AWS emulator (issue 19).

:func:`run_program` runs __main__.py under Pulumi's mocks (expiry.testing.ExpiryMocks, in the stack's
own region) and keeps every registration with the outputs the mocks gave it. :class:`Emulator` then
creates each AWS resource in moto_server over HTTP with boto3, in dependency order, rewriting the
mocks' made-up values (stream ARNs, secret ARNs, queue URLs) into the ones moto gave, as the engine
would pass real outputs on. :meth:`Emulator.dangling` lists every reference (ARN or name) in any
resource's inputs that names nothing moto holds. A type that is neither created here nor listed in
NOT_CREATABLE with its reason fails the deployment: nothing is skipped silently."""

import json
import re
import runpy
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from aws import make_client
from botocore.exceptions import ClientError
from pulumi_harness import Harness, RecordingMonitor, Registered, is_secret
from stack_config import ROOT, stack_config

from expiry.runtime.jobs.config import parse_job
from expiry.testing import ExpiryMocks

TABLE = "aws:dynamodb/table:Table"
BUCKET = "aws:s3/bucket:Bucket"
LIFECYCLE = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
PUBLIC_ACCESS = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
QUEUE = "aws:sqs/queue:Queue"
TOPIC = "aws:sns/topic:Topic"
SUBSCRIPTION = "aws:sns/topicSubscription:TopicSubscription"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
SECRET = "aws:secretsmanager/secret:Secret"
SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
LAYER = "aws:lambda/layerVersion:LayerVersion"
FUNCTION = "aws:lambda/function:Function"
INVOKE_CONFIG = "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig"
MAPPING = "aws:lambda/eventSourceMapping:EventSourceMapping"
SCHEDULE = "aws:scheduler/schedule:Schedule"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
DASHBOARD = "aws:cloudwatch/dashboard:Dashboard"
QUERY = "aws:cloudwatch/queryDefinition:QueryDefinition"
PG_CRON_JOB = "pulumi-python:dynamic/expiry:PgCronJob"

# Resources the program registers that this emulation cannot create, each with why. Their inputs'
# references are still checked.
NOT_CREATABLE: dict[str, str] = {
    PG_CRON_JOB: (
        "a dynamic provider whose create() runs SQL in the team's PostgreSQL (pg_cron schedule, purge "
        "function, marker), not an AWS API; tested against a real PostgreSQL with pg_cron in "
        "test_pg_cron_cleanup.py"
    ),
    QUERY: "moto 5.2.5 implements no CloudWatch Logs PutQueryDefinition",
}
# Dependency order: what a resource's inputs name is created before it.
ORDER = [
    TABLE,
    BUCKET,
    LIFECYCLE,
    PUBLIC_ACCESS,
    QUEUE,
    TOPIC,
    SUBSCRIPTION,
    LOG_GROUP,
    SECRET,
    SECRET_VERSION,
    ROLE,
    ROLE_POLICY,
    ATTACHMENT,
    LAYER,
    FUNCTION,
    INVOKE_CONFIG,
    MAPPING,
    SCHEDULE,
    ALARM,
    DASHBOARD,
    QUERY,
    PG_CRON_JOB,
]
# The outputs whose mocked values other resources' inputs carry, replaced by the emulator's.
MAPPED_OUTPUTS = {"arn", "name", "bucket", "url", "streamArn", "streamLabel", "layerArn", "qualifiedArn"}
ARN = re.compile(r"arn:aws:[a-z0-9-]+:[a-z0-9-]*:(?:\d{12}|aws)?:[^\s\"',\]]+")


class RecordingExpiryMocks(ExpiryMocks):
    """ExpiryMocks that keep the outputs they gave each resource, by type and name."""

    def __init__(self, region: str) -> None:
        super().__init__(region=region)
        self.outputs: dict[tuple[str, str], dict[str, Any]] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        resource_id, state = super().new_resource(args)
        assert (args.typ, args.name) not in self.outputs, f"two {args.typ} named {args.name}"
        self.outputs[(args.typ, args.name)] = {**state, "id": resource_id}
        return resource_id, state


@dataclass
class Program:
    """What one run of __main__.py registered, with the mocks' outputs of each resource."""

    stack: str
    region: str
    resources: list[Registered]
    outputs: dict[tuple[str, str], dict[str, Any]]
    exports: dict[str, Any]

    def without(self, type_token: str, name: str) -> "Program":
        """The program with one resource left out (as if it had never been created)."""
        kept = [r for r in self.resources if (r.type, r.name) != (type_token, name)]
        assert len(kept) == len(self.resources) - 1, f"no {type_token} {name}"
        return Program(self.stack, self.region, kept, self.outputs, self.exports)


def run_program(stack: str, **overrides: Any) -> Program:
    """__main__.py under the mocks with ``stack``'s config as on disk (and ``overrides``, as `pulumi
    config set` would); the mocks answer in the stack's aws:region."""
    config = stack_config(stack, **overrides)
    region = config.get("aws:region", "us-east-1")
    mocks = RecordingExpiryMocks(region)
    monitor = RecordingMonitor(mocks)  # type: ignore[arg-type]
    pulumi.runtime.set_all_config(config, secret_keys=["expiry:postgresPassword"])
    pulumi.runtime.set_mocks(mocks, project="expiry", stack=stack, preview=False, monitor=monitor)
    harness = Harness(monitor)
    harness.run(lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__"))
    return Program(stack, region, harness.resources, mocks.outputs, harness.stack_outputs())


def plain(value: Any) -> Any:
    """Inputs with secrets unwrapped and integral floats (how numbers cross the RPC) made ints."""
    if is_secret(value):
        return plain(value["value"])
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def rewrite(value: Any, replacements: dict[str, str]) -> Any:
    """``value`` with every mocked string replaced by what the emulator gave (longest first)."""
    if isinstance(value, str):
        for mocked in sorted(replacements, key=len, reverse=True):
            value = value.replace(mocked, replacements[mocked])
        return value
    if isinstance(value, dict):
        return {key: rewrite(item, replacements) for key, item in value.items()}
    if isinstance(value, list):
        return [rewrite(item, replacements) for item in value]
    return value


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def tags(inputs: dict[str, Any], key: str = "Key", value: str = "Value") -> list[dict[str, str]]:
    return [{key: k, value: v} for k, v in (inputs.get("tags") or {}).items()]


def dimensions(given: dict[str, str] | None) -> list[dict[str, str]]:
    return [{"Name": k, "Value": v} for k, v in (given or {}).items()]


@dataclass
class Deployed:
    """One resource as the emulator holds it."""

    type: str
    name: str
    inputs: dict[str, Any]
    """Its inputs as created: secrets unwrapped, the mocks' values replaced by the emulator's."""
    state: dict[str, Any] = field(default_factory=dict)


class DeploymentError(AssertionError):
    """Resources that could not be created, or inputs naming what does not exist."""


class Emulator:
    """Creates a :class:`Program`'s AWS resources in a moto_server at ``endpoint``."""

    def __init__(self, endpoint: str, region: str) -> None:
        self.endpoint = endpoint
        self.region = region
        self._clients: dict[str, Any] = {}
        self.deployed: dict[tuple[str, str], Deployed] = {}
        self.not_created: dict[tuple[str, str], Deployed] = {}
        self.components: list[Registered] = []
        self.failures: list[str] = []
        self.replacements: dict[str, str] = {}
        self.arns: set[str] = set()
        self.names: dict[str, set[str]] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = make_client(service, self.endpoint, self.region)
        return self._clients[service]

    def _known(self, kind: str, name: str, *arns: str) -> None:
        self.names.setdefault(kind, set()).add(name)
        self.arns.update(a for a in arns if a)

    # -- deployment --------------------------------------------------------------------------------

    def deploy(self, program: Program) -> None:
        """Every resource of ``program`` created in dependency order; raises DeploymentError listing
        what failed to be created and every dangling reference."""
        rank = {t: n for n, t in enumerate(ORDER)}
        for resource in sorted(program.resources, key=lambda r: rank.get(r.type, len(ORDER))):
            if resource.type.startswith("expiry:index:"):
                self.components.append(resource)  # a ComponentResource: no cloud resource of its own
                continue
            mocked = program.outputs.get((resource.type, resource.name), {})
            deployed = Deployed(resource.type, resource.name, rewrite(plain(resource.inputs), self.replacements))
            if resource.type in NOT_CREATABLE:
                self.not_created[(resource.type, resource.name)] = deployed
                continue
            create = CREATORS.get(resource.type)
            if create is None:
                self.failures.append(f"{resource.type} {resource.name}: no way to create this type (add it)")
                continue
            try:
                deployed.state = create(self, deployed, plain(mocked))
            except ClientError as error:
                self.failures.append(f"{resource.type} {resource.name}: {error}")
                continue
            self.deployed[(resource.type, resource.name)] = deployed
            for key in MAPPED_OUTPUTS & set(deployed.state):
                fake, real = mocked.get(key), deployed.state[key]
                if isinstance(fake, str) and isinstance(real, str) and fake and fake != real:
                    self.replacements[fake] = real
        problems = self.failures + self.dangling()
        if problems:
            raise DeploymentError("the deployment is broken:\n  " + "\n  ".join(problems))

    def of_type(self, type_token: str) -> list[Deployed]:
        return [d for (t, _), d in self.deployed.items() if t == type_token]

    def one(self, type_token: str, name: str) -> Deployed:
        return self.deployed[(type_token, name)]

    # -- references --------------------------------------------------------------------------------

    def dangling(self) -> list[str]:
        """Every ARN or name in any resource's inputs (created or not) that names nothing moto holds."""
        found: list[str] = []
        for resource in [*self.deployed.values(), *self.not_created.values()]:
            for kind, value, where in references(resource):
                problem = f"dangling reference: {resource.type} {resource.name} {where} -> {kind} {value}"
                if not self.exists(kind, value) and problem not in found:
                    found.append(problem)
        return found

    def exists(self, kind: str, value: str) -> bool:
        if kind == "job-table":
            return value in self.names.get("table", set()) | self.names.get("pg-table", set())
        if kind != "arn":
            return value in self.names.get(kind, set())
        if value.startswith("arn:aws:s3:::"):  # a bucket, or objects in it
            return f"arn:aws:s3:::{value.removeprefix('arn:aws:s3:::').split('/')[0]}" in self.arns
        if value.startswith("arn:aws:iam::aws:policy/"):
            try:
                self.client("iam").get_policy(PolicyArn=value)
            except ClientError:
                return False
            return True
        if "*" in value:
            prefix = value.split("*", 1)[0]
            return any(arn.startswith(prefix) or arn == prefix.rstrip(":/") for arn in self.arns)
        return value in self.arns


def references(resource: Deployed) -> Iterator[tuple[str, str, str]]:
    """(kind, value, where) of each reference in ``resource``'s inputs: every ARN anywhere in them
    (JSON documents included), and the fields that name a resource without its ARN."""
    inputs = resource.inputs
    for text in strings(inputs):
        for arn in ARN.findall(text):
            yield "arn", arn, "(an ARN in its inputs)"
    named: list[tuple[str, Any, str]] = []
    kind = resource.type
    if kind in (ROLE_POLICY, ATTACHMENT):
        named.append(("role", inputs.get("role"), "role"))
    elif kind in (LIFECYCLE, PUBLIC_ACCESS):
        named.append(("bucket", inputs.get("bucket"), "bucket"))
    elif kind == INVOKE_CONFIG:
        named.append(("function", inputs.get("functionName"), "functionName"))
    elif kind == QUERY:
        named += [("log-group", g, "logGroupNames") for g in inputs.get("logGroupNames", [])]
    elif kind == FUNCTION:
        named.append(("log-group", (inputs.get("loggingConfig") or {}).get("logGroup"), "loggingConfig.logGroup"))
        raw = (inputs.get("environment") or {}).get("variables", {}).get("EXPIRY_JOB")
        if raw:
            named += job_references(json.loads(raw))
    elif kind == ALARM:
        metrics = [q["metric"] for q in inputs.get("metricQueries", []) if q.get("metric")]
        for dims in [inputs.get("dimensions") or {}, *(m.get("dimensions") or {} for m in metrics)]:
            named += dimension_references(dims, "dimensions")
    elif kind == DASHBOARD:
        for widget in json.loads(inputs["dashboardBody"])["widgets"]:
            for metric in widget.get("properties", {}).get("metrics", []):
                pairs = [m for m in metric[2:] if isinstance(m, str)]
                named += dimension_references(dict(zip(pairs[::2], pairs[1::2], strict=False)), "dashboardBody")
    for ref_kind, value, where in named:
        if value:
            yield ref_kind, str(value), where


def dimension_references(dims: dict[str, str], where: str) -> list[tuple[str, Any, str]]:
    # Expiry's own Table dimension is the job's table: DynamoDB's, or PostgreSQL's for a pg job.
    kinds = {"TableName": "table", "Table": "job-table", "FunctionName": "function", "QueueName": "queue"}
    return [(kinds[k], v, f"{where}.{k}") for k, v in dims.items() if k in kinds]


def job_references(raw: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """The tables, indexes and buckets a function's EXPIRY_JOB names (the PostgreSQL table is not AWS)."""
    job = parse_job(raw)
    named: list[tuple[str, Any, str]] = []
    if job.kind != "pg-monitor":
        named.append(("table", job.table, "EXPIRY_JOB.table_name"))
    breaker, s3, archive = getattr(job, "breaker", None), getattr(job, "s3", None), getattr(job, "archive", None)
    refs, index = getattr(job, "references", None), getattr(job, "expiry_index", None)
    if breaker is not None:
        named.append(("table", breaker.budget_table, "EXPIRY_JOB.budget_table_name"))
    if s3 is not None:
        named.append(("bucket", s3.bucket, "EXPIRY_JOB.s3.bucket"))
        if s3.owner_index:
            named.append(("index", f"{job.table}/{s3.owner_index}", "EXPIRY_JOB.s3.owner_index"))
    if archive is not None:
        named.append(("bucket", archive.bucket, "EXPIRY_JOB.archive_bucket"))
    if index is not None:
        named.append(("index", f"{job.table}/{index.name}", "EXPIRY_JOB.expiry_index_name"))
    if refs is not None:
        named.append(("table", refs.target_table, "EXPIRY_JOB.references.target_table_name"))
    return named


# -- one creator per resource type: (emulator, resource, the mocks' outputs) -> the emulator's outputs --


def create_table(em: Emulator, r: Deployed, mocked: dict[str, Any]) -> dict[str, Any]:
    i = r.inputs
    keys = [{"AttributeName": i["hashKey"], "KeyType": "HASH"}]
    if i.get("rangeKey"):
        keys.append({"AttributeName": i["rangeKey"], "KeyType": "RANGE"})
    extra: dict[str, Any] = {}
    if i.get("globalSecondaryIndexes"):
        extra["GlobalSecondaryIndexes"] = [
            {
                "IndexName": g["name"],
                "KeySchema": [{"AttributeName": k["attributeName"], "KeyType": k["keyType"]} for k in g["keySchemas"]],
                "Projection": {
                    "ProjectionType": g.get("projectionType", "ALL"),
                    **({"NonKeyAttributes": g["nonKeyAttributes"]} if g.get("nonKeyAttributes") else {}),
                },
            }
            for g in i["globalSecondaryIndexes"]
        ]
    if i.get("streamEnabled"):
        extra["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": i["streamViewType"]}
    if i.get("tags"):
        extra["Tags"] = tags(i)
    if i.get("tableClass"):
        extra["TableClass"] = i["tableClass"]
    dynamodb = em.client("dynamodb")
    table = dynamodb.create_table(
        TableName=mocked["name"],
        KeySchema=keys,
        AttributeDefinitions=[{"AttributeName": a["name"], "AttributeType": a["type"]} for a in i["attributes"]],
        BillingMode=i.get("billingMode", "PAY_PER_REQUEST"),
        DeletionProtectionEnabled=bool(i.get("deletionProtectionEnabled")),
        **extra,
    )["TableDescription"]
    if (i.get("ttl") or {}).get("enabled"):
        dynamodb.update_time_to_live(
            TableName=table["TableName"],
            TimeToLiveSpecification={"Enabled": True, "AttributeName": i["ttl"]["attributeName"]},
        )
    if (i.get("pointInTimeRecovery") or {}).get("enabled"):
        dynamodb.update_continuous_backups(
            TableName=table["TableName"], PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
        )
    indexes = [f"{table['TableArn']}/index/{g['IndexName']}" for g in table.get("GlobalSecondaryIndexes", [])]
    em._known("table", table["TableName"], table["TableArn"], *indexes, table.get("LatestStreamArn", ""))
    for g in table.get("GlobalSecondaryIndexes", []):
        em._known("index", f"{table['TableName']}/{g['IndexName']}")
    state = {"name": table["TableName"], "arn": table["TableArn"], "id": table["TableName"]}
    if table.get("LatestStreamArn"):
        state |= {"streamArn": table["LatestStreamArn"], "streamLabel": table["LatestStreamLabel"]}
    return state


def create_bucket(em: Emulator, r: Deployed, mocked: dict[str, Any]) -> dict[str, Any]:
    s3, name = em.client("s3"), mocked["bucket"]
    location = {} if em.region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": em.region}}
    s3.create_bucket(Bucket=name, **location)
    if r.inputs.get("tags"):
        s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": tags(r.inputs)})
    em._known("bucket", name, f"arn:aws:s3:::{name}")
    return {"bucket": name, "arn": f"arn:aws:s3:::{name}", "id": name}


def create_lifecycle(em: Emulator, r: Deployed, mocked: dict[str, Any]) -> dict[str, Any]:
    rules = []
    for rule in r.inputs["rules"]:
        made: dict[str, Any] = {"ID": rule["id"], "Status": rule["status"]}
        made["Filter"] = {"Prefix": (rule.get("filter") or {}).get("prefix", "")}
        if rule.get("abortIncompleteMultipartUpload"):
            days = rule["abortIncompleteMultipartUpload"]["daysAfterInitiation"]
            made["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
        if rule.get("expiration"):
            made["Expiration"] = {"Days": rule["expiration"]["days"]}
        rules.append(made)
    em.client("s3").put_bucket_lifecycle_configuration(
        Bucket=r.inputs["bucket"], LifecycleConfiguration={"Rules": rules}
    )
    return {"id": r.inputs["bucket"]}


def create_public_access_block(em: Emulator, r: Deployed, mocked: dict[str, Any]) -> dict[str, Any]:
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    em.client("s3").put_public_access_block(
        Bucket=r.inputs["bucket"],
        PublicAccessBlockConfiguration={f[0].upper() + f[1:]: bool(r.inputs.get(f)) for f in flags},
    )
    return {"id": r.inputs["bucket"]}


def create_queue(em: Emulator, r: Deployed, mocked: dict[str, Any]) -> dict[str, Any]:
    sqs, i = em.client("sqs"), r.inputs
    attributes = {"SqsManagedSseEnabled": str(bool(i.get("sqsManagedSseEnabled"))).lower()}
    if i.get("messageRetentionSeconds"):
        attributes["MessageRetentionPeriod"] = str(i["messageRetentionSeconds"])
    url = sqs.create_queue(QueueName=mocked["name"], Attributes=attributes, tags=i.get("tags") or {})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    em._known("queue", mocked["name"], arn)
    return {"name": mocked["name"], "arn": arn, "url": url, "id": url}


def create_topic(em: Emulator, r: Deployed, mocked: dict[str, Any]) -> dict[str, Any]:
    arn = em.client("sns").create_topic(Name=mocked["name"], Tags=tags(r.inputs))["TopicArn"]
    em._known("topic", mocked["name"], arn)
    return {"name": mocked["name"], "arn": arn, "id": arn}


def create_subscription(em: Emulator, r: Deployed, mocked: dict[str, Any]) -> dict[str, Any]:
    i = r.inputs
    arn = em.client("sns").subscribe(TopicArn=i["topic"], Protocol=i["protocol"], Endpoint=i["endpoint"])[
        "SubscriptionArn"
    ]
    return {"arn": arn, "id": arn}


def create_log_group(em: Emulator, r: Deployed, mocked: dict[str, Any]) -> dict[str, Any]:
    logs, name = em.client("logs"), mocked["name"]
    logs.create_log_group(logGroupName=name, tags=r.inputs.get("tags") or {})
    if r.inputs.get("retentionInDays"):
        logs.put_retention_policy(logGroupName=name, retentionInDays=r.inputs["retentionInDays"])
    (group,) = [g for g in logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"] if g["logGroupName"] == name]
    arn = group["arn"].removesuffix(":*")
    em._known("log-group", name, arn, f"{arn}:*")
    return {"name": name, "arn": arn, "id": name}


def create_secret(em: Emulator, r: Deployed, mocked: dict[str, Any]) -> dict[str, Any]:
    name = r.inputs.get("name") or f"{r.inputs.get('namePrefix', '')}{r.name}"
    arn = em.client("secretsmanager").create_secret(Name=name, Tags=tags(r.inputs))["ARN"]
    em._known("secret", name, arn)
    return {"name": name, "arn": arn, "id": arn}


def create_secret_version(em: Emulator, r: Deployed, mocked: dict[str, Any]) -> dict[str, Any]:
    version = em.client("secretsmanager").put_secret_value(
        SecretId=r.inputs["secretId"], SecretString=r.inputs["secretString"]
    )
    return {"versionId": version["VersionId"]}


def create_role(em: Emulator, r: Deployed, mocked: dict[str, Any]) -> dict[str, Any]:
    role = em.client("iam").create_role(
        RoleName=mocked["name"], AssumeRolePolicyDocument=r.inputs["assumeRolePolicy"], Tags=tags(r.inputs)
    )["Role"]
    em._known("role", role["RoleName"], role["Arn"])
    return {"name": role["RoleName"], "arn": role["Arn"], "id": role["RoleName"]}


def create_role_policy(em: Emulator, r: Deployed, mocked: dict[str, Any]) -> dict[str, Any]:
    em.client("iam").put_role_policy(
        RoleName=r.inputs["role"], PolicyName=mocked["name"], PolicyDocument=r.inputs["policy"]
    )
    return {"name": mocked["name"]}


def create_attachment(em: Emulator, r: Deployed, mocked: dict[str, Any]) -> dict[str, Any]:
    em.client("iam").attach_role_policy(RoleName=r.inputs["role"], PolicyArn=r.inputs["policyArn"])
    return {}


def archive_bytes(code: Any) -> bytes:
    """The zip a FileArchive names (the file the component built)."""
    path = Path(code.path)
    assert zipfile.is_zipfile(path), f"not a zip archive: {path}"
    return path.read_bytes()


def create_layer(em: Emulator, r: Deployed, mocked: dict[str, Any]) -> dict[str, Any]:
    i = r.inputs
    layer = em.client("lambda").publish_layer_version(
        LayerName=i["layerName"],
        Content={"ZipFile": archive_bytes(i["code"])},
        CompatibleRuntimes=i.get("compatibleRuntimes", []),
        CompatibleArchitectures=i.get("compatibleArchitectures", []),
    )
    em._known("layer", i["layerName"], layer["LayerVersionArn"], layer["LayerArn"])
    return {"arn": layer["LayerVersionArn"], "layerArn": layer["LayerArn"], "id": layer["LayerVersionArn"]}


def create_function(em: Emulator, r: Deployed, mocked: dict[str, Any]) -> dict[str, Any]:
    i, lam = r.inputs, em.client("lambda")
    extra: dict[str, Any] = {}
    if i.get("vpcConfig"):
        vpc = i["vpcConfig"]
        extra["VpcConfig"] = {"SubnetIds": vpc["subnetIds"], "SecurityGroupIds": vpc["securityGroupIds"]}
    if i.get("loggingConfig"):
        logging = i["loggingConfig"]
        extra["LoggingConfig"] = {k[0].upper() + k[1:]: v for k, v in logging.items()}
    if i.get("environment"):
        extra["Environment"] = {"Variables": i["environment"]["variables"]}
    function = lam.create_function(
        FunctionName=mocked["name"],
        Runtime=i["runtime"],
        Role=i["role"],
        Handler=i["handler"],
        Code={"ZipFile": archive_bytes(i["code"])},
        Timeout=i.get("timeout", 3),
        MemorySize=i.get("memorySize", 128),
        Architectures=i.get("architectures", ["x86_64"]),
        Layers=i.get("layers", []),
        Tags=i.get("tags") or {},
        **extra,
    )
    if i.get("reservedConcurrentExecutions") is not None:
        lam.put_function_concurrency(
            FunctionName=function["FunctionName"], ReservedConcurrentExecutions=i["reservedConcurrentExecutions"]
        )
    arn = function["FunctionArn"]
    em._known("function", function["FunctionName"], arn, f"{arn}:$LATEST")
    job = json.loads((i.get("environment") or {}).get("variables", {}).get("EXPIRY_JOB", "{}"))
    if job.get("kind") == "pg-monitor":  # the PostgreSQL table it watches, outside AWS
        em.names.setdefault("pg-table", set()).add(job["table_name"])
    return {"name": function["FunctionName"], "arn": arn, "qualifiedArn": f"{arn}:$LATEST", "id": arn}


def create_invoke_config(em: Emulator, r: Deployed, mocked: dict[str, Any]) -> dict[str, Any]:
    i = r.inputs
    em.client("lambda").put_function_event_invoke_config(
        FunctionName=i["functionName"],
        MaximumRetryAttempts=i["maximumRetryAttempts"],
        MaximumEventAgeInSeconds=i["maximumEventAgeInSeconds"],
    )
    return {}


def create_mapping(em: Emulator, r: Deployed, mocked: dict[str, Any]) -> dict[str, Any]:
    i = r.inputs
    extra: dict[str, Any] = {}
    if i.get("filterCriteria"):
        extra["FilterCriteria"] = {"Filters": [{"Pattern": f["pattern"]} for f in i["filterCriteria"]["filters"]]}
    if i.get("destinationConfig"):
        extra["DestinationConfig"] = {
            "OnFailure": {"Destination": i["destinationConfig"]["onFailure"]["destinationArn"]}
        }
    for source, target in [
        ("startingPosition", "StartingPosition"),
        ("batchSize", "BatchSize"),
        ("maximumBatchingWindowInSeconds", "MaximumBatchingWindowInSeconds"),
        ("functionResponseTypes", "FunctionResponseTypes"),
        ("bisectBatchOnFunctionError", "BisectBatchOnFunctionError"),
        ("maximumRetryAttempts", "MaximumRetryAttempts"),
    ]:
        if i.get(source) is not None:
            extra[target] = i[source]
    mapping = em.client("lambda").create_event_source_mapping(
        EventSourceArn=i["eventSourceArn"], FunctionName=i["functionName"], **extra
    )
    em._known("mapping", mapping["UUID"], mapping["EventSourceMappingArn"])
    return {"uuid": mapping["UUID"], "arn": mapping["EventSourceMappingArn"], "id": mapping["UUID"]}


def create_schedule(em: Emulator, r: Deployed, mocked: dict[str, Any]) -> dict[str, Any]:
    i, t = r.inputs, r.inputs["target"]
    target: dict[str, Any] = {"Arn": t["arn"], "RoleArn": t["roleArn"]}
    if t.get("input"):
        target["Input"] = t["input"]
    if t.get("deadLetterConfig"):
        target["DeadLetterConfig"] = {"Arn": t["deadLetterConfig"]["arn"]}
    if t.get("retryPolicy"):
        retry = t["retryPolicy"]
        target["RetryPolicy"] = {
            "MaximumRetryAttempts": retry["maximumRetryAttempts"],
            "MaximumEventAgeInSeconds": retry["maximumEventAgeInSeconds"],
        }
    arn = em.client("scheduler").create_schedule(
        Name=mocked["name"],
        GroupName=i.get("groupName", "default"),
        ScheduleExpression=i["scheduleExpression"],
        ScheduleExpressionTimezone=i.get("scheduleExpressionTimezone", "UTC"),
        FlexibleTimeWindow={"Mode": i["flexibleTimeWindow"]["mode"]},
        Target=target,
    )["ScheduleArn"]
    em._known("schedule", mocked["name"], arn)
    return {"arn": arn}


def create_alarm(em: Emulator, r: Deployed, mocked: dict[str, Any]) -> dict[str, Any]:
    i, cloudwatch = r.inputs, em.client("cloudwatch")
    alarm: dict[str, Any] = {
        "AlarmName": mocked["name"],
        "ComparisonOperator": i["comparisonOperator"],
        "EvaluationPeriods": i["evaluationPeriods"],
        "Threshold": float(i["threshold"]),
        "TreatMissingData": i.get("treatMissingData", "missing"),
        "AlarmActions": i.get("alarmActions", []),
        "OKActions": i.get("okActions", []),
        "Tags": tags(i),
    }
    if i.get("alarmDescription"):
        alarm["AlarmDescription"] = i["alarmDescription"]
    if i.get("metricQueries"):
        queries = []
        for q in i["metricQueries"]:
            query: dict[str, Any] = {"Id": q["id"], "ReturnData": bool(q.get("returnData"))}
            if q.get("label"):
                query["Label"] = q["label"]
            if q.get("expression"):
                query["Expression"] = q["expression"]
            if q.get("metric"):
                m = q["metric"]
                metric = {
                    "Namespace": m["namespace"],
                    "MetricName": m["metricName"],
                    "Dimensions": dimensions(m.get("dimensions")),
                }
                query["MetricStat"] = {"Metric": metric, "Period": m["period"], "Stat": m["stat"]}
            queries.append(query)
        alarm["Metrics"] = queries
    else:
        alarm |= {
            "Namespace": i["namespace"],
            "MetricName": i["metricName"],
            "Statistic": i["statistic"],
            "Period": i["period"],
            "Dimensions": dimensions(i.get("dimensions")),
        }
    cloudwatch.put_metric_alarm(**alarm)
    (made,) = cloudwatch.describe_alarms(AlarmNames=[mocked["name"]])["MetricAlarms"]
    em._known("alarm", mocked["name"], made["AlarmArn"])
    return {"name": mocked["name"], "arn": made["AlarmArn"], "id": mocked["name"]}


def create_dashboard(em: Emulator, r: Deployed, mocked: dict[str, Any]) -> dict[str, Any]:
    cloudwatch, name = em.client("cloudwatch"), r.inputs["dashboardName"]
    cloudwatch.put_dashboard(DashboardName=name, DashboardBody=r.inputs["dashboardBody"])
    (entry,) = [d for d in cloudwatch.list_dashboards()["DashboardEntries"] if d["DashboardName"] == name]
    em._known("dashboard", name, entry["DashboardArn"])
    return {"dashboardArn": entry["DashboardArn"]}


CREATORS: dict[str, Callable[[Emulator, Deployed, dict[str, Any]], dict[str, Any]]] = {
    TABLE: create_table,
    BUCKET: create_bucket,
    LIFECYCLE: create_lifecycle,
    PUBLIC_ACCESS: create_public_access_block,
    QUEUE: create_queue,
    TOPIC: create_topic,
    SUBSCRIPTION: create_subscription,
    LOG_GROUP: create_log_group,
    SECRET: create_secret,
    SECRET_VERSION: create_secret_version,
    ROLE: create_role,
    ROLE_POLICY: create_role_policy,
    ATTACHMENT: create_attachment,
    LAYER: create_layer,
    FUNCTION: create_function,
    INVOKE_CONFIG: create_invoke_config,
    MAPPING: create_mapping,
    SCHEDULE: create_schedule,
    ALARM: create_alarm,
    DASHBOARD: create_dashboard,
}
assert not set(CREATORS) & set(NOT_CREATABLE) and set(CREATORS) | set(NOT_CREATABLE) == set(ORDER)
