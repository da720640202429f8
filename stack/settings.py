"""The stack's settings, read from Pulumi config (declared with types and defaults in Pulumi.yaml).
A missing or wrong setting stops the program with a message naming the key."""

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import config as runtime_config

from expiry.components.schedule import check_expression
from expiry.components.scheduled_sweeper import LOG_RETENTION_DAYS
from expiry.components.validation import EMAIL
from expiry.runtime.jobs import fields
from expiry.runtime.jobs.config import KEEP_MARKERS
from expiry.runtime.postgres.spec import CleanupError, check_cron

# How expired sessions' objects are cleaned: from TTL's deletions on the stream (free deletes, no reads)
# or by the sweeper deleting expired sessions itself (sooner than TTL).
CASCADES = ("stream", "sweep")


PROJECT_FILE = Path(__file__).resolve().parent.parent / "Pulumi.yaml"
# Set per stack but not declared in Pulumi.yaml (the engine would demand it of every stack).
UNDECLARED_KEYS = ("postgresPassword",)
RESERVED_TAGS = ("project", "environment")


class SettingError(ValueError):
    """A stack setting that is missing or wrong; the message names the key."""


def check_known_keys(config: pulumi.Config, project_file: Path = PROJECT_FILE) -> None:
    """Refuse a key of the project's namespace that Pulumi.yaml does not declare (a misspelling such as
    expiry:dryrun would otherwise be ignored and the default used), naming the nearest declared key."""
    declared = [*(yaml.safe_load(project_file.read_text()).get("config") or {}), *UNDECLARED_KEYS]
    given = {*runtime_config.CONFIG.get(), *runtime_config.get_config_env()}
    prefix = f"{config.name}:"
    lowered = {key.lower(): key for key in declared}
    for key in sorted(given):
        name = key.removeprefix(prefix)
        if not key.startswith(prefix) or name in declared:
            continue
        nearest = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
        hint = f"; did you mean {prefix}{lowered[nearest[0]]}?" if nearest else ""
        raise SettingError(f"{key}: is not a setting of this project (Pulumi.yaml declares none such){hint}")


@dataclass(frozen=True)
class PostgresSettings:
    host: str
    port: int
    database: str
    user: str
    password: pulumi.Output[str]
    schedule: str
    subnet_ids: list[str]
    security_group_ids: list[str]


@dataclass(frozen=True)
class UploadsLayout:
    """How the upload system stores sessions and objects (by default, the names its application writes)."""

    session_id_attribute: str
    ttl_attribute: str
    object_key_attribute: str
    upload_id_attribute: str
    status_attribute: str
    kept_statuses: list[str]
    stuck_status: str
    partial_status: str
    object_prefix: str
    key_pattern: str
    keep_marker: str
    writers_set_expiry_shard: bool
    cascade: str
    archive_expired: bool


@dataclass(frozen=True)
class StackSettings:
    environment: str
    alert_email: str
    tags: dict[str, str]
    dry_run: bool
    paused: bool
    deletion_protection: bool
    point_in_time_recovery: bool
    expiry_index_shards: int
    log_retention_days: int
    reserve_concurrency: bool
    checkpoints: bool
    uploads: bool
    job_claims: bool
    actingweb: bool
    checkpoints_monitor_schedule: str
    uploads_sweep_schedule: str
    actingweb_schedule: str
    stuck_upload_seconds: int
    orphan_age_seconds: int
    uploads_layout: UploadsLayout
    actingweb_db_prefix: str
    breaker_max_share: float
    allow_mass_deletion: bool
    fan_out: bool
    oldest_expired_hours: int
    cleanup_errors_per_hour: int
    postgres: PostgresSettings | None


class _Reader:
    def __init__(self, config: pulumi.Config) -> None:
        self.config = config

    def key(self, name: str) -> str:
        return f"{self.config.name}:{name}"

    def text(self, name: str) -> str:
        value = self.config.require(name)
        if not value.strip():
            raise SettingError(f"{self.key(name)}: must not be empty")
        return value

    def optional_text(self, name: str) -> str:
        return (self.config.get(name) or "").strip()

    def boolean(self, name: str) -> bool:
        return self.config.require_bool(name)

    def percent(self, name: str) -> float:
        return self.integer(name, 0, 100) / 100

    def pattern(self, name: str, prefix: str) -> str:
        """An owner rule: a regular expression with a group naming the owner, anchored in ``prefix``."""
        value = self.text(name)
        try:
            compiled = re.compile(value)
        except re.error as error:
            raise SettingError(f"{self.key(name)}: is not a regular expression: {error}") from error
        if "id" not in compiled.groupindex:
            raise SettingError(f"{self.key(name)}: needs a group named id, e.g. (?P<id>[^/]+), got {value!r}")
        if not value.startswith("^" + re.escape(prefix)) and not value.startswith("^" + prefix):
            raise SettingError(f"{self.key(name)}: must start with ^ and the object prefix {prefix!r}, got {value!r}")
        return value

    def db_prefix(self, name: str) -> str:
        """A DynamoDB table-name prefix: the table `<prefix>_attributes` must be a valid name."""
        value = self.text(name)
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,244}", value):
            raise SettingError(f"{self.key(name)}: letters, digits, '_', '-' and '.' only (up to 244), got {value!r}")
        return value

    def one_of(self, name: str, allowed: tuple[str, ...]) -> str:
        try:
            return fields.one_of(self.text(name), allowed)
        except fields.FieldError as error:
            raise SettingError(f"{self.key(name)}: {error}") from error

    def schedule(self, name: str) -> str:
        """An EventBridge Scheduler expression, checked now rather than halfway through `pulumi up`."""
        value = self.text(name)
        try:
            return check_expression("stack config", name, value)
        except ValueError as error:
            raise SettingError(f"{self.key(name)}: {str(error).split(': ', 2)[-1]}") from error

    def pg_cron(self, name: str) -> str:
        value = self.text(name)
        try:
            return check_cron(value)
        except CleanupError as error:
            raise SettingError(f"{self.key(name)}: {str(error).split(': ', 1)[-1]}") from error

    def integer(self, name: str, low: int, high: int) -> int:
        value = self.config.require_int(name)
        if not low <= value <= high:
            raise SettingError(f"{self.key(name)}: must be in {low}..{high}, got {value}")
        return value

    def retention(self, name: str) -> int:
        value = self.config.require_int(name)
        if value not in LOG_RETENTION_DAYS:
            raise SettingError(
                f"{self.key(name)}: must be a CloudWatch retention, one of {LOG_RETENTION_DAYS}, got {value}"
            )
        return value

    def strings(self, name: str) -> list[str]:
        raw: Any = self.config.get_object(name) or []
        if not isinstance(raw, list) or not all(isinstance(item, str) and item for item in raw):
            raise SettingError(f"{self.key(name)}: must be a list of strings, got {raw!r}")
        return raw

    def tags(self, name: str) -> dict[str, str]:
        raw: Any = self.config.get_object(name) or []
        if not isinstance(raw, list) or not all(isinstance(item, str) and "=" in item for item in raw):
            raise SettingError(f'{self.key(name)}: must be a list of "key=value" strings, got {raw!r}')
        tags: dict[str, str] = {}
        for item in raw:
            key, value = item.split("=", 1)
            if not key.strip() or key in tags or key in RESERVED_TAGS:
                why = (
                    "sets the reserved tag"
                    if key in RESERVED_TAGS
                    else "repeats"
                    if key in tags
                    else "has an empty key"
                )
                raise SettingError(f"{self.key(name)}: {item!r} {why} (project and environment are set by the stack)")
            tags[key] = value
        return tags


def uploads_layout(r: _Reader) -> UploadsLayout:
    prefix = r.text("uploadsObjectPrefix")
    layout = UploadsLayout(
        session_id_attribute=r.text("uploadsSessionIdAttribute"),
        ttl_attribute=r.text("uploadsTtlAttribute"),
        object_key_attribute=r.text("uploadsObjectKeyAttribute"),
        upload_id_attribute=r.text("uploadsUploadIdAttribute"),
        status_attribute=r.text("uploadsStatusAttribute"),
        kept_statuses=r.strings("uploadsKeptStatuses"),
        stuck_status=r.text("uploadsStuckStatus"),
        partial_status=r.text("uploadsPartialStatus"),
        object_prefix=prefix,
        key_pattern=r.pattern("uploadsKeyPattern", prefix),
        keep_marker=r.one_of("uploadsKeepMarker", KEEP_MARKERS),
        writers_set_expiry_shard=r.boolean("uploadsWritersSetExpiryShard"),
        cascade=r.one_of("uploadsCascade", CASCADES),
        archive_expired=r.boolean("uploadsArchiveExpired"),
    )
    if layout.stuck_status in layout.kept_statuses or layout.partial_status == layout.stuck_status:
        raise SettingError(
            f"{r.key('uploadsStuckStatus')}: must differ from uploadsPartialStatus and every uploadsKeptStatuses"
        )
    if layout.kept_statuses and layout.keep_marker == "none":
        raise SettingError(
            f"{r.key('uploadsKeepMarker')}: must be tag while uploadsKeptStatuses is set, or kept objects "
            "would be deleted as orphans once their sessions are gone"
        )
    return layout


def fan_out(r: _Reader) -> bool:
    """expiry:fanOut: the upload sweeper over its expiry-index shards and the ActingWeb job over its
    indexes; refused where the upload sweeper would have no expiry index to fan out over, or where
    neither job is built."""
    wanted = r.boolean("fanOut")
    uploads = r.boolean("uploadsEnabled")
    if (
        wanted
        and uploads
        and not (r.integer("expiryIndexShards", 0, 100) and r.boolean("uploadsWritersSetExpiryShard"))
    ):
        raise SettingError(
            f"{r.key('fanOut')}: fans the upload sweeper out over its expiry-index shards, so it needs "
            "expiryIndexShards > 0 and uploadsWritersSetExpiryShard true (or uploadsEnabled false)"
        )
    if wanted and not uploads and not r.boolean("actingwebEnabled"):
        raise SettingError(
            f"{r.key('fanOut')}: fans out the upload sweeper and the ActingWeb job, but uploadsEnabled and "
            "actingwebEnabled are both false"
        )
    return wanted


def read_settings(config: pulumi.Config) -> StackSettings:
    """Every setting __main__.py uses, checked."""
    check_known_keys(config)
    r = _Reader(config)
    environment = r.text("environment")
    if not environment.replace("-", "").isalnum():
        raise SettingError(f"{r.key('environment')}: letters, digits and '-' only, got {environment!r}")
    alert_email = r.text("alertEmail")
    if not EMAIL.match(alert_email):
        raise SettingError(
            f"{r.key('alertEmail')}: must be an e-mail address (one, name@example.com), got {alert_email!r}"
        )
    postgres = None
    if r.optional_text("postgresHost"):
        postgres = PostgresSettings(
            host=r.text("postgresHost"),
            port=r.integer("postgresPort", 1, 65535),
            database=r.text("postgresDatabase"),
            user=r.text("postgresUser"),
            password=config.require_secret("postgresPassword"),
            schedule=r.pg_cron("pgCronSchedule"),
            subnet_ids=r.strings("postgresSubnetIds"),
            security_group_ids=r.strings("postgresSecurityGroupIds"),
        )
        if bool(postgres.subnet_ids) != bool(postgres.security_group_ids):
            raise SettingError(
                f"{r.key('postgresSubnetIds')}: give postgresSubnetIds and postgresSecurityGroupIds together"
            )
    return StackSettings(
        environment=environment,
        alert_email=alert_email,
        tags={"project": "expiry", "environment": environment, **r.tags("tags")},
        dry_run=r.boolean("dryRun"),
        paused=r.boolean("paused"),
        deletion_protection=r.boolean("deletionProtection"),
        point_in_time_recovery=r.boolean("pointInTimeRecovery"),
        expiry_index_shards=r.integer("expiryIndexShards", 0, 100),
        log_retention_days=r.retention("logRetentionDays"),
        reserve_concurrency=r.boolean("reserveConcurrency"),
        checkpoints=r.boolean("checkpointsEnabled"),
        uploads=r.boolean("uploadsEnabled"),
        job_claims=r.boolean("jobClaimsEnabled"),
        actingweb=r.boolean("actingwebEnabled"),
        checkpoints_monitor_schedule=r.schedule("checkpointsMonitorSchedule"),
        uploads_sweep_schedule=r.schedule("uploadsSweepSchedule"),
        actingweb_schedule=r.schedule("actingwebSchedule"),
        stuck_upload_seconds=r.integer("stuckUploadSeconds", 60, 7 * 86400),
        orphan_age_seconds=r.integer("orphanAgeSeconds", 3600, 365 * 86400),
        uploads_layout=uploads_layout(r),
        actingweb_db_prefix=r.db_prefix("actingwebDbPrefix"),
        breaker_max_share=r.percent("breakerMaxSharePercent"),
        allow_mass_deletion=r.boolean("allowMassDeletion"),
        fan_out=fan_out(r),
        oldest_expired_hours=r.integer("oldestExpiredAlarmHours", 1, 24 * 30),
        cleanup_errors_per_hour=r.integer("cleanupErrorsPerHour", 0, 100_000),
        postgres=postgres,
    )
