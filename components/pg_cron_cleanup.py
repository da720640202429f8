"""PgCronCleanup: PostgreSQL purges its own expired rows in batches with pg_cron, provisioned by Pulumi."""

import json
from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict

import pulumi
import pulumi.dynamic
import pulumi_aws as aws

from expiry.components import validation as v
from expiry.components.lambda_bundle import Bundle, build_bundle
from expiry.components.lambda_parts import lambda_role, log_group, psycopg_layer, vpc_access
from expiry.components.pg_cron_provider import PROVISIONING_KEY, STATE_KEYS, PgCronCleanupProvider
from expiry.components.sweeper_policy import statement
from expiry.components.transforms import ALL, Child, ChildTransform, rails, with_transforms
from expiry.runtime.postgres.spec import CleanupError, PurgeSpec, provisioning_code

COMPONENT = "PgCronCleanup"
SECRET_INPUTS = ["password", "dsn"]
VPC_INPUTS = ("secret_arn", "subnet_ids", "security_group_ids")
PROVISIONER_RUNTIME = "python3.13"
PROVISION_HANDLER = "expiry.runtime.handlers.pg_provision.handler"
# The children `transforms` reaches: key -> resource type and logical name after the component's name.
# Direct mode has `job` (the dynamic resource running the SQL), VPC mode the rest.
CHILDREN = {
    "job": Child(
        "pulumi-python:dynamic/expiry:PgCronJob",
        "-job",
        {ALL: "it is the cleanup and connection the component validated; a transform may only add options"},
    ),
    "log_group": Child(aws.cloudwatch.LogGroup, "-provisioner-logs"),
    "role": Child(aws.iam.Role, "-provisioner-role"),
    "policy": Child(aws.iam.RolePolicy, "-provisioner-policy", rails("policy", "role")),
    "vpc_access": Child(aws.iam.RolePolicyAttachment, "-provisioner-vpc-access"),
    "psycopg_layer": Child(aws.lambda_.LayerVersion, "-psycopg"),
    "function": Child(aws.lambda_.Function, "-provisioner", rails("role", "code", "handler")),
    "invocation": Child(aws.lambda_.Invocation, "-invocation", rails("input")),
}
VPC_CHILDREN = ("log_group", "role", "policy", "vpc_access", "psycopg_layer", "function", "invocation")


class PgCronCleanupArgs(TypedDict):
    """Inputs of a PgCronCleanup."""

    table: str
    """The table whose expired rows are purged."""
    expiry_column: NotRequired[str]
    """Its expiry column: epoch seconds (bigint, integer, numeric), timestamptz or timestamp (read as UTC).
    Required unless `expiry_expression` is given."""
    expiry_expression: NotRequired[str]
    """Instead of `expiry_column`: each row's expiry as an SQL expression over its columns, e.g.
    `created_at + interval '30 days'` (timestamptz, timestamp, date or epoch seconds); a row is expired
    when it is before now(). Checked by the server when provisioning: no subquery, `;`, comment,
    volatile or clock function. Its batches walk the table by TID range (one pass a run)."""
    table_schema: NotRequired[str]
    """Schema of the table (default public)."""
    schema: NotRequired[str]
    """Schema for what the cleanup creates (default expiry)."""
    job_name: NotRequired[str]
    """pg_cron job name, also the procedure's (default: the component's name)."""
    schedule: NotRequired[str]
    """5-field cron, GMT (default 0 3 * * *: daily at 03:00)."""
    batch_size: NotRequired[int]
    """Rows in the first batch, one transaction each (default 5000); then sized by `target_batch_ms`.
    Without an index on the expiry column (or with `expiry_expression`), batches are ranges of pages
    read once each run, the first holding about this many rows."""
    max_runtime_seconds: NotRequired[int]
    """A run stops starting batches after this (default 300)."""
    history_days: NotRequired[int]
    """Keep cron.job_run_details rows this long (default 7; pg_cron never prunes them)."""
    history_schedule: NotRequired[str]
    """When the history job runs (default 17 * * * *)."""
    extra_column: NotRequired[str]
    """Purge only rows whose `extra_column` equals `extra_value`."""
    extra_value: NotRequired[str]
    """Value of `extra_column` that rows must have."""
    tags: NotRequired[pulumi.Input[dict[str, pulumi.Input[str]]]]
    """VPC mode: tags of the provisioning Lambda's resources."""
    paused: NotRequired[bool]
    """Pause the cleanup: its pg_cron jobs (the purge and the history job) are set inactive in place, so pg_cron
    runs neither, and active again when false (default false). A run already going on finishes."""
    create_index: NotRequired[bool]
    """Create the btree index on the expiry column (CONCURRENTLY) when it is missing (default false)."""
    breaker_max_share: NotRequired[float]
    """Mass-deletion breaker: a run that would delete more than this share of the rows in scope deletes
    nothing, logs why and fails (default 0.5)."""
    breaker_max_count: NotRequired[int]
    """Mass-deletion breaker: ... or more than this many rows (default: no count limit)."""
    breaker_ignore_below: NotRequired[int]
    """Runs deleting at most this many rows are never refused (default 10)."""
    allow_mass_deletion: NotRequired[bool]
    """Let a run the breaker would refuse go on (default false)."""
    target_batch_ms: NotRequired[int]
    """Size batches so each takes about this long (default 50; 0: every batch is `batch_size`).
    A renewal of a row in a batch waits at most about this long."""
    max_batch_size: NotRequired[int]
    """The largest batch the sizing may reach (default 200000)."""
    archive: NotRequired[bool]
    """Copy each purged row (as jsonb, with the time) into <schema>.<job>_archive, in the same
    transaction as its delete (default false)."""
    archive_days: NotRequired[int]
    """Keep archived rows this long (default 30)."""
    mode: NotRequired[str]
    """delete (default): batched deletes; drop-partitions: drop whole range partitions of a table
    partitioned by the expiry column once their upper bound has passed."""
    run_as: NotRequired[str]
    """A LOGIN role pg_cron runs both jobs as, with SELECT and DELETE on the table (default: `user`, which
    provisions). `user` must be a superuser or a member of it; changing it replaces the cleanup."""
    host: NotRequired[pulumi.Input[str]]
    """Database host (or give `dsn`)."""
    port: NotRequired[pulumi.Input[int]]
    """Database port (default 5432)."""
    database: NotRequired[pulumi.Input[str]]
    """Database of the table."""
    user: NotRequired[pulumi.Input[str]]
    """User that owns the cleanup (needs rights on the table and in pg_cron's database)."""
    password: NotRequired[pulumi.Input[str]]
    """Password; always stored as a Pulumi secret."""
    dsn: NotRequired[pulumi.Input[str]]
    """A libpq connection string instead of host/port/database/user/password; a secret."""
    secret_arn: NotRequired[pulumi.Input[str]]
    """VPC mode: Secrets Manager secret with the password (and username); no password in Pulumi at all."""
    subnet_ids: NotRequired[list[pulumi.Input[str]]]
    """VPC mode: subnets of the provisioning Lambda, which can reach the database."""
    security_group_ids: NotRequired[list[pulumi.Input[str]]]
    """VPC mode: its security groups."""
    architecture: NotRequired[str]
    """VPC mode: arm64 (default) or x86_64."""
    psycopg_layer_arn: NotRequired[pulumi.Input[str]]
    """VPC mode: a prebuilt psycopg layer for that architecture and python3.13 (default: one built from
    PyPI's wheels while the program runs)."""


def purge_spec(name: str, args: dict[str, Any]) -> PurgeSpec:
    """The validated PurgeSpec of a PgCronCleanup, with errors naming the component and field."""
    fields = {key: args[key] for key in PurgeSpec.__dataclass_fields__ if key in args}
    fields.setdefault("job_name", name)
    if fields.get("table") is None:
        v.fail(COMPONENT, "table", "is required")
    if fields.get("expiry_column") is None and fields.get("expiry_expression") is None:
        v.fail(COMPONENT, "expiry_column", "is required (or give expiry_expression)")
    for key, value in fields.items():
        v.plain(COMPONENT, key, value)
    for key in ("create_index", "paused"):
        if key in fields:
            v.boolean(COMPONENT, key, fields[key])
    try:
        return PurgeSpec(**fields)
    except CleanupError as error:
        raise ValueError(f"{COMPONENT}: {error}") from error


class _PgCronJob(pulumi.dynamic.Resource, module="expiry", name="PgCronJob"):
    cron_database: pulumi.Output[str]
    column_kind: pulumi.Output[str]
    job_id: pulumi.Output[int]
    history_job_id: pulumi.Output[int]
    created_schema: pulumi.Output[bool]
    created_index: pulumi.Output[bool]
    expiry_column_indexed: pulumi.Output[bool]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        super().__init__(PgCronCleanupProvider(), name, {**props, **dict.fromkeys(STATE_KEYS)}, opts)


class PgCronCleanup(pulumi.ComponentResource):
    """pg_cron jobs that purge a table's expired rows in batches inside PostgreSQL, with a job that
    prunes pg_cron's run history and a status view."""

    job_name: pulumi.Output[str]
    """The pg_cron job (and procedure) name."""
    procedure: pulumi.Output[str]
    """The purge procedure, schema-qualified."""
    status_view: pulumi.Output[str]
    """The status view, schema-qualified."""
    cron_database: pulumi.Output[str]
    """The database pg_cron runs in (where <schema>.<job>_runs lives)."""
    job_id: pulumi.Output[int]
    """pg_cron's id of the purge job."""
    expiry_column_indexed: pulumi.Output[bool]
    """Whether a btree index leads with the expiry column; false means each batch scans the table."""

    def __init__(
        self,
        name: str,
        args: PgCronCleanupArgs,
        opts: pulumi.ResourceOptions | None = None,
        *,
        transforms: Mapping[str, ChildTransform] | None = None,
    ) -> None:
        """``transforms``: a transform per child (keys: CHILDREN), for what the args do not cover."""
        raw = v.known_fields(COMPONENT, args, PgCronCleanupArgs)
        spec = purge_spec(name, raw)
        vpc_mode = any(raw.get(key) is not None for key in VPC_INPUTS)
        _check_connection(raw, vpc_mode)
        architecture = v.one_of(COMPONENT, "architecture", raw.get("architecture", "arm64"), ("arm64", "x86_64"))
        v.tags(COMPONENT, "tags", raw.get("tags"))
        if raw.get("psycopg_layer_arn") is not None:
            if not vpc_mode:
                v.fail(COMPONENT, "psycopg_layer_arn", "is used in VPC mode only (secret_arn, subnet_ids, ...)")
            v.layer_arn(COMPONENT, "psycopg_layer_arn", raw["psycopg_layer_arn"])
        if vpc_mode:
            absent = {"job": "VPC mode runs the SQL in the provisioner function (its invocation)"}
            if raw.get("psycopg_layer_arn") is not None:
                absent["psycopg_layer"] = "it conflicts with psycopg_layer_arn (that layer is used)"
        else:
            absent = dict.fromkeys(VPC_CHILDREN, "only VPC mode (secret_arn, subnet_ids, security_group_ids) has one")
        opts = with_transforms(COMPONENT, name, CHILDREN, transforms, opts, absent)
        bundle = build_bundle(None, COMPONENT) if vpc_mode else None
        super().__init__(f"expiry:index:{COMPONENT}", name, {}, opts)

        if bundle is not None:
            state = self._provision_from_vpc(name, raw, spec, bundle, architecture)
        else:
            state = self._provision_from_here(name, raw, spec)
        self.spec = spec
        self.job_name = pulumi.Output.from_input(spec.job_name)
        self.procedure = pulumi.Output.from_input(f"{spec.schema}.{spec.job_name}")
        self.status_view = pulumi.Output.from_input(f"{spec.schema}.{spec.job_name}_status")
        self.cron_database = state["cron_database"]
        self.job_id = state["job_id"]
        self.expiry_column_indexed = state["expiry_column_indexed"]
        self.register_outputs(
            {
                "job_name": self.job_name,
                "procedure": self.procedure,
                "status_view": self.status_view,
                "cron_database": self.cron_database,
                "job_id": self.job_id,
                "expiry_column_indexed": self.expiry_column_indexed,
            }
        )

    def _provision_from_here(self, name: str, raw: dict[str, Any], spec: PurgeSpec) -> dict[str, pulumi.Output]:
        """The dynamic provider runs the SQL from the deploying machine."""
        props: dict[str, Any] = {
            **spec.to_dict(),
            "host": raw.get("host"),
            "port": raw.get("port", 5432),
            "database": raw.get("database"),
            "user": raw.get("user"),
            PROVISIONING_KEY: provisioning_code(),
        }
        for key in SECRET_INPUTS:
            props[key] = pulumi.Output.secret(raw[key]) if raw.get(key) is not None else None
        if raw.get("dsn") is not None:
            props.update(host=None, port=None)
        self.job = _PgCronJob(
            f"{name}-job", props, pulumi.ResourceOptions(parent=self, additional_secret_outputs=SECRET_INPUTS)
        )
        return {key: getattr(self.job, key) for key in ("cron_database", "job_id", "expiry_column_indexed")}

    def _provision_from_vpc(
        self, name: str, raw: dict[str, Any], spec: PurgeSpec, bundle: Bundle, architecture: str
    ) -> dict[str, pulumi.Output]:
        """A Lambda in the database's VPC runs the same SQL, invoked at every create, update and delete."""
        child = pulumi.ResourceOptions(parent=self)
        tags = raw.get("tags")
        self.log_group = log_group(f"{name}-provisioner", 30, tags, child)
        self.role = lambda_role(f"{name}-provisioner", tags, child)
        policy = pulumi.Output.all(self.log_group.arn, raw["secret_arn"]).apply(
            lambda a: json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        statement("Logs", ["logs:CreateLogStream", "logs:PutLogEvents"], [a[0], f"{a[0]}:*"]),
                        statement("DatabaseSecret", ["secretsmanager:GetSecretValue"], [a[1]]),
                    ],
                }
            )
        )
        self.role_policy = aws.iam.RolePolicy(
            f"{name}-provisioner-policy", role=self.role.id, policy=policy, opts=child
        )
        self.vpc_access = vpc_access(f"{name}-provisioner", self.role, child)
        layer = raw.get("psycopg_layer_arn")
        if layer is None:
            self.psycopg_layer = psycopg_layer(name, architecture, PROVISIONER_RUNTIME, bundle.path.parent, child)
            layer = self.psycopg_layer.arn
        self.provisioner = aws.lambda_.Function(
            f"{name}-provisioner",
            runtime=PROVISIONER_RUNTIME,
            architectures=[architecture],
            handler=PROVISION_HANDLER,
            role=self.role.arn,
            code=pulumi.FileArchive(str(bundle.path)),
            source_code_hash=bundle.sha256_base64,
            timeout=300,
            memory_size=256,
            layers=[layer],
            vpc_config=aws.lambda_.FunctionVpcConfigArgs(
                subnet_ids=raw["subnet_ids"], security_group_ids=raw["security_group_ids"]
            ),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="JSON", log_group=self.log_group.name),
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.role_policy, self.vpc_access]),
        )
        connection = {key: raw.get(key) for key in ("host", "database", "secret_arn", "user")}
        connection["port"] = raw.get("port", 5432)
        payload = pulumi.Output.all(**{k: val for k, val in connection.items() if val is not None}).apply(
            lambda c: json.dumps(
                {"cleanup": spec.to_dict(), "connection": c, PROVISIONING_KEY: provisioning_code()}, sort_keys=True
            )
        )
        self.invocation = aws.lambda_.Invocation(
            f"{name}-invocation",
            function_name=self.provisioner.name,
            input=payload,
            lifecycle_scope="CRUD",
            opts=child,
        )
        result: pulumi.Output[dict[str, Any]] = self.invocation.result.apply(
            lambda text: json.loads(text) if text else {}
        )
        return {key: _result_field(result, key) for key in ("cron_database", "job_id", "expiry_column_indexed")}


def _result_field(result: pulumi.Output[dict[str, Any]], key: str) -> pulumi.Output[Any]:
    """One field of the provisioner's reply."""
    return result.apply(lambda reply: reply.get(key))


def _check_connection(raw: dict[str, Any], vpc_mode: bool) -> None:
    """Exactly one way to reach the database: a DSN, host and credentials, or VPC mode with a secret."""
    port = raw.get("port")
    if port is not None and not isinstance(port, pulumi.Output):
        v.integer(COMPONENT, "port", port, 1, 65535)
    if vpc_mode:
        for key in (*VPC_INPUTS, "host", "database"):
            if raw.get(key) is None:
                v.fail(COMPONENT, key, "is required in VPC mode (secret_arn, subnet_ids, security_group_ids)")
        for key in SECRET_INPUTS:
            if raw.get(key) is not None:
                v.fail(COMPONENT, key, "is not used in VPC mode: the Lambda reads the password from secret_arn")
        return
    if raw.get("dsn") is not None:
        extra = [key for key in ("host", "port", "database", "user", "password") if raw.get(key) is not None]
        if extra:
            v.fail(COMPONENT, "dsn", f"give either dsn or {', '.join(extra)}, not both")
        return
    for key in ("host", "database", "user"):
        if raw.get(key) is None:
            v.fail(COMPONENT, key, "is required (or give dsn)")


def pg_cron_parameters(
    cron_database: str = "postgres", other_libraries: tuple[str, ...] = ()
) -> list[aws.rds.ParameterGroupParameterArgs]:
    """RDS parameters that load pg_cron: `shared_preload_libraries` (with ``other_libraries``
    kept) and `cron.database_name`. Both are static: they apply after the instance reboots."""
    libraries = ",".join(dict.fromkeys([*other_libraries, "pg_cron"]))
    return [
        aws.rds.ParameterGroupParameterArgs(
            name="shared_preload_libraries", value=libraries, apply_method="pending-reboot"
        ),
        aws.rds.ParameterGroupParameterArgs(
            name="cron.database_name", value=cron_database, apply_method="pending-reboot"
        ),
    ]


def pg_cron_parameter_group(
    name: str,
    family: str = "postgres15",
    cron_database: str = "postgres",
    other_libraries: tuple[str, ...] = (),
    opts: pulumi.ResourceOptions | None = None,
) -> aws.rds.ParameterGroup:
    """An RDS parameter group with pg_cron loaded. Attach it to the instance, reboot the instance
    (static parameters), then create PgCronCleanup."""
    if not family.startswith(("postgres", "aurora-postgresql")):
        v.fail("pg_cron_parameter_group", "family", f"must be a PostgreSQL family (postgres15, ...), got {family!r}")
    return aws.rds.ParameterGroup(
        name,
        family=family,
        description="pg_cron for Expiry cleanups (reboot to apply)",
        parameters=pg_cron_parameters(cron_database, other_libraries),
        opts=opts,
    )
