"""The cleanup infrastructure of the systems Expiry was designed from, built from stack settings."""

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from components.cleanup_alarms import CleanupAlarms, table_names, watched_job
from components.pg_cron_cleanup import PgCronCleanup
from components.scheduled_sweeper import ScheduledSweeper, table_target
from components.stack_settings import StackSettings
from components.ttl_table import TtlTable


@dataclass
class Built:
    """What the program exports."""

    tables: dict[str, TtlTable] = field(default_factory=dict)
    sweepers: dict[str, ScheduledSweeper] = field(default_factory=dict)
    watched: list[dict[str, Any]] = field(default_factory=list)
    bucket: aws.s3.Bucket | None = None
    pg_cleanup: PgCronCleanup | None = None
    alarms: CleanupAlarms | None = None


def _table(s: StackSettings, name: str, physical: str, args: dict[str, Any]) -> TtlTable:
    index = {"expiry_index": True, "expiry_index_shards": s.expiry_index_shards} if s.expiry_index_shards else {}
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
            "log_retention_days": s.log_retention_days,
            "reserve_concurrency": s.reserve_concurrency,
            "tags": s.tags,
            **args,
        },
    )
    built.sweepers[name] = sweeper
    built.watched.append(watched_job(sweeper))
    return sweeper


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
    """The cleanup-Lambda README: upload sessions, their bucket, and a sweeper every 6 hours."""
    table = _table(
        s,
        "upload-sessions",
        f"upload-sessions-{s.environment}",
        {"hash_key": "uploadSessionId", "ttl_attribute": "ttl"},
    )
    built.tables["upload-sessions"] = table
    opts = pulumi.ResourceOptions(protect=s.deletion_protection)
    bucket = aws.s3.Bucket("uploads", force_destroy=not s.deletion_protection, tags=s.tags, opts=opts)
    aws.s3.BucketPublicAccessBlock(
        "uploads-public-access",
        bucket=bucket.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
    )
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
    _sweeper(
        s,
        built,
        "upload-sweeper",
        {
            "kind": "sweep",
            "schedule": s.uploads_sweep_schedule,
            **table_target(table),
            "s3": {
                "bucket": bucket.bucket,
                "key_attribute": "s3Key",
                "upload_id_attribute": "uploadId",
                "status_attribute": "status",
                "keep_statuses": ["completed"],
                "object_prefix": "uploads/",
            },
            "stuck_uploads": {
                "status": "created",
                "older_than_seconds": s.stuck_upload_seconds,
                "partial_status": "partial",
            },
            "orphaned_objects": {
                "prefix": "uploads/",
                "older_than_seconds": s.orphan_age_seconds,
                "id_pattern": r"^uploads/(?P<id>[^/]+)/",
            },
        },
    )


def job_claims(s: StackSettings, built: Built) -> None:
    """The support-Lambda summary: TTL leases for job claims and an interruptions audit table."""
    built.tables["active-jobs"] = _table(
        s, "active-jobs", f"active-jobs-{s.environment}", {"hash_key": "projectUserId", "ttl_attribute": "expiresAt"}
    )
    built.tables["interruptions"] = _table(
        s, "interruptions", f"interruptions-{s.environment}", {"hash_key": "messageId", "ttl_attribute": "ttl"}
    )


def actingweb(s: StackSettings, built: Built) -> None:
    """The maintenance guide: attributes, their orphaned index entries daily, and pg_cron when configured."""
    table = _table(
        s,
        "attributes",
        f"actingweb-attributes-{s.environment}",
        {"hash_key": "id", "range_key": "bucket_name", "ttl_attribute": "ttl_timestamp"},
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
            "references": {
                "select_attribute": "bucket_name",
                "select_prefix": "_index",
                "reference_attribute": "actor_id",
                "target_key_attribute": "id",
            },
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
                if any(w["kind"] in ("sweep", "orphaned-references") for w in built.watched)
                else None,
                "oldest_expired_seconds": s.oldest_expired_hours * 3600
                if any(w["kind"] == "ttl-monitor" for w in built.watched)
                else None,
                "tags": s.tags,
            },
        )
    return built
