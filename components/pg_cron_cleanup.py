"""PgCronCleanup: PostgreSQL purges its own expired rows in batches with pg_cron, provisioned by Pulumi."""

from typing import Any, NotRequired, TypedDict

import pulumi
import pulumi.dynamic
import pulumi_aws as aws

from components import validation as v
from components.pg_cron_provider import STATE_KEYS, PgCronCleanupProvider
from runtime.pg_cleanup import CleanupError, PurgeSpec

COMPONENT = "PgCronCleanup"
SECRET_INPUTS = ["password", "dsn"]


class PgCronCleanupArgs(TypedDict):
    """Inputs of a PgCronCleanup."""

    table: str
    """The table whose expired rows are purged."""
    expiry_column: str
    """Its expiry column: epoch seconds (bigint, integer, numeric), timestamptz or timestamp (read as UTC)."""
    table_schema: NotRequired[str]
    """Schema of the table (default public)."""
    schema: NotRequired[str]
    """Schema for what the cleanup creates (default expiry)."""
    job_name: NotRequired[str]
    """pg_cron job name, also the procedure's (default: the component's name)."""
    schedule: NotRequired[str]
    """5-field cron, GMT (default 0 3 * * *: daily at 03:00)."""
    batch_size: NotRequired[int]
    """Rows per batch, one transaction each (default 5000)."""
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
    create_index: NotRequired[bool]
    """Create the btree index on the expiry column (CONCURRENTLY) when it is missing (default false)."""
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


def purge_spec(name: str, args: dict[str, Any]) -> PurgeSpec:
    """The validated PurgeSpec of a PgCronCleanup, with errors naming the component and field."""
    fields = {key: args[key] for key in PurgeSpec.__dataclass_fields__ if key in args}
    fields.setdefault("job_name", name)
    for key, value in fields.items():
        v.plain(COMPONENT, key, value)
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

    def __init__(self, name: str, args: PgCronCleanupArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        raw: dict[str, Any] = dict(args)
        unknown = set(raw) - set(PgCronCleanupArgs.__annotations__)
        if unknown:
            v.fail(COMPONENT, "args", f"unknown fields {sorted(unknown)}")
        spec = purge_spec(name, raw)
        if raw.get("dsn") is not None:
            extra = [key for key in ("host", "port", "database", "user", "password") if raw.get(key) is not None]
            if extra:
                v.fail(COMPONENT, "dsn", f"give either dsn or {', '.join(extra)}, not both")
        else:
            for key in ("host", "database", "user"):
                if raw.get(key) is None:
                    v.fail(COMPONENT, key, "is required (or give dsn)")
        super().__init__(f"expiry:index:{COMPONENT}", name, {}, opts)

        props: dict[str, Any] = {
            **spec.to_dict(),
            "host": raw.get("host"),
            "port": raw.get("port", 5432),
            "database": raw.get("database"),
            "user": raw.get("user"),
        }
        for key in SECRET_INPUTS:
            props[key] = pulumi.Output.secret(raw[key]) if raw.get(key) is not None else None
        if raw.get("dsn") is not None:
            props.update(host=None, port=None)
        self.job = _PgCronJob(
            f"{name}-job",
            props,
            pulumi.ResourceOptions(parent=self, additional_secret_outputs=SECRET_INPUTS),
        )
        self.spec = spec
        self.job_name = pulumi.Output.from_input(spec.job_name)
        self.procedure = pulumi.Output.from_input(f"{spec.schema}.{spec.job_name}")
        self.status_view = pulumi.Output.from_input(f"{spec.schema}.{spec.job_name}_status")
        self.cron_database = self.job.cron_database
        self.job_id = self.job.job_id
        self.expiry_column_indexed = self.job.expiry_column_indexed
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
