"""Job settings: what a component writes into the Lambda's environment and what a handler reads
back at cold start. One parser serves both, so a bad setting fails at `pulumi up`, not at 3 a.m.

The settings' keys are the component args' own names and nesting (ScheduledSweeperArgs,
TtlStreamCascadeArgs); the Job keeps its attribute names. Where the two differ, the parser maps:

    job_name                                  -> Job.name
    table_name                                -> Job.table
    expiry_index_name, expiry_index_shards,
      expiry_shard_attribute, only_shards     -> Job.expiry_index (.name, .shards, .shard_attribute, .only_shards)
    references.target_table_name              -> Job.references.target_table
    budget_table_name                         -> Job.breaker.budget_table
    hooks_path (the hook file, bundled)       -> Job.hook (True)
    archive_bucket, archive_prefix            -> Job.archive (.bucket, .prefix)

Settings written by 0.3 (RENAMED_0_3) are still read, each renamed key with a warning, for one release."""

import json
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from expiry.runtime import kinds
from expiry.runtime.jobs import fields
from expiry.runtime.jobs.metrics import DEFAULT_NAMESPACE
from expiry.runtime.kinds import (
    names,
    orphaned_references,
    pg_monitor,
    pg_purge,
    stream_cascade,
    sweep,
    ttl_monitor,
)

ENV_VAR = "EXPIRY_JOB"
T = TypeVar("T")
KIND_TTL_MONITOR = ttl_monitor.KIND.name
KIND_SWEEP = sweep.KIND.name
KIND_ORPHANED_REFERENCES = orphaned_references.KIND.name
KIND_PG_PURGE = pg_purge.KIND.name
KIND_PG_MONITOR = pg_monitor.KIND.name
KIND_STREAM_CASCADE = stream_cascade.KIND.name
POSTGRES_KINDS = names(postgres=True)
# Settings of a PostgreSQL purge, which runtime/postgres/spec.py (PurgeSpec) checks.
PURGE_SETTINGS = (
    "job_name",
    "table_schema",
    "schema",
    "expiry_column",
    "expiry_expression",
    "batch_size",
    "max_runtime_seconds",
    "extra_column",
    "extra_value",
    "target_batch_ms",
    "max_batch_size",
    "archive",
    "archive_days",
    "mode",
)
HOOK_MODULE = "expiry_hooks"
# A job's name is a metric dimension and part of alarm names (255 characters in all).
JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
# CloudWatch namespaces: 1..255 of these characters; AWS/ is reserved for AWS's own metrics.
NAMESPACE = re.compile(r"^[A-Za-z0-9_./#: -]{1,255}$")
MAX_SEGMENTS = 64
MAX_WORKERS = 64
# Deletions in flight while the calls wait on the network: at 10-50 ms a round trip, 64 keep one vCPU
# busy (about 1 ms of botocore CPU per call); see README, ScheduledSweeper's Benchmark.
SWEEPING_WORKERS = 64
SWEEPING_KINDS = names(sweeping=True)  # jobs making one DynamoDB call per deletion
# With an expiry index, items of one random Scan segment checked per run for expired items the index
# cannot see (written without the shard attribute): on unless a job turns it off with 0.
UNINDEXED_CHECK_ITEMS = 10_000
MAX_WINDOW_SECONDS = 7 * 86400  # a breaker's window: CloudWatch's longest alarm window, a weekly schedule


class JobConfigError(ValueError):
    """A job setting that is missing or wrong; the message names it."""


class SettingsDeprecationWarning(DeprecationWarning):
    """Job settings written by Expiry 0.3: read for one more release; the message names the new key."""


# Keys of 0.3's settings (dotted: within a section) -> the key now; read for one release (0.4), then refused.
RENAMED_0_3 = {
    "name": "job_name",
    "table": "table_name",
    "expiry_index.name": "expiry_index_name",
    "expiry_index.shards": "expiry_index_shards",
    "expiry_index.shard_attribute": "expiry_shard_attribute",
    "expiry_index.only_shards": "only_shards",
    "references.target_table": "references.target_table_name",
    "breaker.budget_table": "budget_table_name",
    "archive.bucket": "archive_bucket",
    "archive.prefix": "archive_prefix",
    "hook": "hooks_path",
}
# 0.3's sections whose every key moved to the top level.
FLATTENED_0_3 = ("expiry_index", "archive")


@dataclass(frozen=True)
class ExpiryIndex:
    name: str
    shards: int
    shard_attribute: str
    only_shards: tuple[int, ...] = ()
    """The shards this job reads (empty: all of them); the others are other invocations' work."""

    def shard_numbers(self) -> tuple[int, ...]:
        return self.only_shards or tuple(range(self.shards))


def shard_subset(value: Any, allowed: tuple[int, ...]) -> tuple[int, ...] | None:
    """``value`` as distinct shard numbers, all of them in ``allowed``; None when it is not."""
    if not isinstance(value, list) or not value:
        return None
    numbers = [int(n) if isinstance(n, float) and n.is_integer() else n for n in value]  # 3.0 from other languages
    if any(isinstance(n, bool) or not isinstance(n, int) or n not in allowed for n in numbers):
        return None
    return tuple(sorted(set(numbers)))


KEEP_MARKERS = ("tag", "none")


@dataclass(frozen=True)
class S3Cascade:
    """The object and upload an item points to. An object whose item ends in a kept status is
    marked (``keep_marker`` "tag": an object tag) so that no later pass takes it for an orphan;
    items in a kept status that expire within ``mark_ahead_seconds`` are marked while still alive."""

    bucket: str
    key_attribute: str
    upload_id_attribute: str | None
    status_attribute: str | None
    keep_statuses: tuple[str, ...]
    keep_marker: str = "tag"
    mark_ahead_seconds: int = 0
    owner_index: str | None = None
    """A global secondary index whose hash key is ``key_attribute``: how the ownership rule finds the
    items that name an object (without one, a consistent Scan filtered on the key attribute)."""


@dataclass(frozen=True)
class StuckUploads:
    """An item in ``status`` whose ``since_attribute`` is ``older_than_seconds`` old is stuck: its
    upload is aborted when no part arrived (and the item deleted), else it is set to ``partial_status``."""

    status: str
    older_than_seconds: int
    since_attribute: str
    partial_status: str


@dataclass(frozen=True)
class Breaker:
    """Refuses a run that would delete more than ``max_share`` of what it examined or more than
    ``max_count`` things; runs deleting ``ignore_below`` things or fewer are never refused.

    With ``budget_table`` (a ledger, runtime.dynamodb.deletion_budget) the limits hold for the whole
    table within a window of ``window_seconds``, however many runs, shards and retries share it;
    without one, each run is judged alone. ``max_deletes_per_second`` limits the pace of item
    deletions on the table (runtime.dynamodb.rate_limit): per run without a ledger, for all the
    table's runs together with one."""

    max_share: float = 0.5
    max_count: int | None = None
    ignore_below: int = 10
    allow_mass_deletion: bool = False
    budget_table: str | None = None
    window_seconds: int = 3600
    max_deletes_per_second: int | None = None


# An S3 Inventory configuration's id; bucket names as S3 allows them today.
INVENTORY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def inventory_reports_prefix(destination_prefix: str, source_bucket: str, inventory_id: str) -> str:
    """Where S3 publishes an inventory configuration's reports in the destination bucket:
    ``<destination-prefix>/<source-bucket>/<config-ID>/`` (AWS, "Locating your inventory list")."""
    return "/".join(part for part in (destination_prefix, source_bucket, inventory_id) if part) + "/"


@dataclass(frozen=True)
class Inventory:
    """The daily S3 Inventory report the orphan pass reads instead of listing the bucket; a report
    older than ``max_age_seconds`` (or none) and the pass lists the bucket."""

    destination_bucket: str
    destination_prefix: str
    inventory_id: str
    max_age_seconds: int

    def reports_prefix(self, source_bucket: str) -> str:
        return inventory_reports_prefix(self.destination_prefix, source_bucket, self.inventory_id)


@dataclass(frozen=True)
class OrphanedObjects:
    prefix: str
    older_than_seconds: int
    id_pattern: re.Pattern[str]
    inventory: Inventory | None = None

    def owner(self, key: str) -> str | None:
        """The owner id the rule reads from a whole object key (group `id`, else the first); None when
        the pattern does not match the whole key (anchored: a key it half-matches is never an orphan)."""
        match = self.id_pattern.fullmatch(key)
        if not match:
            return None
        return match.group("id") if "id" in self.id_pattern.groupindex else match.group(1)


OWNER_FORMATS = ("json", "text")
TEMPLATE_FIELDS = ("{owner}", "{token}")


@dataclass(frozen=True)
class IndexLayout:
    """Entries whose range key starts with ``range_prefix``; the rest of it is the ``{token}``.
    ``target`` is the key of the item an entry points at, as templates of ``{owner}`` and ``{token}``."""

    range_prefix: str
    target: tuple[str, ...]


@dataclass(frozen=True)
class References:
    """Index entries under one hash key value, each pointing at an item of ``target_table``. An entry
    whose target is gone is an orphan, unless it is in its TTL grace: an entry meant to outlive its
    target by ``grace_seconds`` (ttl - grace <= now) or already expired is left to TTL."""

    hash_value: str
    indexes: tuple[IndexLayout, ...]
    owner_attribute: str
    owner_format: str
    grace_seconds: int
    target_table: str
    target_key_attributes: tuple[str, ...]


@dataclass(frozen=True)
class Archive:
    """Where expired items' last images go: gzip JSON lines under ``prefix``dt=YYYY-MM-DD/."""

    bucket: str
    prefix: str


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
    breaker: Breaker = Breaker()
    delete_expired: bool = True
    plan_sample_size: int = 20
    unindexed_check_items: int = 0
    postgres: "Postgres | None" = None
    archive: Archive | None = None
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

    def checked(self, field: str, check: Callable[..., T], value: Any, *limits: Any) -> T:
        """``check(value, *limits)`` (a check of expiry.runtime.jobs.fields), its error naming the field."""
        try:
            return check(value, *limits)
        except fields.FieldError as error:
            self.fail(field, str(error))

    def text(self, field: str, default: str | None = None, required: bool = True) -> str:
        value = self.raw.get(field, default)
        if value is None and not required:
            return None  # type: ignore[return-value]
        return self.checked(field, fields.text, value)

    def integer(self, field: str, default: int, low: int, high: int) -> int:
        return self.checked(field, fields.integer, self.raw.get(field, default), low, high)

    def number(self, field: str, default: float, low: float, high: float) -> float:
        return self.checked(field, fields.number, self.raw.get(field, default), low, high)

    def boolean(self, field: str, default: bool) -> bool:
        return self.checked(field, fields.boolean, self.raw.get(field, default))

    def texts(self, field: str) -> tuple[str, ...]:
        return self.checked(field, fields.texts, self.raw.get(field, []))

    def one_of(self, field: str, default: str, allowed: tuple[str, ...]) -> str:
        return self.checked(field, fields.one_of, self.raw.get(field, default), allowed)

    def matching(self, field: str, default: str, pattern: re.Pattern[str], allowed: str) -> str:
        value = self.text(field, default)
        if not pattern.match(value):
            self.fail(field, f"must be {allowed}, got {value!r}")
        return value

    def section(self, field: str) -> "_Reader | None":
        value = self.raw.get(field)
        return None if value is None else _Reader(value, f"{self.path}.{field}" if self.path else field, self.source)


INDEX_SETTINGS = ("expiry_index_shards", "expiry_shard_attribute", "only_shards")


def _expiry_index(r: _Reader) -> ExpiryIndex | None:
    if "expiry_index_name" not in r.raw:
        for field in INDEX_SETTINGS:
            if field in r.raw:
                r.fail(field, "needs expiry_index_name")
        return None
    shards = r.integer("expiry_index_shards", 10, 1, 100)
    only = r.raw.get("only_shards")
    subset = () if only is None else shard_subset(only, tuple(range(shards)))
    if subset is None:
        r.fail("only_shards", f"must be a non-empty list of shard numbers 0..{shards - 1}, got {only!r}")
    return ExpiryIndex(r.text("expiry_index_name"), shards, r.text("expiry_shard_attribute"), subset or ())


def _s3(r: _Reader | None) -> S3Cascade | None:
    if r is None:
        return None
    r.check_known(
        {
            "bucket",
            "key_attribute",
            "upload_id_attribute",
            "status_attribute",
            "keep_statuses",
            "keep_marker",
            "mark_ahead_seconds",
            "owner_index",
        }
    )
    keep = r.texts("keep_statuses")
    status_attribute = r.text("status_attribute", required=False)
    if keep and not status_attribute:
        r.fail("keep_statuses", "needs status_attribute")
    marker = r.one_of("keep_marker", "tag", KEEP_MARKERS)
    return S3Cascade(
        bucket=r.text("bucket"),
        key_attribute=r.text("key_attribute"),
        upload_id_attribute=r.text("upload_id_attribute", required=False),
        status_attribute=status_attribute,
        keep_statuses=keep,
        keep_marker=marker,
        mark_ahead_seconds=r.integer("mark_ahead_seconds", 0, 0, 366 * 86400),
        owner_index=r.text("owner_index", required=False),
    )


def _stuck(r: _Reader | None, ttl_attribute: str) -> StuckUploads | None:
    if r is None:
        return None
    r.check_known({"status", "older_than_seconds", "since_attribute", "partial_status"})
    stuck = StuckUploads(
        status=r.text("status"),
        older_than_seconds=r.integer("older_than_seconds", 3600, 60, 366 * 86400),
        since_attribute=r.text("since_attribute", ttl_attribute),
        partial_status=r.text("partial_status", "partial"),
    )
    if stuck.status == stuck.partial_status:
        r.fail("status", "must differ from partial_status, or items would be picked up again")
    return stuck


def _breaker(r: _Reader | None, budget_table: str | None) -> Breaker:
    """The breaker section; ``budget_table`` is the top-level budget_table_name (its ledger)."""
    if r is None:
        return Breaker(budget_table=budget_table)
    r.check_known(
        {
            "max_share",
            "max_count",
            "ignore_below",
            "allow_mass_deletion",
            "window_seconds",
            "max_deletes_per_second",
        }
    )
    max_count = r.raw.get("max_count")
    rate = r.raw.get("max_deletes_per_second")
    if "window_seconds" in r.raw and budget_table is None:
        r.fail("window_seconds", "needs budget_table_name (without a ledger, each run is judged alone)")
    return Breaker(
        max_share=r.number("max_share", 0.5, 0.0, 1.0),
        max_count=None if max_count is None else r.integer("max_count", 0, 0, 100_000_000),
        ignore_below=r.integer("ignore_below", 10, 0, 1_000_000),
        allow_mass_deletion=r.boolean("allow_mass_deletion", False),
        budget_table=budget_table,
        window_seconds=r.integer("window_seconds", 3600, 60, MAX_WINDOW_SECONDS),
        max_deletes_per_second=None if rate is None else r.integer("max_deletes_per_second", 0, 1, 100_000),
    )


def _orphans(r: _Reader | None) -> OrphanedObjects | None:
    if r is None:
        return None
    r.check_known({"prefix", "older_than_seconds", "id_pattern", "inventory"})
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
        inventory=_inventory(r.section("inventory")),
    )


def _inventory(r: _Reader | None) -> Inventory | None:
    if r is None:
        return None
    r.check_known({"destination_bucket", "destination_prefix", "inventory_id", "max_age_hours"})
    prefix = r.raw.get("destination_prefix", "")
    if not isinstance(prefix, str) or prefix.startswith("/") or prefix.endswith("/"):
        r.fail(
            "destination_prefix", f"must be a key prefix without a leading or trailing '/' (or empty), got {prefix!r}"
        )
    return Inventory(
        destination_bucket=r.matching("destination_bucket", "", BUCKET_NAME, "an S3 bucket name"),
        destination_prefix=prefix,
        inventory_id=r.matching("inventory_id", "", INVENTORY_ID, "1..64 characters of A-Z a-z 0-9 . _ -"),
        # A daily report is up to a day old by design, and S3 may take up to 48 hours to deliver the first.
        max_age_seconds=3600 * r.integer("max_age_hours", 48, 24, 720),
    )


def _index_layout(r: _Reader, key_count: int) -> IndexLayout:
    r.check_known({"range_prefix", "target"})
    target = r.texts("target")
    if len(target) != key_count:
        r.fail("target", f"must give the target's {key_count} key part(s) as templates, got {list(target)}")
    if not any(field in part for part in target for field in TEMPLATE_FIELDS):
        r.fail("target", f"must use {{owner}} or {{token}} (the rest of the entry's range key), got {list(target)}")
    for part in target:
        try:
            part.format(owner="o", token="t")
        except (KeyError, IndexError, ValueError):
            r.fail("target", f"templates may use only {{owner}} and {{token}}, got {part!r}")
    return IndexLayout(range_prefix=r.text("range_prefix"), target=target)


def _references(r: _Reader | None, table: str, key_attributes: tuple[str, ...]) -> References | None:
    if r is None:
        return None
    r.check_known(
        {
            "hash_value",
            "indexes",
            "owner_attribute",
            "owner_format",
            "grace_seconds",
            "target_table_name",
            "target_key_attributes",
        }
    )
    target_keys = r.texts("target_key_attributes") or key_attributes
    if not 1 <= len(target_keys) <= 2:
        r.fail("target_key_attributes", f"must name the target's hash key and optional range key, got {target_keys}")
    key_count = len(target_keys)
    raw_indexes = r.raw.get("indexes")
    if not isinstance(raw_indexes, list) or not raw_indexes:
        r.fail("indexes", f"must be a non-empty list of {{range_prefix, target}}, got {raw_indexes!r}")
    indexes = tuple(
        _index_layout(_Reader(raw, f"{r.path}.indexes[{i}]", r.source), key_count) for i, raw in enumerate(raw_indexes)
    )
    prefixes = [index.range_prefix for index in indexes]
    for i, prefix in enumerate(prefixes):
        if any(other != prefix and other.startswith(prefix) for other in prefixes) or prefixes.count(prefix) > 1:
            r.fail(f"indexes[{i}].range_prefix", f"{prefix!r} overlaps another index's prefix")
    owner_format = r.one_of("owner_format", "text", OWNER_FORMATS)
    return References(
        hash_value=r.text("hash_value"),
        indexes=indexes,
        owner_attribute=r.text("owner_attribute"),
        owner_format=owner_format,
        grace_seconds=r.integer("grace_seconds", 0, 0, 366 * 86400),
        target_table=r.text("target_table_name", table),
        target_key_attributes=target_keys,
    )


COMMON = {
    "kind",
    "job_name",
    "table_name",
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
    "expiry_index_name",
    *INDEX_SETTINGS,
    "hooks_path",
    "plan_sample_size",
    "unindexed_check_items",
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


def _archive(r: _Reader) -> Archive | None:
    if "archive_bucket" not in r.raw:
        if "archive_prefix" in r.raw:
            r.fail("archive_prefix", "needs archive_bucket")
        return None
    prefix = r.raw.get("archive_prefix", "expired/")
    if not isinstance(prefix, str) or (prefix and not prefix.endswith("/")):
        r.fail("archive_prefix", f"must be a key prefix ending in '/' (or empty), got {prefix!r}")
    return Archive(bucket=r.text("archive_bucket"), prefix=prefix)


def _purge(r: _Reader | None) -> dict[str, Any] | None:
    if r is None:
        return None
    r.check_known(set(PURGE_SETTINGS))
    if "expiry_expression" in r.raw:  # instead of expiry_column; its text and the server check it (PurgeSpec)
        if "expiry_column" in r.raw:
            r.fail("expiry_expression", "give expiry_column or expiry_expression, not both")
        r.text("expiry_expression")
    else:
        r.text("expiry_column")
    return dict(r.raw)


def _namespace(r: _Reader) -> str:
    namespace = r.matching(
        "namespace", DEFAULT_NAMESPACE, NAMESPACE, "1..255 characters of A-Z a-z 0-9 _ . / # : - space"
    )
    if namespace.upper().startswith("AWS/"):
        r.fail("namespace", f"AWS/ is reserved for AWS's own metrics, got {namespace!r}")
    return namespace


def loads_object(text: str, source: str) -> Any:
    """JSON as a job's settings are written: a key given twice is refused, not silently overwritten."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in items]
        twice = sorted({key for key in keys if keys.count(key) > 1})
        if twice:
            raise JobConfigError(f"{source}: {', '.join(twice)}: given more than once")
        return dict(items)

    try:
        return json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as error:
        raise JobConfigError(f"{source}: is not valid JSON: {error}") from error


def current_schema(raw: Any, source: str) -> Any:
    """``raw`` with 0.3's keys (RENAMED_0_3) renamed, each with a SettingsDeprecationWarning naming the old
    key and the new; a setting given in both spellings is refused, naming both. Anything but an object is
    returned as it is (parse_job refuses it); ``raw`` itself is not changed."""
    if not isinstance(raw, Mapping):
        return raw
    settings = {key: dict(value) if isinstance(value, Mapping) else value for key, value in raw.items()}
    moved: set[str] = set()
    for old, new in RENAMED_0_3.items():
        section, _, key = old.rpartition(".")
        holder = settings.get(section) if section else settings
        if not isinstance(holder, dict) or key not in holder:
            continue
        new_section, _, new_key = new.rpartition(".")
        target = settings[new_section] if new_section else settings
        if new_key in target:
            raise JobConfigError(
                f"{source}: {old}, {new}: one setting given twice ({old} is 0.3's spelling of {new}): give {new} only"
            )
        value = holder.pop(key)
        if old == "hook" and not isinstance(value, bool):
            raise JobConfigError(f"{source}: hook: must be true or false, got {value!r}")
        if old != "hook" or value:
            target[new_key] = HOOK_MODULE if old == "hook" else value
        moved.add(section)
        warnings.warn(
            f"{source}: {old} is 0.3's spelling of {new}: give {new} (0.3's keys are read for one more release)",
            SettingsDeprecationWarning,
            stacklevel=3,
        )
    for section in FLATTENED_0_3:
        if section not in settings:
            continue
        left = settings[section]
        if left or section not in moved:
            now = [new for old, new in RENAMED_0_3.items() if old.startswith(f"{section}.")]
            raise JobConfigError(
                f"{source}: {section}: 0.3's section, unknown now: give {', '.join(now)}, got {left!r}"
            )
        del settings[section]
    return settings


def check_names(settings: Mapping[str, Any], paths: Iterable[str], source: str) -> None:
    """Check the names at ``paths`` (dotted: within a section) of settings parse_job has already read with
    placeholders in their place (a component's Outputs, resolved after construction), with the check
    parse_job applies to them."""
    for path in paths:
        section, _, key = path.rpartition(".")
        _Reader(settings.get(section) if section else settings, section, source).text(key)


def parse_job(raw: Any, source: str = ENV_VAR) -> Job:
    """Validate job settings; raise JobConfigError naming ``source`` and the field. Settings written by
    0.3 are read with a warning (current_schema)."""
    r = _Reader(current_schema(raw, source), "", source)
    kind = r.checked("kind", fields.one_of, r.raw.get("kind"), kinds.KINDS)
    registered = kinds.kind(kind)
    r.check_known(COMMON | registered.sections | ({"breaker", "budget_table_name"} if registered.deletes else set()))
    key_attributes = r.texts("key_attributes")
    if registered.postgres:
        for section in ("postgres", "purge"):
            if r.raw.get(section) is None:
                r.fail(section, f"is required for a {kind} job")
    elif not 1 <= len(key_attributes) <= 2:
        r.fail("key_attributes", f"must name the table's hash key and optional range key, got {list(key_attributes)}")
    table = r.text("table_name")
    ttl_attribute = r.text("ttl_attribute", "expires_at")
    job = Job(
        kind=kind,
        name=r.matching("job_name", "", JOB_NAME, "1..128 characters of A-Z a-z 0-9 _ . : - (a metric dimension)"),
        table=table,
        namespace=_namespace(r),
        key_attributes=key_attributes,
        ttl_attribute=ttl_attribute,
        dry_run=r.boolean("dry_run", False),
        max_items=r.integer("max_items", 100_000, 1, 10_000_000),
        workers=r.integer("workers", SWEEPING_WORKERS if registered.sweeping else 8, 1, MAX_WORKERS),
        scan_segments=r.integer("scan_segments", 1, 1, MAX_SEGMENTS),
        safety_margin_seconds=r.integer("safety_margin_seconds", 15, 1, 300),
        sample_size=r.integer("sample_size", 10, 0, 10),
        page_size=r.integer("page_size", 0, 0, 10_000) or None,
        expiry_index=_expiry_index(r),
        s3=_s3(r.section("s3")),
        stuck_uploads=_stuck(r.section("stuck_uploads"), ttl_attribute),
        orphaned_objects=_orphans(r.section("orphaned_objects")),
        references=_references(r.section("references"), table, key_attributes),
        hook=r.text("hooks_path", required=False) is not None,
        delete_expired=r.boolean("delete_expired", True),
        breaker=_breaker(r.section("breaker"), r.text("budget_table_name", required=False)),
        plan_sample_size=r.integer("plan_sample_size", 20, 0, 1000),
        unindexed_check_items=r.integer(
            "unindexed_check_items",
            UNINDEXED_CHECK_ITEMS if r.raw.get("expiry_index_name") is not None else 0,
            0,
            10_000_000,
        ),
        postgres=_postgres(r.section("postgres")),
        purge=_purge(r.section("purge")),
        archive=_archive(r),
    )
    if (job.stuck_uploads or job.orphaned_objects) and not job.s3:
        field = "stuck_uploads" if job.stuck_uploads else "orphaned_objects"
        r.fail(field, "needs the s3 section (bucket and key_attribute)")
    if job.stuck_uploads and not (job.s3 and job.s3.upload_id_attribute and job.s3.status_attribute):
        r.fail("stuck_uploads", "needs s3.upload_id_attribute and s3.status_attribute")
    if job.unindexed_check_items and not job.expiry_index:
        r.fail(
            "unindexed_check_items", "needs expiry_index_name (without one, every expired item is found by the Scan)"
        )
    if job.orphaned_objects and job.s3 and job.s3.keep_statuses and job.s3.keep_marker == "none":
        r.fail(
            "s3.keep_marker",
            "must be tag when keep_statuses and orphaned_objects are both set, or the objects kept "
            "would be taken for orphans once their items are gone",
        )
    if job.orphaned_objects and len(job.key_attributes) != 1:
        r.fail("orphaned_objects", "needs a table keyed by its hash key alone (the id taken from the object key)")
    if kind == KIND_STREAM_CASCADE and job.s3 is None and job.archive is None:
        r.fail("s3", "a stream-cascade job needs s3 (the cascade), archive_bucket, or both")
    if job.breaker.budget_table and not registered.sweeping:
        r.fail("budget_table_name", f"only {' and '.join(SWEEPING_KINDS)} jobs reserve deletions in a ledger")
    if kind == KIND_ORPHANED_REFERENCES and job.references is None:
        r.fail("references", "is required for an orphaned-references job")
    if kind == KIND_ORPHANED_REFERENCES and len(job.key_attributes) != 2:
        r.fail("key_attributes", "an orphaned-references job reads index entries by hash key and range-key prefix")
    return job


def job_from_environment(environ: Mapping[str, str]) -> Job:
    """The job a handler runs, from its environment; raise JobConfigError naming the variable."""
    text = environ.get(ENV_VAR)
    if not text:
        raise JobConfigError(f"{ENV_VAR}: is not set; the component that deploys the function sets it")
    return parse_job(loads_object(text, ENV_VAR))
