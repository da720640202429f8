"""TtlTable: a DynamoDB table with TTL on, safe defaults and an optional expiry index."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

import pulumi
import pulumi_aws as aws

from expiry.components import validation as v
from expiry.components.transforms import Child, ChildTransform, rails, with_transforms
from expiry.components.ttl_change_guard import ttl_change_hooks
from expiry.runtime.dynamodb.ttl import (
    DEFAULT_SHARD_ATTRIBUTE,
    DEFAULT_SHARDS,
    DEFAULT_TTL_ATTRIBUTE,
    EXPIRY_INDEX_NAME,
    MAX_SHARDS,
)

COMPONENT = "TtlTable"
KEY_TYPES = ("S", "N", "B")
PROJECTIONS = ("ALL", "KEYS_ONLY", "INCLUDE")
BILLING_MODES = ("PAY_PER_REQUEST", "PROVISIONED")
TABLE_CLASSES = ("STANDARD", "STANDARD_INFREQUENT_ACCESS")
STREAM_VIEW_TYPES = ("KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES")
MAX_GLOBAL_INDEXES = 20
MAX_CAPACITY = 40_000
# What ScheduledSweeper and TtlStreamCascade need to know about a table at construction (the rest, its
# name and ARNs, may be Outputs).
TARGET_SHAPE = ("key_attributes", "ttl_attribute", "expiry_index_name", "expiry_index_shards", "expiry_shard_attribute")
# The children `transforms` reaches: key -> resource type and logical name after the component's name.
CHILDREN = {
    "table": Child(
        aws.dynamodb.Table, "-table", rails("ttl", "hash_key", "range_key", "stream_enabled", "stream_view_type")
    ),
}


class GlobalIndexArgs(TypedDict):
    """A global secondary index of a TtlTable."""

    name: str
    """Index name: 3..255 characters of A-Z a-z 0-9 _ . -."""
    hash_key: str
    """Partition key of the index: a table key, an entry of `attributes`, or the TTL attribute."""
    range_key: NotRequired[str]
    """Sort key of the index, defined like `hash_key`."""
    projection: NotRequired[str]
    """ALL (default), KEYS_ONLY or INCLUDE."""
    non_key_attributes: NotRequired[list[str]]
    """Attributes projected with INCLUDE (required with it, refused otherwise)."""
    read_capacity: NotRequired[int]
    """Provisioned read capacity of the index (PROVISIONED only; default: the table's)."""
    write_capacity: NotRequired[int]
    """Provisioned write capacity of the index (PROVISIONED only; default: the table's)."""


class TtlTableArgs(TypedDict):
    """Inputs of a TtlTable."""

    hash_key: str
    """Partition key attribute name."""
    hash_key_type: NotRequired[str]
    """Partition key type: S (default), N or B."""
    range_key: NotRequired[str]
    """Sort key attribute name (none by default)."""
    range_key_type: NotRequired[str]
    """Sort key type: S (default), N or B."""
    ttl_attribute: NotRequired[str]
    """The TTL attribute, always Number epoch seconds (default `expires_at`). DynamoDB takes one TTL
    change per table per hour and refuses a new attribute while TTL is on, so a one-step rename is
    refused at preview (Pulumi CLI 3.182 or later): deploy `ttl_enabled: false` first, then the new
    attribute with TTL on an hour later (README)."""
    ttl_enabled: NotRequired[bool]
    """Whether DynamoDB's TTL deletes expired items (default true); false turns it off."""
    attributes: NotRequired[dict[str, str]]
    """Extra attribute definitions used by index keys: name -> S, N or B."""
    global_indexes: NotRequired[list[GlobalIndexArgs]]
    """Global secondary indexes (at most 20, the expiry index included)."""
    billing_mode: NotRequired[str]
    """PAY_PER_REQUEST (default, on-demand) or PROVISIONED."""
    read_capacity: NotRequired[int]
    """Read capacity units; required with PROVISIONED, refused with PAY_PER_REQUEST."""
    write_capacity: NotRequired[int]
    """Write capacity units; required with PROVISIONED, refused with PAY_PER_REQUEST."""
    point_in_time_recovery: NotRequired[bool]
    """Continuous backups (default true)."""
    deletion_protection: NotRequired[bool]
    """Refuse DeleteTable until turned off (default true)."""
    server_side_encryption: NotRequired[bool]
    """Encrypt with KMS: a customer key when `kms_key_arn` is given, else AWS's managed key.
    Default false: DynamoDB's own AWS-owned key (tables are always encrypted at rest)."""
    kms_key_arn: NotRequired[pulumi.Input[str]]
    """ARN of a customer-managed KMS key; turns server-side encryption on."""
    table_class: NotRequired[str]
    """STANDARD (default) or STANDARD_INFREQUENT_ACCESS."""
    stream_view_type: NotRequired[str]
    """Turns the stream on with this view: KEYS_ONLY, NEW_IMAGE, OLD_IMAGE or NEW_AND_OLD_IMAGES."""
    expiry_index: NotRequired[bool]
    """Add a sparse, write-sharded index (shard attribute -> TTL attribute, keys only) that
    a sweeper queries instead of scanning the table (default false)."""
    expiry_index_shards: NotRequired[int]
    """Number of shards of the expiry index, 1..100 (default 10)."""
    expiry_shard_attribute: NotRequired[str]
    """Attribute holding an item's shard, "0".."N-1" (default `expiry_shard`)."""
    table_name: NotRequired[str]
    """Physical table name (default: derived from the component's name by Pulumi)."""
    tags: NotRequired[pulumi.Input[dict[str, pulumi.Input[str]]]]
    """Tags of the table."""


class TableTarget(TypedDict):
    """A TtlTable as the components that work on it take it: TtlTable's `target` output, given whole
    as ScheduledSweeper's or TtlStreamCascade's `table` input (in place of the table's fields one by one).
    Built by hand, it describes another table with the same fields."""

    table_name: pulumi.Input[str]
    """Physical name of the table."""
    table_arn: pulumi.Input[str]
    """ARN of the table."""
    key_attributes: list[str]
    """The table's hash key and optional range key."""
    ttl_attribute: str
    """The TTL attribute (Number, epoch seconds)."""
    stream_arn: NotRequired[pulumi.Input[str]]
    """ARN of the table's stream, when it has one (TtlStreamCascade needs it)."""
    stream_view_type: NotRequired[str]
    """What the stream's records hold, when the table has a stream (TtlStreamCascade needs OLD_IMAGE or
    NEW_AND_OLD_IMAGES)."""
    expiry_index_name: NotRequired[str]
    """Name of the expiry index, when there is one (a sweeper queries it instead of scanning)."""
    expiry_index_shards: NotRequired[int]
    """Shard count of the expiry index."""
    expiry_shard_attribute: NotRequired[str]
    """Attribute that holds an item's expiry shard."""


def target_fields(component: str, target: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """The named fields of a `table` input (a TableTarget), checked: a mapping known at construction, no
    key TableTarget does not declare, the required ones present, the table's shape (key and TTL
    attributes, expiry index) plain values. Fields the target leaves out are left out."""
    if isinstance(target, pulumi.Output):
        v.fail(
            component,
            "table",
            "must be known at construction (a TtlTable's target): its key attributes, TTL attribute and "
            "expiry index shape the job; only its names and ARNs may be Outputs",
        )
    if not isinstance(target, dict):
        v.fail(component, "table", f"must be a TtlTable's target (a mapping), got {type(target).__name__} {target!r}")
    for key in target:
        if key not in TableTarget.__annotations__:
            v.fail(
                component, f"table.{key}", f"unknown key; a table target has {', '.join(TableTarget.__annotations__)}"
            )
    for key in TableTarget.__required_keys__:
        if target.get(key) is None:
            v.fail(component, f"table.{key}", "is required")
    for key in TARGET_SHAPE:
        if target.get(key) is not None:
            v.plain(component, f"table.{key}", target[key])
    keys = target["key_attributes"]
    if not isinstance(keys, list) or not 1 <= len(keys) <= 2 or not all(isinstance(k, str) and k for k in keys):
        v.fail(component, "table.key_attributes", f"must be the hash key and optional range key, got {keys!r}")
    if target.get("stream_view_type") is not None:
        v.one_of(
            component,
            "table.stream_view_type",
            v.plain(component, "table.stream_view_type", target["stream_view_type"]),
            STREAM_VIEW_TYPES,
        )
    return {key: target[key] for key in fields if target.get(key) is not None}


def with_table(component: str, raw: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """The args with a `table` input replaced by the fields it stands for. Giving both the table and
    any of those fields is refused, naming them: which one was meant cannot be told."""
    if raw.get("table") is None:
        return {key: val for key, val in raw.items() if key != "table"}
    given = [field for field in fields if raw.get(field) is not None]
    if given:
        v.fail(
            component, "table", f"give either table or {', '.join(fields)}, not both (also given: {', '.join(given)})"
        )
    expanded = target_fields(component, raw["table"], fields)
    return {**{key: val for key, val in raw.items() if key != "table"}, **expanded}


@dataclass(frozen=True)
class GlobalIndex:
    """A validated global secondary index."""

    name: str
    hash_key: str
    range_key: str | None
    projection: str
    non_key_attributes: tuple[str, ...]
    read_capacity: int | None
    write_capacity: int | None


@dataclass(frozen=True)
class TableSpec:
    """The validated, plain shape of a TtlTable, for other components to build on."""

    hash_key: str
    range_key: str | None
    attribute_types: dict[str, str]
    ttl_attribute: str
    global_indexes: tuple[GlobalIndex, ...]
    billing_mode: str
    read_capacity: int | None
    write_capacity: int | None
    expiry_index_name: str | None
    expiry_index_shards: int
    shard_attribute: str | None
    table_name: str | None

    @property
    def key_attributes(self) -> tuple[str, ...]:
        """The table's primary key attribute names."""
        return (self.hash_key,) if self.range_key is None else (self.hash_key, self.range_key)


def _capacity(value: Any, field: str, billing_mode: str, default: int | None) -> int | None:
    if billing_mode == "PAY_PER_REQUEST":
        if value is not None:
            v.fail(COMPONENT, field, "capacity is only allowed with billing_mode PROVISIONED")
        return None
    if value is None:
        if default is None:
            v.fail(COMPONENT, field, "is required with billing_mode PROVISIONED")
        return default
    return v.integer(COMPONENT, field, value, 1, MAX_CAPACITY)


def _key_type(field: str, value: Any) -> str:
    return v.one_of(COMPONENT, field, v.plain(COMPONENT, field, value), KEY_TYPES)


def _index_key(value: Any, field: str, defined: dict[str, str], ttl_attribute: str) -> str:
    """An index key: a defined attribute, a table key or the TTL attribute."""
    key = v.text(COMPONENT, field, value)
    if key not in defined and key != ttl_attribute:
        v.fail(
            COMPONENT,
            field,
            f"attribute {key!r} is not defined; define it in attributes or use a table key "
            f"({', '.join(sorted(defined))}) or the TTL attribute {ttl_attribute!r}",
        )
    return key


def _global_index(
    raw: Any, position: int, defined: dict[str, str], ttl_attribute: str, billing: tuple[str, int | None, int | None]
) -> GlobalIndex:
    field = f"global_indexes[{position}]"
    if not isinstance(raw, dict):
        v.fail(COMPONENT, field, f"must be a mapping with name and hash_key, got {raw!r}")
    unknown = set(raw) - set(GlobalIndexArgs.__annotations__)
    if unknown:
        v.fail(
            COMPONENT, field, f"unknown fields {sorted(unknown)}; allowed: {sorted(GlobalIndexArgs.__annotations__)}"
        )
    name = v.aws_name(COMPONENT, f"{field}.name", raw.get("name"))
    hash_key = _index_key(raw.get("hash_key"), f"{field}.hash_key", defined, ttl_attribute)
    range_key = raw.get("range_key")
    if range_key is not None:
        range_key = _index_key(range_key, f"{field}.range_key", defined, ttl_attribute)
    projection = v.one_of(COMPONENT, f"{field}.projection", raw.get("projection", "ALL"), PROJECTIONS)
    non_key = raw.get("non_key_attributes") or []
    if projection == "INCLUDE" and not non_key:
        v.fail(COMPONENT, f"{field}.non_key_attributes", "is required with projection INCLUDE")
    if projection != "INCLUDE" and non_key:
        v.fail(COMPONENT, f"{field}.non_key_attributes", "is only allowed with projection INCLUDE")
    for i, attr in enumerate(non_key):
        v.text(COMPONENT, f"{field}.non_key_attributes[{i}]", attr)
    mode, table_read, table_write = billing
    return GlobalIndex(
        name=name,
        hash_key=hash_key,
        range_key=range_key,
        projection=projection,
        non_key_attributes=tuple(non_key),
        read_capacity=_capacity(raw.get("read_capacity"), f"{field}.read_capacity", mode, table_read),
        write_capacity=_capacity(raw.get("write_capacity"), f"{field}.write_capacity", mode, table_write),
    )


def table_spec(args: TtlTableArgs) -> TableSpec:
    """Validate a TtlTable's inputs into a TableSpec; raise ValueError on bad input."""
    raw = v.known_fields(COMPONENT, args, TtlTableArgs)
    hash_key = v.text(COMPONENT, "hash_key", raw.get("hash_key"))
    types = {hash_key: _key_type("hash_key_type", raw.get("hash_key_type", "S"))}
    range_key = raw.get("range_key")
    if range_key is not None:
        range_key = v.text(COMPONENT, "range_key", range_key)
        if range_key == hash_key:
            v.fail(COMPONENT, "range_key", f"must differ from hash_key {hash_key!r}")
        types[range_key] = _key_type("range_key_type", raw.get("range_key_type", "S"))
    elif "range_key_type" in raw:
        v.fail(COMPONENT, "range_key_type", "is only allowed with range_key")

    ttl_attribute = v.text(COMPONENT, "ttl_attribute", raw.get("ttl_attribute", DEFAULT_TTL_ATTRIBUTE))
    if types.get(ttl_attribute, "N") != "N":
        v.fail(
            COMPONENT,
            "ttl_attribute",
            f"{ttl_attribute!r} is a key of type {types[ttl_attribute]}; TTL needs a Number (epoch seconds)",
        )

    extra = v.plain(COMPONENT, "attributes", raw.get("attributes") or {})
    if not isinstance(extra, dict):
        v.fail(COMPONENT, "attributes", f"must map attribute names to S, N or B, got {extra!r}")
    for attr, attr_type in extra.items():
        field = f"attributes.{attr}"
        v.text(COMPONENT, field, attr)
        _key_type(field, attr_type)
        if attr in types and types[attr] != attr_type:
            v.fail(COMPONENT, field, f"is a table key of type {types[attr]}, not {attr_type}")
        if attr == ttl_attribute and attr_type != "N":
            v.fail(COMPONENT, field, "is the TTL attribute, which must be N (epoch seconds)")
        types.setdefault(attr, attr_type)

    billing_mode = v.one_of(COMPONENT, "billing_mode", raw.get("billing_mode", "PAY_PER_REQUEST"), BILLING_MODES)
    read_capacity = _capacity(raw.get("read_capacity"), "read_capacity", billing_mode, None)
    write_capacity = _capacity(raw.get("write_capacity"), "write_capacity", billing_mode, None)

    raw_indexes = v.plain(COMPONENT, "global_indexes", raw.get("global_indexes") or [])
    if not isinstance(raw_indexes, list):
        v.fail(COMPONENT, "global_indexes", f"must be a list, got {raw_indexes!r}")
    billing = (billing_mode, read_capacity, write_capacity)
    indexes = [_global_index(gsi, i, types, ttl_attribute, billing) for i, gsi in enumerate(raw_indexes)]

    expiry_index = v.boolean(COMPONENT, "expiry_index", raw.get("expiry_index", False))
    if not expiry_index:
        for field in ("expiry_index_shards", "expiry_shard_attribute"):
            if field in raw:
                v.fail(COMPONENT, field, "is only allowed with expiry_index true")
    shards = v.integer(COMPONENT, "expiry_index_shards", raw.get("expiry_index_shards", DEFAULT_SHARDS), 1, MAX_SHARDS)
    shard_attribute = None
    if expiry_index:
        shard_attribute = v.text(
            COMPONENT, "expiry_shard_attribute", raw.get("expiry_shard_attribute", DEFAULT_SHARD_ATTRIBUTE)
        )
        if shard_attribute in (hash_key, range_key, ttl_attribute) or types.get(shard_attribute, "S") != "S":
            v.fail(COMPONENT, "expiry_shard_attribute", f"{shard_attribute!r} must be a string attribute of its own")
        types[shard_attribute] = "S"
        indexes.append(
            GlobalIndex(
                EXPIRY_INDEX_NAME, shard_attribute, ttl_attribute, "KEYS_ONLY", (), read_capacity, write_capacity
            )
        )

    names = [index.name for index in indexes]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        hint = f" ({EXPIRY_INDEX_NAME!r} is the expiry index's)" if EXPIRY_INDEX_NAME in duplicates else ""
        v.fail(COMPONENT, "global_indexes", f"duplicate index names {duplicates}{hint}")
    if len(indexes) > MAX_GLOBAL_INDEXES:
        v.fail(
            COMPONENT,
            "global_indexes",
            f"at most {MAX_GLOBAL_INDEXES} indexes, the expiry index included; got {len(indexes)}",
        )

    index_keys = {key for index in indexes for key in (index.hash_key, index.range_key) if key}
    if ttl_attribute in index_keys:
        types.setdefault(ttl_attribute, "N")
    unused = sorted(set(types) - index_keys - {hash_key, range_key})
    if unused:
        v.fail(
            COMPONENT,
            "attributes",
            f"{unused} are not a key of the table or of an index; DynamoDB refuses unused definitions",
        )

    table_name = raw.get("table_name")
    if table_name is not None:
        v.aws_name(COMPONENT, "table_name", table_name)
    return TableSpec(
        hash_key=hash_key,
        range_key=range_key,
        attribute_types=types,
        ttl_attribute=ttl_attribute,
        global_indexes=tuple(indexes),
        billing_mode=billing_mode,
        read_capacity=read_capacity,
        write_capacity=write_capacity,
        expiry_index_name=EXPIRY_INDEX_NAME if expiry_index else None,
        expiry_index_shards=shards if expiry_index else 0,
        shard_attribute=shard_attribute,
        table_name=table_name,
    )


def _encryption(args: TtlTableArgs) -> aws.dynamodb.TableServerSideEncryptionArgs:
    kms_key_arn = args.get("kms_key_arn")
    requested = args.get("server_side_encryption")
    if requested is not None:
        v.boolean(COMPONENT, "server_side_encryption", requested)
    if kms_key_arn is not None and requested is False:
        v.fail(COMPONENT, "kms_key_arn", "a KMS key needs server_side_encryption true (or unset)")
    enabled = bool(requested) or kms_key_arn is not None
    return aws.dynamodb.TableServerSideEncryptionArgs(enabled=enabled, kms_key_arn=kms_key_arn)


def _index_args(index: GlobalIndex) -> aws.dynamodb.TableGlobalSecondaryIndexArgs:
    keys = [aws.dynamodb.TableGlobalSecondaryIndexKeySchemaArgs(attribute_name=index.hash_key, key_type="HASH")]
    if index.range_key:
        keys.append(
            aws.dynamodb.TableGlobalSecondaryIndexKeySchemaArgs(attribute_name=index.range_key, key_type="RANGE")
        )
    return aws.dynamodb.TableGlobalSecondaryIndexArgs(
        name=index.name,
        key_schemas=keys,
        projection_type=index.projection,
        non_key_attributes=list(index.non_key_attributes) or None,
        read_capacity=index.read_capacity,
        write_capacity=index.write_capacity,
    )


class TtlTable(pulumi.ComponentResource):
    """A DynamoDB table with TTL enabled, safe defaults (on-demand, point-in-time recovery,
    deletion protection) and an optional sparse, write-sharded expiry index."""

    table_name: pulumi.Output[str]
    """Physical name of the table."""
    table_arn: pulumi.Output[str]
    """ARN of the table."""
    stream_arn: pulumi.Output[str | None]
    """ARN of the table's stream, when `stream_view_type` is set."""
    ttl_attribute: pulumi.Output[str]
    """The TTL attribute (Number, epoch seconds)."""
    hash_key: pulumi.Output[str]
    """Partition key attribute name."""
    range_key: pulumi.Output[str | None]
    """Sort key attribute name, when there is one."""
    expiry_index_name: pulumi.Output[str | None]
    """Name of the expiry index, when there is one."""
    expiry_index_shards: pulumi.Output[int]
    """Shard count of the expiry index (0 without one)."""
    expiry_shard_attribute: pulumi.Output[str | None]
    """Attribute that holds an item's expiry shard, when there is an expiry index."""
    target: TableTarget
    """The table as ScheduledSweeper's and TtlStreamCascade's `table` input takes it: name, ARNs, key and
    TTL attributes, stream and expiry index, in one object."""

    def __init__(
        self,
        name: str,
        args: TtlTableArgs,
        opts: pulumi.ResourceOptions | None = None,
        *,
        transforms: Mapping[str, ChildTransform] | None = None,
    ) -> None:
        """``transforms``: a transform per child (keys: CHILDREN), for what the args do not cover."""
        spec = table_spec(args)
        point_in_time_recovery = v.boolean(
            COMPONENT, "point_in_time_recovery", args.get("point_in_time_recovery", True)
        )
        deletion_protection = v.boolean(COMPONENT, "deletion_protection", args.get("deletion_protection", True))
        table_class = v.one_of(COMPONENT, "table_class", args.get("table_class", "STANDARD"), TABLE_CLASSES)
        ttl_enabled = v.boolean(COMPONENT, "ttl_enabled", args.get("ttl_enabled", True))
        stream_view_type = args.get("stream_view_type")
        if stream_view_type is not None:
            v.one_of(COMPONENT, "stream_view_type", stream_view_type, STREAM_VIEW_TYPES)
        encryption = _encryption(args)
        v.tags(COMPONENT, "tags", args.get("tags"))
        opts = with_transforms(COMPONENT, name, CHILDREN, transforms, opts)
        super().__init__(f"expiry:index:{COMPONENT}", name, {}, opts)

        self.spec = spec
        self.table = aws.dynamodb.Table(
            f"{name}-table",
            name=spec.table_name,
            hash_key=spec.hash_key,
            range_key=spec.range_key,
            attributes=[aws.dynamodb.TableAttributeArgs(name=n, type=t) for n, t in spec.attribute_types.items()],
            billing_mode=spec.billing_mode,
            read_capacity=spec.read_capacity,
            write_capacity=spec.write_capacity,
            global_secondary_indexes=[_index_args(index) for index in spec.global_indexes] or None,
            ttl=aws.dynamodb.TableTtlArgs(attribute_name=spec.ttl_attribute, enabled=ttl_enabled),
            point_in_time_recovery=aws.dynamodb.TablePointInTimeRecoveryArgs(enabled=point_in_time_recovery),
            deletion_protection_enabled=deletion_protection,
            server_side_encryption=encryption,
            table_class=table_class,
            stream_enabled=stream_view_type is not None,
            stream_view_type=stream_view_type,
            tags=args.get("tags"),
            opts=pulumi.ResourceOptions(
                parent=self, hooks=ttl_change_hooks(COMPONENT, name, opts.parent if opts else None)
            ),
        )
        self.table_name = self.table.name
        self.table_arn = self.table.arn
        self.stream_arn = self.table.stream_arn if stream_view_type else pulumi.Output.from_input(None)
        self.stream_view_type: str | None = stream_view_type
        self.ttl_attribute = pulumi.Output.from_input(spec.ttl_attribute)
        self.hash_key = pulumi.Output.from_input(spec.hash_key)
        self.range_key = pulumi.Output.from_input(spec.range_key)
        self.expiry_index_name = pulumi.Output.from_input(spec.expiry_index_name)
        self.expiry_index_shards = pulumi.Output.from_input(spec.expiry_index_shards)
        self.expiry_shard_attribute = pulumi.Output.from_input(spec.shard_attribute)
        # A plain mapping, not one Output: the shape is known at construction even where the names are
        # not (a preview), and serialized that way to other languages.
        target: TableTarget = {
            "table_name": self.table_name,
            "table_arn": self.table_arn,
            "key_attributes": list(spec.key_attributes),
            "ttl_attribute": spec.ttl_attribute,
        }
        if stream_view_type is not None:
            target |= {"stream_arn": self.table.stream_arn, "stream_view_type": stream_view_type}
        if spec.expiry_index_name:
            target |= {
                "expiry_index_name": spec.expiry_index_name,
                "expiry_index_shards": spec.expiry_index_shards,
            }
            if spec.shard_attribute:
                target["expiry_shard_attribute"] = spec.shard_attribute
        self.target = target
        self.register_outputs(
            {
                "table_name": self.table_name,
                "table_arn": self.table_arn,
                "stream_arn": self.stream_arn,
                "ttl_attribute": self.ttl_attribute,
                "hash_key": self.hash_key,
                "range_key": self.range_key,
                "expiry_index_name": self.expiry_index_name,
                "expiry_index_shards": self.expiry_index_shards,
                "expiry_shard_attribute": self.expiry_shard_attribute,
                "target": dict(target),
            }
        )
