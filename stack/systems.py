"""The cleanup infrastructure of the systems Expiry was designed from, built from stack settings."""

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from expiry.components.budget_ledger import budget_ledger
from expiry.components.cleanup_alarms import CleanupAlarms, table_names, watched_job, watched_stream
from expiry.components.pg_cron_cleanup import PgCronCleanup
from expiry.components.scheduled_sweeper import ScheduledSweeper, table_target
from expiry.components.stream_cascade import TtlStreamCascade, stream_target
from expiry.components.ttl_table import TtlTable
from expiry.runtime import kinds
from expiry.runtime.jobs import metrics as m
from expiry.runtime.jobs.config import SWEEPING_KINDS, UNINDEXED_CHECK_ITEMS
from stack.settings import StackSettings

# The upload table's index on the object key: the ownership rule's way to every session naming an object.
UPLOADS_OWNER_INDEX = "key-owner-index"

# ActingWeb's OAuth2 indexes (oauth2_server/token_manager.py, client_registry.py): entries under the
# system actor whose `data` is the JSON-encoded actor id, each pointing at that actor's own item.
# INDEX_TTL_BUFFER (constants.py): an entry outlives its token by two hours on purpose.
ACTINGWEB_REFERENCES: dict[str, Any] = {
    "hash_value": "_actingweb_oauth2",
    "owner_attribute": "data",
    "owner_format": "json",
    "grace_seconds": 7200,
    "indexes": [
        {"range_prefix": "_auth_code_index:", "target": ["{owner}", "mcp_auth_codes:{token}"]},
        {"range_prefix": "_access_token_index:", "target": ["{owner}", "mcp_tokens:{token}"]},
        {"range_prefix": "_refresh_token_index:", "target": ["{owner}", "mcp_refresh_tokens:{token}"]},
        {"range_prefix": "_client_index:", "target": ["{owner}", "mcp_clients:{token}"]},  # permanent: no TTL
    ],
}


@dataclass
class Built:
    """What the program exports."""

    tables: dict[str, TtlTable] = field(default_factory=dict)
    sweepers: dict[str, ScheduledSweeper] = field(default_factory=dict)
    cascades: dict[str, TtlStreamCascade] = field(default_factory=dict)
    archive_bucket: aws.s3.Bucket | None = None
    watched: list[dict[str, Any]] = field(default_factory=list)
    bucket: aws.s3.Bucket | None = None
    pg_cleanup: PgCronCleanup | None = None
    alarms: CleanupAlarms | None = None
    budget_ledger: aws.dynamodb.Table | None = None


def _table(
    s: StackSettings, name: str, physical: str, args: dict[str, Any], writers_set_shard: bool = True
) -> TtlTable:
    """A cleaned-up system's table; with an expiry index only where its writers set the shard attribute."""
    index = (
        {"expiry_index": True, "expiry_index_shards": s.expiry_index_shards}
        if s.expiry_index_shards and writers_set_shard
        else {}
    )
    return TtlTable(
        name,
        {
            "table_name": physical,
            "deletion_protection": s.deletion_protection,
            "point_in_time_recovery": s.point_in_time_recovery,
            "tags": s.tags,
            **index,
            **args,
        },
    )


def _sweeper(s: StackSettings, built: Built, name: str, args: dict[str, Any]) -> ScheduledSweeper:
    sweeper = ScheduledSweeper(
        name,
        {
            "dry_run": s.dry_run,
            "paused": s.paused,
            "log_retention_days": s.log_retention_days,
            "reserve_concurrency": s.reserve_concurrency,
            "tags": s.tags,
            **_rails(s, args),
            **(_ledger(s, built) if args["kind"] in SWEEPING_KINDS else {}),
            **args,
        },
    )
    built.sweepers[name] = sweeper
    built.watched.append(watched_job(sweeper))
    return sweeper


def _ledger(s: StackSettings, built: Built) -> dict[str, Any]:
    """The one budget ledger the stack's deleting sweepers share (each table's budget is its own record)."""
    if built.budget_ledger is None:
        physical = f"expiry-deletion-budget-{s.environment}"
        built.budget_ledger = budget_ledger(
            "deletion-budget", s.tags, table_name=physical, deletion_protection=s.deletion_protection
        )
    return {"budget_table_name": built.budget_ledger.name, "budget_table_arn": built.budget_ledger.arn}


def _rails(s: StackSettings, args: dict[str, Any]) -> dict[str, Any]:
    """The breaker of jobs that delete, and the unindexed-items check of jobs reading an expiry index."""
    rails: dict[str, Any] = {}
    if args["kind"] in ("sweep", "orphaned-references"):
        rails["breaker"] = {"max_share": s.breaker_max_share, "allow_mass_deletion": s.allow_mass_deletion}
    if "expiry_index_name" in args and args["kind"] in ("sweep", "ttl-monitor"):
        rails["unindexed_check_items"] = UNINDEXED_CHECK_ITEMS
    return rails


def chat_checkpoints(s: StackSettings, built: Built) -> None:
    """The TTL-monitor Lambda summary: checkpoints with an hourly TTL monitor."""
    table = _table(
        s,
        "checkpoints",
        f"collections-checkpoints-{s.environment}",
        {
            "hash_key": "thread_id",
            "range_key": "checkpoint_id",
            "ttl_attribute": "expires_at",
            "attributes": {"user_id": "S", "last_activity": "N"},
            "global_indexes": [
                {"name": "user_id-last_activity-index", "hash_key": "user_id", "range_key": "last_activity"}
            ],
        },
    )
    built.tables["checkpoints"] = table
    _sweeper(
        s,
        built,
        "checkpoints-monitor",
        {"kind": "ttl-monitor", "schedule": s.checkpoints_monitor_schedule, **table_target(table)},
    )


def video_uploads(s: StackSettings, built: Built) -> None:
    """Video uploads: upload sessions, their bucket, and a sweeper every 6 hours."""
    layout = s.uploads_layout
    stream = layout.cascade == "stream"
    table = _table(
        s,
        "upload-sessions",
        f"upload-sessions-{s.environment}",
        {
            "hash_key": layout.session_id_attribute,
            "ttl_attribute": layout.ttl_attribute,
            "attributes": {layout.object_key_attribute: "S"},
            # The ownership rule's index: every session naming an object, found before it is deleted.
            "global_indexes": [
                {"name": UPLOADS_OWNER_INDEX, "hash_key": layout.object_key_attribute, "projection": "KEYS_ONLY"}
            ],
            **({"stream_view_type": "OLD_IMAGE"} if stream else {}),
        },
        writers_set_shard=layout.writers_set_expiry_shard,
    )
    built.tables["upload-sessions"] = table
    bucket = _private_bucket(s, "uploads")
    aws.s3.BucketLifecycleConfiguration(
        "uploads-lifecycle",
        bucket=bucket.id,
        rules=[
            aws.s3.BucketLifecycleConfigurationRuleArgs(
                id="abort-incomplete-multipart-uploads",
                status="Enabled",
                filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                    days_after_initiation=1
                ),
            ),
        ],
    )
    built.bucket = bucket
    s3 = {
        "bucket": bucket.bucket,
        "key_attribute": layout.object_key_attribute,
        "upload_id_attribute": layout.upload_id_attribute,
        "status_attribute": layout.status_attribute,
        "keep_statuses": layout.kept_statuses,
        "keep_marker": layout.keep_marker,
        "object_prefix": layout.object_prefix,
        "owner_index": UPLOADS_OWNER_INDEX,
    }
    if stream:
        archive = _archive_bucket(s, built) if layout.archive_expired else None

        cascade = TtlStreamCascade(
            "upload-cascade",
            {
                **stream_target(table),
                "s3": s3,
                "dry_run": s.dry_run,
                "paused": s.paused,
                "log_retention_days": s.log_retention_days,
                "tags": s.tags,
                **({"archive_bucket": archive.bucket} if archive else {}),
            },
        )
        built.cascades["upload-cascade"] = cascade
        built.watched.append(watched_stream(cascade))
    # With the stream cascade, TTL deletes expired sessions and the stream cleans after them: the
    # sweeper only marks finished videos ahead of TTL and removes orphans. Without it, the sweeper
    # deletes expired sessions itself, with the upload system's stuck rule (still "created" an hour
    # after the session's TTL).
    stuck = {
        "status": layout.stuck_status,
        "older_than_seconds": s.stuck_upload_seconds,
        "since_attribute": layout.ttl_attribute,
        "partial_status": layout.partial_status,
    }
    _sweeper(
        s,
        built,
        "upload-sweeper",
        {
            "kind": "sweep",
            "schedule": s.uploads_sweep_schedule,
            **table_target(table),
            "s3": s3,
            **({"delete_expired": False} if stream else {"stuck_uploads": stuck}),
            **({"fan_out": {}} if s.fan_out else {}),
            "orphaned_objects": {
                "prefix": layout.object_prefix,
                "older_than_seconds": s.orphan_age_seconds,
                "id_pattern": layout.key_pattern,
            },
        },
    )


def _private_bucket(s: StackSettings, name: str) -> aws.s3.Bucket:
    """A bucket with public access blocked, protected with the tables (deletion protection)."""
    opts = pulumi.ResourceOptions(protect=s.deletion_protection)
    bucket = aws.s3.Bucket(name, force_destroy=not s.deletion_protection, tags=s.tags, opts=opts)
    aws.s3.BucketPublicAccessBlock(
        f"{name}-public-access",
        bucket=bucket.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
    )
    return bucket


def _archive_bucket(s: StackSettings, built: Built) -> aws.s3.Bucket:
    """A private bucket for expired items' last images (kept as long as the team keeps them)."""
    built.archive_bucket = _private_bucket(s, "expired-archive")
    return built.archive_bucket


def job_claims(s: StackSettings, built: Built) -> None:
    """The support-Lambda summary: TTL leases for job claims and an interruptions audit table."""
    built.tables["active-jobs"] = _table(
        s, "active-jobs", f"active-jobs-{s.environment}", {"hash_key": "projectUserId", "ttl_attribute": "expiresAt"}
    )
    built.tables["interruptions"] = _table(
        s, "interruptions", f"interruptions-{s.environment}", {"hash_key": "messageId", "ttl_attribute": "ttl"}
    )


def actingweb(s: StackSettings, built: Built) -> None:
    """The maintenance guide: ActingWeb's own attributes table (`<AWS_DB_PREFIX>_attributes`), its
    orphaned index entries daily, and pg_cron when configured."""
    table = _table(
        s,
        "attributes",
        f"{s.actingweb_db_prefix}_attributes",
        {"hash_key": "id", "range_key": "bucket_name", "ttl_attribute": "ttl_timestamp"},
        writers_set_shard=False,
    )
    built.tables["attributes"] = table
    _sweeper(
        s,
        built,
        "attribute-index-cleanup",
        {
            "kind": "orphaned-references",
            "schedule": s.actingweb_schedule,
            **table_target(table),
            "references": ACTINGWEB_REFERENCES,
            # One invocation per index of ACTINGWEB_REFERENCES, the shared ledger holding the table's budget.
            **({"fan_out": {}} if s.fan_out else {}),
        },
    )
    if s.postgres is not None:
        pg = s.postgres
        cleanup = PgCronCleanup(
            "attributes-purge",
            {
                "table": "attributes",
                "expiry_column": "ttl_timestamp",
                "schedule": pg.schedule,
                "host": pg.host,
                "port": pg.port,
                "database": pg.database,
                "user": pg.user,
                "password": pg.password,
                "paused": s.paused,
            },
        )
        built.pg_cleanup = cleanup
        # The monitor Lambda reads the password from Secrets Manager, never from its environment.
        secret = aws.secretsmanager.Secret(
            "attributes-db", name_prefix=f"expiry-{s.environment}-attributes-db-", tags=s.tags
        )
        aws.secretsmanager.SecretVersion(
            "attributes-db",
            secret_id=secret.id,
            secret_string=pulumi.Output.json_dumps({"username": pg.user, "password": pg.password}),
        )
        vpc = {"subnet_ids": pg.subnet_ids, "security_group_ids": pg.security_group_ids} if pg.subnet_ids else {}
        monitor = _sweeper(
            s,
            built,
            "attributes-pg-monitor",
            {
                "kind": "pg-monitor",
                "schedule": "rate(1 hour)",
                "table_name": "attributes",
                "postgres": {"host": pg.host, "port": pg.port, "database": pg.database, "secret_arn": secret.arn},
                "purge": {"expiry_column": "ttl_timestamp", "job_name": cleanup.spec.job_name},
                **vpc,
            },
        )
        built.watched[-1] = watched_job(monitor, cleanup)


def build(s: StackSettings) -> Built:
    built = Built()
    for enabled, system in (
        (s.checkpoints, chat_checkpoints),
        (s.uploads, video_uploads),
        (s.job_claims, job_claims),
        (s.actingweb, actingweb),
    ):
        if enabled:
            system(s, built)
    if built.watched:
        built.alarms = CleanupAlarms(
            "cleanup-alarms",
            {
                "jobs": built.watched,
                "table_names": table_names(*built.tables.values()),
                "email_addresses": [s.alert_email],
                "cleanup_errors_per_hour": s.cleanup_errors_per_hour
                if any(m.CLEANUP_ERRORS in kinds.kind(w["kind"]).metrics for w in built.watched)
                else None,
                "oldest_expired_seconds": s.oldest_expired_hours * 3600
                if any("oldest-expired" in kinds.kind(w["kind"]).alarms for w in built.watched)
                else None,
                # Paused jobs do not run: their "did not run" alarm would page for the whole pause.
                **({"disabled_alarms": ["heartbeat"]} if s.paused else {}),
                "tags": s.tags,
            },
        )
    return built
