"""Job settings: what a component writes into the Lambda's environment and what a handler reads
back at cold start. One parser serves both, so a bad setting fails at `pulumi up`, not at 3 a.m."""

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from runtime.metrics import DEFAULT_NAMESPACE

ENV_VAR = "EXPIRY_JOB"
KIND_TTL_MONITOR = "ttl-monitor"
KIND_SWEEP = "sweep"
KIND_ORPHANED_REFERENCES = "orphaned-references"
KIND_PG_PURGE = "pg-purge"
KIND_PG_MONITOR = "pg-monitor"
POSTGRES_KINDS = (KIND_PG_PURGE, KIND_PG_MONITOR)
HANDLERS = {
    KIND_TTL_MONITOR: "runtime.handlers.ttl_monitor.handler",
    KIND_SWEEP: "runtime.handlers.sweep.handler",
    KIND_ORPHANED_REFERENCES: "runtime.handlers.orphaned_references.handler",
    KIND_PG_PURGE: "runtime.handlers.pg_purge.handler",
    KIND_PG_MONITOR: "runtime.handlers.pg_monitor.handler",
}
# Settings of a PostgreSQL purge (runtime.pg_cleanup.PurgeSpec, which checks them: it needs psycopg,
# which DynamoDB handlers do not ship with).
PURGE_SETTINGS = (
    "job_name",
    "table_schema",
    "schema",
    "expiry_column",
    "batch_size",
    "max_runtime_seconds",
    "extra_column",
    "extra_value",
)
HOOK_MODULE = "expiry_hooks"
MAX_SEGMENTS = 64
MAX_WORKERS = 64


class JobConfigError(ValueError):
    """A job setting that is missing or wrong; the message names it."""


@dataclass(frozen=True)
class ExpiryIndex:
    name: str
    shards: int
    shard_attribute: str


@dataclass(frozen=True)
class S3Cascade:
    bucket: str
    key_attribute: str
    upload_id_attribute: str | None
    status_attribute: str | None
    keep_statuses: tuple[str, ...]


@dataclass(frozen=True)
class StuckUploads:
    status: str
    older_than_seconds: int
    created_attribute: str
    partial_status: str
    aborted_status: str


@dataclass(frozen=True)
class OrphanedObjects:
    prefix: str
    older_than_seconds: int
    id_pattern: re.Pattern[str]


@dataclass(frozen=True)
class References:
    select_attribute: str
    select_prefix: str | None
    reference_attribute: str
    target_table: str
    target_key_attribute: str


@dataclass(frozen=True)
class Postgres:
    """Where the database is; the password comes from a Secrets Manager secret, never the environment."""

    host: str
    port: int
    database: str
    secret_arn: str
    user: str | None
    lookback_seconds: int


@dataclass(frozen=True)
class Job:
    kind: str
    name: str
    table: str
    namespace: str
    key_attributes: tuple[str, ...]
    ttl_attribute: str
    dry_run: bool
    max_items: int
    workers: int
    scan_segments: int
    safety_margin_seconds: int
    sample_size: int
    page_size: int | None
    expiry_index: ExpiryIndex | None
    s3: S3Cascade | None
    stuck_uploads: StuckUploads | None
    orphaned_objects: OrphanedObjects | None
    references: References | None
    hook: bool
    postgres: "Postgres | None" = None
    purge: dict[str, Any] | None = None

    def projection(self, *extra: str | None) -> list[str]:
        """Attribute names a read needs: the keys, the TTL and ``extra``, once each."""
        names = [*self.key_attributes, self.ttl_attribute, *extra]
        return list(dict.fromkeys(n for n in names if n))


class _Reader:
    """Typed access to one mapping of settings, with errors naming the field."""

    def __init__(self, raw: Any, path: str, source: str) -> None:
        self.path, self.source = path, source
        if not isinstance(raw, Mapping):
            self.fail("", f"must be an object, got {raw!r}")
        self.raw = raw

    def fail(self, field: str, message: str) -> NoReturn:
        name = ".".join(p for p in (self.path, field) if p)
        raise JobConfigError(f"{self.source}: {name}: {message}" if name else f"{self.source}: {message}")

    def check_known(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.raw) - allowed)
        if unknown:
            self.fail("", f"unknown settings {unknown}; allowed: {sorted(allowed)}")

    def text(self, field: str, default: str | None = None, required: bool = True) -> str:
        value = self.raw.get(field, default)
        if value is None and not required:
            return None  # type: ignore[return-value]
        if not isinstance(value, str) or not value:
            self.fail(field, f"must be a non-empty string, got {value!r}")
        return value

    def integer(self, field: str, default: int, low: int, high: int) -> int:
        value = self.raw.get(field, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(field, f"must be an integer in {low}..{high}, got {value!r}")
        return value

    def boolean(self, field: str, default: bool) -> bool:
        value = self.raw.get(field, default)
        if not isinstance(value, bool):
            self.fail(field, f"must be true or false, got {value!r}")
        return value

    def texts(self, field: str) -> tuple[str, ...]:
        value = self.raw.get(field, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(field, f"must be a list of non-empty strings, got {value!r}")
        return tuple(value)

    def section(self, field: str) -> "_Reader | None":
        value = self.raw.get(field)
        return None if value is None else _Reader(value, f"{self.path}.{field}" if self.path else field, self.source)


def _expiry_index(r: _Reader | None) -> ExpiryIndex | None:
    if r is None:
        return None
    r.check_known({"name", "shards", "shard_attribute"})
    return ExpiryIndex(r.text("name"), r.integer("shards", 10, 1, 100), r.text("shard_attribute"))


def _s3(r: _Reader | None) -> S3Cascade | None:
    if r is None:
        return None
    r.check_known({"bucket", "key_attribute", "upload_id_attribute", "status_attribute", "keep_statuses"})
    keep = r.texts("keep_statuses")
    status_attribute = r.text("status_attribute", required=False)
    if keep and not status_attribute:
        r.fail("keep_statuses", "needs status_attribute")
    return S3Cascade(
        bucket=r.text("bucket"),
        key_attribute=r.text("key_attribute"),
        upload_id_attribute=r.text("upload_id_attribute", required=False),
        status_attribute=status_attribute,
        keep_statuses=keep,
    )


def _stuck(r: _Reader | None) -> StuckUploads | None:
    if r is None:
        return None
    r.check_known({"status", "older_than_seconds", "created_attribute", "partial_status", "aborted_status"})
    stuck = StuckUploads(
        status=r.text("status"),
        older_than_seconds=r.integer("older_than_seconds", 3600, 60, 366 * 86400),
        created_attribute=r.text("created_attribute", "createdAt"),
        partial_status=r.text("partial_status", "partial"),
        aborted_status=r.text("aborted_status", "aborted"),
    )
    if stuck.status in (stuck.partial_status, stuck.aborted_status):
        r.fail("status", "must differ from partial_status and aborted_status, or items would be picked up again")
    return stuck


def _orphans(r: _Reader | None) -> OrphanedObjects | None:
    if r is None:
        return None
    r.check_known({"prefix", "older_than_seconds", "id_pattern"})
    pattern_text = r.text("id_pattern")
    try:
        pattern = re.compile(pattern_text)
    except re.error as error:
        r.fail("id_pattern", f"is not a regular expression: {error}")
    if pattern.groups < 1:
        r.fail("id_pattern", "needs a capturing group (or a group named id) that captures the item's id")
    prefix = r.raw.get("prefix", "")
    if not isinstance(prefix, str):
        r.fail("prefix", f"must be a string, got {prefix!r}")
    return OrphanedObjects(
        prefix=prefix,
        older_than_seconds=r.integer("older_than_seconds", 86400, 3600, 3650 * 86400),
        id_pattern=pattern,
    )


def _references(r: _Reader | None, table: str) -> References | None:
    if r is None:
        return None
    r.check_known({"select_attribute", "select_prefix", "reference_attribute", "target_table", "target_key_attribute"})
    return References(
        select_attribute=r.text("select_attribute"),
        select_prefix=r.text("select_prefix", required=False),
        reference_attribute=r.text("reference_attribute"),
        target_table=r.text("target_table", table),
        target_key_attribute=r.text("target_key_attribute"),
    )


COMMON = {
    "kind",
    "name",
    "table",
    "namespace",
    "key_attributes",
    "ttl_attribute",
    "dry_run",
    "max_items",
    "workers",
    "scan_segments",
    "safety_margin_seconds",
    "sample_size",
    "page_size",
    "expiry_index",
    "hook",
}
SECTIONS = {
    KIND_TTL_MONITOR: set(),
    KIND_SWEEP: {"s3", "stuck_uploads", "orphaned_objects"},
    KIND_ORPHANED_REFERENCES: {"references"},
    KIND_PG_PURGE: {"postgres", "purge"},
    KIND_PG_MONITOR: {"postgres", "purge"},
}


def _postgres(r: _Reader | None) -> Postgres | None:
    if r is None:
        return None
    r.check_known({"host", "port", "database", "secret_arn", "user", "lookback_seconds"})
    return Postgres(
        host=r.text("host"),
        port=r.integer("port", 5432, 1, 65535),
        database=r.text("database"),
        secret_arn=r.text("secret_arn"),
        user=r.text("user", required=False),
        lookback_seconds=r.integer("lookback_seconds", 3600, 60, 30 * 86400),
    )


def _purge(r: _Reader | None) -> dict[str, Any] | None:
    if r is None:
        return None
    r.check_known(set(PURGE_SETTINGS))
    r.text("expiry_column")
    return dict(r.raw)


def parse_job(raw: Any, source: str = ENV_VAR) -> Job:
    """Validate job settings; raise JobConfigError naming ``source`` and the field."""
    r = _Reader(raw, "", source)
    kind = r.raw.get("kind")
    if kind not in SECTIONS:
        r.fail("kind", f"must be one of {', '.join(SECTIONS)}, got {kind!r}")
    r.check_known(COMMON | SECTIONS[kind])
    key_attributes = r.texts("key_attributes")
    if kind in POSTGRES_KINDS:
        for section in ("postgres", "purge"):
            if r.raw.get(section) is None:
                r.fail(section, f"is required for a {kind} job")
    elif not 1 <= len(key_attributes) <= 2:
        r.fail("key_attributes", f"must name the table's hash key and optional range key, got {list(key_attributes)}")
    table = r.text("table")
    job = Job(
        kind=kind,
        name=r.text("name"),
        table=table,
        namespace=r.text("namespace", DEFAULT_NAMESPACE),
        key_attributes=key_attributes,
        ttl_attribute=r.text("ttl_attribute", "expires_at"),
        dry_run=r.boolean("dry_run", False),
        max_items=r.integer("max_items", 100_000, 1, 10_000_000),
        workers=r.integer("workers", 8, 1, MAX_WORKERS),
        scan_segments=r.integer("scan_segments", 1, 1, MAX_SEGMENTS),
        safety_margin_seconds=r.integer("safety_margin_seconds", 15, 1, 300),
        sample_size=r.integer("sample_size", 10, 0, 10),
        page_size=r.integer("page_size", 0, 0, 10_000) or None,
        expiry_index=_expiry_index(r.section("expiry_index")),
        s3=_s3(r.section("s3")),
        stuck_uploads=_stuck(r.section("stuck_uploads")),
        orphaned_objects=_orphans(r.section("orphaned_objects")),
        references=_references(r.section("references"), table),
        hook=r.boolean("hook", False),
        postgres=_postgres(r.section("postgres")),
        purge=_purge(r.section("purge")),
    )
    if (job.stuck_uploads or job.orphaned_objects) and not job.s3:
        field = "stuck_uploads" if job.stuck_uploads else "orphaned_objects"
        r.fail(field, "needs the s3 section (bucket and key_attribute)")
    if job.stuck_uploads and not (job.s3 and job.s3.upload_id_attribute and job.s3.status_attribute):
        r.fail("stuck_uploads", "needs s3.upload_id_attribute and s3.status_attribute")
    if job.orphaned_objects and len(job.key_attributes) != 1:
        r.fail("orphaned_objects", "needs a table keyed by its hash key alone (the id taken from the object key)")
    if kind == KIND_ORPHANED_REFERENCES and job.references is None:
        r.fail("references", "is required for an orphaned-references job")
    return job


def job_from_environment(environ: Mapping[str, str]) -> Job:
    """The job a handler runs, from its environment; raise JobConfigError naming the variable."""
    text = environ.get(ENV_VAR)
    if not text:
        raise JobConfigError(f"{ENV_VAR}: is not set; the component that deploys the function sets it")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise JobConfigError(f"{ENV_VAR}: is not valid JSON: {error}") from error
    return parse_job(raw)
