"""The component provider that serves Expiry's components to TypeScript, Go, C#, Java and YAML stacks
(`pulumi package add <repo>/provider`), built on pulumi.provider.experimental.

What the schema analyzer cannot infer from the Python types is added here: enums for the args that are
fixed choices (from the same tuples the components check against), secrets, and the WatchedJobArgs
fields that take a ScheduledSweeper's outputs. Inputs arrive as other languages send them and are
handed to the components in the shape Python callers use: whole floats (10.0) as ints, known outputs
as plain values where a component needs the value at construction, and a TtlTable's `target` passed
whole (one output value) as the mapping of its fields the components take."""

import asyncio
import inspect
import json
import re
import sys
from typing import Any

import pulumi
from pulumi.errors import InputPropertiesError
from pulumi.output import Unknown, _OutputData
from pulumi.provider import main
from pulumi.provider.experimental.analyzer import PropertyDefinition, PropertyType
from pulumi.provider.experimental.component import ComponentProvider
from pulumi.provider.provider import ConstructResult
from pulumi.provider.server import ComponentInitError

from expiry import __version__
from expiry.components import validation as v
from expiry.components.cleanup_alarms import CleanupAlarms
from expiry.components.pg_cron_cleanup import VPC_INPUTS, PgCronCleanup
from expiry.components.scheduled_sweeper import ARCHITECTURES, KINDS, RUNTIMES, ScheduledSweeper
from expiry.components.stream_cascade import TtlStreamCascade
from expiry.components.ttl_table import (
    BILLING_MODES,
    KEY_TYPES,
    PROJECTIONS,
    STREAM_VIEW_TYPES,
    TABLE_CLASSES,
    TtlTable,
)
from expiry.runtime import kinds
from expiry.runtime.jobs.config import KEEP_MARKERS, OWNER_FORMATS

PACKAGE = "expiry"
# Package metadata, as pyproject.toml states it; the project names no repository URL or publisher.
PACKAGE_METADATA = {
    "description": "Pulumi components that give data an end of life on AWS and PostgreSQL",
    "license": "Apache-2.0",
    "keywords": [
        "pulumi",
        "aws",
        "dynamodb",
        "ttl",
        "lambda",
        "postgresql",
        "pg_cron",
        "category/utility",
        "kind/component",
    ],
}
COMPONENTS: list[type[pulumi.ComponentResource]] = [
    TtlTable,
    ScheduledSweeper,
    TtlStreamCascade,
    PgCronCleanup,
    CleanupAlarms,
]

# enum name -> (description, allowed values)
ENUMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "JobKind": ("What a scheduled cleanup job does (a stream cascade is TtlStreamCascade).", KINDS),
    "LambdaRuntime": ("Python runtime of a Lambda function.", RUNTIMES),
    "Architecture": ("Instruction set of a Lambda function.", ARCHITECTURES),
    "KeepMarker": ("How a kept object is remembered once its item is gone.", KEEP_MARKERS),
    "OwnerFormat": ("How an index entry names its owner.", OWNER_FORMATS),
    "BillingMode": ("DynamoDB billing mode.", BILLING_MODES),
    "TableClass": ("DynamoDB table class.", TABLE_CLASSES),
    "StreamViewType": ("What a DynamoDB stream record holds.", STREAM_VIEW_TYPES),
    "KeyType": ("DynamoDB key attribute type: S, N or B.", KEY_TYPES),
    "Projection": ("Attributes projected into a global secondary index.", PROJECTIONS),
}
# (resource or type name, property) -> enum name
ENUM_PROPERTIES = {
    ("ScheduledSweeper", "kind"): "JobKind",
    ("ScheduledSweeper", "runtime"): "LambdaRuntime",
    ("ScheduledSweeper", "architecture"): "Architecture",
    ("S3CascadeArgs", "keepMarker"): "KeepMarker",
    ("ReferencesArgs", "ownerFormat"): "OwnerFormat",
    ("PgCronCleanup", "architecture"): "Architecture",
    ("TtlTable", "billingMode"): "BillingMode",
    ("TtlTable", "tableClass"): "TableClass",
    ("TtlTable", "streamViewType"): "StreamViewType",
    ("TtlTable", "hashKeyType"): "KeyType",
    ("TtlTable", "rangeKeyType"): "KeyType",
    ("GlobalIndexArgs", "projection"): "Projection",
    ("WatchedJobArgs", "kind"): "JobKind",
}
SECRET_PROPERTIES = {("PgCronCleanup", "password"), ("PgCronCleanup", "dsn")}
# WatchedJobArgs fields that take a ScheduledSweeper's outputs: Inputs in the schema, resolved to plain
# values before CleanupAlarms sees them (alarm names and the set of alarms depend on them).
SWEEPER_OUTPUTS = ("jobName", "kind", "namespace", "intervalSeconds", "timeoutSeconds", "pgCronIntervalSeconds")
# TtlTable's `target` output, the `table` input of ScheduledSweeper and TtlStreamCascade: one type for
# both, so its fields are Inputs (never plain) in every SDK.
TABLE_TARGET = "TableTarget"
DYNAMIC_PROVIDER_REFUSAL = (
    "from other languages only VPC mode is available (give secret_arn, subnet_ids and security_group_ids): "
    "the direct mode runs its SQL in a Pulumi dynamic provider, and dynamic providers do not work inside "
    "multi-language components (pulumi/pulumi#5455)"
)


def _enum_value_name(value: str) -> str:
    """A code-friendly name for an enum value: ttl-monitor -> TtlMonitor, python3.13 -> Python3_13."""
    parts = [part for part in re.split(r"[^A-Za-z0-9]+", value) if part]
    name = parts[0][:1].upper() + parts[0][1:].lower()
    for part in parts[1:]:
        name += ("_" if part[0].isdigit() else "") + part[:1].upper() + part[1:].lower()
    return name


def clean_descriptions(node: Any) -> None:
    """Every description in the schema without its docstring's indentation and trailing spaces."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                node[key] = "\n".join(line.rstrip() for line in inspect.cleandoc(value).splitlines())
            else:
                clean_descriptions(value)
    elif isinstance(node, list):
        for item in node:
            clean_descriptions(item)


def refine_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The analyzer's schema with package metadata, enums, secrets and sweeper-output inputs added,
    descriptions cleaned."""
    schema.update(PACKAGE_METADATA)
    types = schema.setdefault("types", {})
    for name, (description, values) in ENUMS.items():
        types[f"{PACKAGE}:index:{name}"] = {
            "type": "string",
            "description": description,
            "enum": [{"name": _enum_value_name(value), "value": value} for value in values],
        }
    for entry in types[f"{PACKAGE}:index:JobKind"]["enum"]:
        entry["description"] = kinds.kind(entry["value"]).description  # each value says what its job does
    owners = {token.rsplit(":", 1)[-1]: spec.get("inputProperties", {}) for token, spec in schema["resources"].items()}
    owners |= {token.rsplit(":", 1)[-1]: spec.get("properties", {}) for token, spec in types.items()}
    for (owner, prop), enum in ENUM_PROPERTIES.items():
        spec = owners[owner][prop]
        spec.pop("type")
        spec["$ref"] = f"#/types/{PACKAGE}:index:{enum}"
    for owner, prop in SECRET_PROPERTIES:
        owners[owner][prop]["secret"] = True
    for prop in SWEEPER_OUTPUTS:
        owners["WatchedJobArgs"][prop].pop("plain", None)
    for spec in owners[TABLE_TARGET].values():
        spec.pop("plain", None)
        spec.get("items", {}).pop("plain", None)
    clean_descriptions(schema)
    return schema


def known_value(value: Any) -> Any:
    """The plain value of an Output whose value is known and not secret (as the provider host
    deserializes an output value another language sent); anything else as it is."""
    data = getattr(value, "_data", None) if isinstance(value, pulumi.Output) else None
    if data is None or not data.done() or data.cancelled() or data.exception() is not None:
        return value
    resolved = data.result()
    return resolved.value if resolved.is_known and not resolved.is_secret else value


def _output(resources: set[Any], value: Any, is_known: bool, is_secret: bool) -> pulumi.Output[Any]:
    """An Output of a value at hand, as the provider host builds one from an output value."""
    future: asyncio.Future[_OutputData[Any]] = asyncio.get_event_loop().create_future()
    future.set_result(_OutputData(resources=resources, value=value, is_known=is_known, is_secret=is_secret))
    return pulumi.Output._from_data(future)


def known_object(value: Any) -> Any:
    """An object another language sent as one output value (a TtlTable's `target` passed on) as the
    mapping of its fields: known fields plain, fields unknown at a preview as unknown Outputs with the
    object's dependencies. Anything else, a secret object and an object wholly unknown, as it is."""
    data = getattr(value, "_data", None) if isinstance(value, pulumi.Output) else None
    if data is None or not data.done() or data.cancelled() or data.exception() is not None:
        return value
    resolved = data.result()
    if resolved.is_secret or not isinstance(resolved.value, dict):
        return value
    return {
        key: _output(resolved.resources, None, False, False) if isinstance(item, Unknown) else item
        for key, item in resolved.value.items()
    }


def whole(component: str, field: str, value: Any) -> Any:
    """An integer field's value: a whole float (how other languages send 10) as int, 10.5 refused."""
    if isinstance(value, float):
        if not value.is_integer():
            v.fail(component, field, f"must be an integer, got {value!r}")
        return int(value)
    return value


def bad_input(error: ValueError) -> InputPropertiesError:
    """A component's "Component: field: what is allowed" as the engine reports bad input: that one
    line, with the field as the property path, instead of a traceback."""
    parts = str(error).split(": ", 2)
    path = parts[1] if len(parts) == 3 else ""
    return InputPropertiesError(str(error), [{"property_path": path, "reason": str(error)}])


def _snake(path: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", path).lower()


class ExpiryProvider(ComponentProvider):
    """ComponentProvider for Expiry: a refined schema, inputs mapped to what the components expect."""

    def __init__(self) -> None:
        super().__init__(COMPONENTS, PACKAGE, version=__version__)
        self.schema = json.dumps(refine_schema(json.loads(self.schema or "{}")))

    def construct(
        self, name: str, resource_type: str, inputs: pulumi.Inputs, options: pulumi.ResourceOptions | None = None
    ) -> ConstructResult:
        if resource_type == f"{PACKAGE}:index:PgCronCleanup" and all(
            inputs.get(_camel(key)) is None for key in VPC_INPUTS
        ):
            raise bad_input(ValueError(f"PgCronCleanup: secret_arn: {DYNAMIC_PROVIDER_REFUSAL}"))
        try:
            return super().construct(name, resource_type, inputs, options)
        except ValueError as error:
            raise bad_input(error) from error
        except ComponentInitError as error:
            if isinstance(error.inner, ValueError):
                raise bad_input(error.inner) from error.inner
            raise

    def map_input_properties(
        self,
        inputs: pulumi.Inputs,
        properties: dict[str, PropertyDefinition],
        mapping: dict[str, str],
        component_name: str,
        property_path: str,
    ) -> pulumi.Inputs:
        given = dict(inputs) if isinstance(inputs, dict) else {}
        watched = self._type_defs.get("WatchedJobArgs")
        target = self._type_defs.get(TABLE_TARGET)
        held: dict[str, Any] = {}
        for schema_name, prop in properties.items():
            value = given.get(schema_name)
            if value is None:
                continue
            field = _snake(f"{property_path}.{schema_name}" if property_path else schema_name)
            if watched is not None and properties is watched.properties and schema_name in SWEEPER_OUTPUTS:
                value = known_value(value)
            if target is not None and properties is target.properties:
                value = known_value(value)
            if target is not None and prop.ref == f"#/types/{PACKAGE}:index:{TABLE_TARGET}":
                value = self._table_target(component_name, field, value, target.properties)
            if prop.type == PropertyType.INTEGER:
                value = whole(component_name, field, value)
                if isinstance(value, pulumi.Output):
                    # The SDK would call int() on it; the component refuses it by name if it needs it.
                    held[mapping[schema_name]], value = value, 0
            given[schema_name] = value
        return {
            **super().map_input_properties(given, properties, mapping, component_name, property_path),
            **held,
        }

    @staticmethod
    def _table_target(
        component_name: str, field: str, value: Any, properties: dict[str, PropertyDefinition]
    ) -> dict[str, Any]:
        """A `table` input as the mapping of its fields; refused, naming the field or key, when it is
        secret, wholly unknown, not an object, or has a key a table target does not have (the SDK
        would drop it unread)."""
        data = getattr(value, "_data", None) if isinstance(value, pulumi.Output) else None
        if (
            data is not None
            and data.done()
            and not data.cancelled()
            and data.exception() is None
            and data.result().is_secret
        ):
            v.fail(
                component_name,
                field,
                "must not be a secret: the function's settings name the table and its key attributes in plain text",
            )
        value = known_object(value)
        if isinstance(value, pulumi.Output):
            v.fail(
                component_name,
                field,
                "must be known at construction (a TtlTable's target): its key attributes, TTL attribute and "
                "expiry index shape the job; only its names and ARNs may be unknown",
            )
        if not isinstance(value, dict):
            v.fail(component_name, field, f"must be a TtlTable's target (an object), got {value!r}")
        for key in value:
            if key not in properties:
                v.fail(component_name, f"{field}.{key}", f"unknown key; a table target has {', '.join(properties)}")
        return value


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def serve() -> None:
    """Run the provider: the engine starts the plugin with its address as the first argument."""
    main(ExpiryProvider(), sys.argv[1:])
