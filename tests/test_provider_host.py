"""The plugin folder other languages use (`pulumi package add <repo>/provider`): started as the engine
starts it, its schema read over gRPC (GetSchema), each component constructed through it (Construct)
with inputs as another language's SDK sends them: integers as floats, unknowns at preview, secrets,
outputs of one component passed to another."""

import json
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from fake_engine import Plugin, call_hook, output, secret, unknown
from pulumi.output import Unknown
from pulumi.runtime import rpc
from pulumi.runtime.proto import resource_pb2

from expiry import __version__

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "provider"
TABLE_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/sessions"
TABLE_URN = "urn:pulumi:dev::polyglot::aws:dynamodb/table:Table::sessions"


@pytest.fixture(scope="module")
def plugin() -> Iterator[Plugin]:
    started = Plugin(FOLDER)
    yield started
    started.stop()


@pytest.fixture
def monitor(plugin: Plugin) -> Iterator[Plugin]:
    plugin.monitor.registered.clear()
    plugin.monitor.hooks.clear()
    plugin.monitor.preview = False
    plugin.monitor.hooks_supported = False
    yield plugin


def test_the_folder_is_a_python_plugin_pulumi_can_install():
    assert yaml.safe_load((FOLDER / "PulumiPlugin.yaml").read_text()) == {"runtime": "python"}
    requirements = [
        line for line in (FOLDER / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert requirements == ["..[components]"] and (FOLDER / ".." / "pyproject.toml").is_file()
    assert "serve()" in (FOLDER / "__main__.py").read_text()


def test_schema_over_grpc_has_enums_secrets_and_what_alarms_need(plugin: Plugin):
    schema = plugin.schema()
    assert schema["name"] == "expiry"
    resources = {token.split(":")[-1]: spec for token, spec in schema["resources"].items()}
    assert set(resources) == {"TtlTable", "ScheduledSweeper", "TtlStreamCascade", "PgCronCleanup", "CleanupAlarms"}
    enum = schema["types"]["expiry:index:JobKind"]
    assert {e["value"] for e in enum["enum"]} >= {"ttl-monitor", "sweep", "orphaned-references", "pg-purge"}
    sweeper = resources["ScheduledSweeper"]
    assert sweeper["inputProperties"]["kind"]["$ref"] == "#/types/expiry:index:JobKind"
    assert sweeper["inputProperties"]["architecture"]["$ref"] == "#/types/expiry:index:Architecture"
    assert resources["TtlTable"]["inputProperties"]["billingMode"]["$ref"] == "#/types/expiry:index:BillingMode"
    keep = schema["types"]["expiry:index:S3CascadeArgs"]["properties"]["keepMarker"]
    assert keep["$ref"] == "#/types/expiry:index:KeepMarker"
    assert [e["value"] for e in schema["types"]["expiry:index:KeepMarker"]["enum"]] == ["tag", "none"]
    pg = resources["PgCronCleanup"]["inputProperties"]
    assert pg["password"]["secret"] is True and pg["dsn"]["secret"] is True
    assert "secret" not in pg["host"]
    # A sweeper's outputs are what a watched job takes, by the same names, and the job takes them as Inputs.
    watched = schema["types"]["expiry:index:WatchedJobArgs"]["properties"]
    for prop in ("jobName", "kind", "tableName", "intervalSeconds", "timeoutSeconds", "namespace"):
        assert prop in sweeper["properties"], prop
        assert not watched[prop].get("plain"), prop
    for prop in ("functionName", "deadLetterQueueName", "logGroupName"):
        assert prop in sweeper["properties"], prop


def test_stream_cascade_from_other_languages(monitor: Plugin):
    state = monitor.construct(
        "TtlStreamCascade",
        "cascade",
        {
            "tableName": "sessions",
            "tableArn": TABLE_ARN,
            "streamArn": f"{TABLE_ARN}/stream/2026-01-01T00:00:00.000",
            "keyAttributes": ["uploadSessionId"],
            "ttlAttribute": "ttl",
            "s3": {
                "bucket": "uploads",
                "keyAttribute": "key",
                "keepStatuses": ["uploaded"],
                "statusAttribute": "status",
            },
            "batchSize": 50.0,
        },
    )
    assert "functionName" in state
    (mapping,) = monitor.monitor.of_type("aws:lambda/eventSourceMapping:EventSourceMapping")
    assert mapping.inputs["batchSize"] == 50 and mapping.inputs["functionResponseTypes"] == ["ReportBatchItemFailures"]


def test_ttl_table_takes_integers_as_floats(monitor: Plugin):
    state = monitor.construct(
        "TtlTable",
        "sessions",
        {"hashKey": "id", "expiryIndex": True, "expiryIndexShards": 10.0, "billingMode": "PAY_PER_REQUEST"},
    )
    assert state["expiryIndexShards"] == 10 and state["hashKey"] == "id"
    (table,) = monitor.monitor.of_type("aws:dynamodb/table:Table")
    assert table.inputs["billingMode"] == "PAY_PER_REQUEST"
    assert monitor.monitor.of_type("expiry:index:TtlTable")[0].name == "sessions"


def test_ttl_table_from_other_languages_refuses_a_one_step_ttl_rename_at_preview(monitor: Plugin):
    """The guard hook is registered by the plugin's process, bound to the table and called back there."""
    monitor.monitor.hooks_supported = True
    monitor.construct("TtlTable", "sessions", {"hashKey": "id", "ttlAttribute": "expires_at"})
    (deployed,) = monitor.monitor.of_type("aws:dynamodb/table:Table")
    monitor.monitor.registered.clear()
    monitor.monitor.hooks.clear()  # the next deployment
    monitor.monitor.preview = True
    monitor.construct("TtlTable", "sessions", {"hashKey": "id", "ttlAttribute": "expiresAt"})
    (table,) = monitor.monitor.of_type("aws:dynamodb/table:Table")

    assert table.before_update == ["sessions-ttl-change-guard"]
    hook = monitor.monitor.hooks["sessions-ttl-change-guard"]
    assert hook.on_dry_run

    def called_with(old_inputs) -> str:
        return call_hook(
            hook,
            resource_pb2.ResourceHookRequest(
                urn=TABLE_URN,
                id="sessions",
                name=table.name,
                type=table.type,
                new_inputs=table.wire_inputs,
                old_inputs=old_inputs,
            ),
        )

    refusal = called_with(deployed.wire_inputs)
    assert refusal.startswith("TtlTable sessions: ttl_attribute: TTL is on for 'expires_at'")
    assert called_with(table.wire_inputs) == ""


@pytest.mark.parametrize(
    ("component", "inputs", "message"),
    [
        (
            "TtlTable",
            {"hashKey": "id", "expiryIndex": True, "expiryIndexShards": 10.5},
            "TtlTable: expiry_index_shards: must be an integer, got 10.5",
        ),
        (
            "ScheduledSweeper",
            {
                "kind": "ttl-monitor",
                "schedule": "rate(1 hour)",
                "tableName": "t1",
                "tableArn": TABLE_ARN,
                "timeoutSeconds": 60.5,
            },
            "ScheduledSweeper: timeout_seconds: must be an integer, got 60.5",
        ),
        (
            "ScheduledSweeper",
            {
                "kind": "sweep",
                "schedule": "rate(1 hour)",
                "tableName": "t1",
                "tableArn": TABLE_ARN,
                "s3": {"bucket": "b", "keyAttribute": "k", "markAheadSeconds": 0.5},
            },
            "ScheduledSweeper: s3.mark_ahead_seconds: must be an integer, got 0.5",
        ),
        (
            "ScheduledSweeper",
            {"kind": "sweeep", "schedule": "rate(1 hour)", "tableName": "t1", "tableArn": TABLE_ARN},
            "ScheduledSweeper: kind: must be one of",
        ),
        (
            "PgCronCleanup",
            {
                "table": "attributes",
                "expiryColumn": "ttl",
                "host": "db",
                "database": "app",
                "user": "u",
                "password": secret("pw"),
            },
            "PgCronCleanup: secret_arn: from other languages only VPC mode is available",
        ),
    ],
)
def test_bad_input_through_the_provider_names_the_field_and_registers_nothing(monitor, component, inputs, message):
    with pytest.raises(grpc.RpcError) as raised:
        monitor.construct(component, "bad", inputs)
    assert raised.value.details().startswith(message) and "Traceback" not in raised.value.details()
    assert monitor.monitor.registered == []


def test_scheduled_sweeper_at_preview_with_unknown_table_and_float_integers(monitor: Plugin):
    monitor.monitor.preview = True
    state = monitor.construct(
        "ScheduledSweeper",
        "sweeper",
        {
            "kind": "sweep",
            "schedule": "rate(6 hours)",
            "tableName": unknown(TABLE_URN),
            "tableArn": unknown(TABLE_URN),
            "keyAttributes": ["id"],
            "timeoutSeconds": 120.0,
            "memoryMb": 512.0,
            "workers": 4.0,
            "s3": {
                "bucket": unknown(),
                "keyAttribute": "key",
                "statusAttribute": "status",
                "keepStatuses": ["uploaded"],
                "markAheadSeconds": 0.0,
            },
            "breaker": {"maxShare": 0.25, "ignoreBelow": 20.0},
        },
    )
    (function,) = monitor.monitor.of_type("aws:lambda/function:Function")
    assert function.inputs["timeout"] == 120 and function.inputs["memorySize"] == 512
    assert state["kind"] == "sweep" and state["timeoutSeconds"] == 120 and state["intervalSeconds"] == 6 * 3600
    assert state["namespace"] == "Expiry" and state["jobName"] == "sweeper"


def test_cleanup_alarms_watch_a_sweeper_from_its_outputs(monitor: Plugin):
    sweeper = monitor.construct(
        "ScheduledSweeper",
        "monitor",
        {
            "kind": "ttl-monitor",
            "schedule": "rate(1 hour)",
            "tableName": "sessions",
            "tableArn": TABLE_ARN,
            "keyAttributes": ["id"],
            "timeoutSeconds": 60.0,
            "namespace": "Team",
        },
    )
    urn = sweeper["urn"]
    job = {
        name: output(sweeper[name], urn)
        for name in (
            "jobName",
            "kind",
            "tableName",
            "intervalSeconds",
            "timeoutSeconds",
            "namespace",
            "functionName",
            "deadLetterQueueName",
            "logGroupName",
        )
    }
    monitor.monitor.registered.clear()
    monitor.construct("CleanupAlarms", "alarms", {"jobs": [job], "emailAddresses": ["ops@example.com"]})
    alarms = {a.name: a.inputs for a in monitor.monitor.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    assert alarms and all(name.startswith("alarms-monitor-") for name in alarms), sorted(alarms)
    dead_letters = [a for a in alarms.values() if a.get("dimensions", {}).get("QueueName")]
    assert dead_letters and dead_letters[0]["dimensions"]["QueueName"] == sweeper["deadLetterQueueName"]
    namespaces = {a.get("namespace") for a in alarms.values()} | {
        q.get("metric", {}).get("namespace") for a in alarms.values() for q in a.get("metricQueries", [])
    }
    assert "Team" in namespaces


def test_cleanup_alarms_refuse_a_job_name_unknown_at_construction(monitor: Plugin):
    monitor.monitor.preview = True
    job = {"jobName": unknown(), "kind": "sweep", "tableName": "t", "intervalSeconds": 3600.0, "timeoutSeconds": 60.0}
    with pytest.raises(grpc.RpcError) as raised:
        monitor.construct("CleanupAlarms", "alarms", {"jobs": [job]})
    assert "CleanupAlarms: jobs[0].job_name: must be a plain value known at construction" in raised.value.details()
    assert monitor.monitor.registered == []


def test_pg_cron_cleanup_from_other_languages_in_vpc_mode(monitor: Plugin):
    state = monitor.construct(
        "PgCronCleanup",
        "attributes-purge",
        {
            "table": "attributes",
            "expiryColumn": "ttl_timestamp",
            "batchSize": 1000.0,
            "host": "db.internal",
            "database": "app",
            "port": 5432.0,
            "secretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db",
            "subnetIds": ["subnet-a"],
            "securityGroupIds": ["sg-a"],
        },
    )
    assert state["jobName"] == "attributes-purge"
    assert monitor.monitor.of_type("pulumi-python:dynamic/expiry:PgCronJob") == []
    (invocation,) = monitor.monitor.of_type("aws:lambda/invocation:Invocation")
    assert '"batch_size": 1000' in invocation.inputs["input"] and '"port": 5432' in invocation.inputs["input"]


SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db"
LAYER_ARN = "arn:aws:lambda:us-east-1:123456789012:layer:psycopg:1"
SWEEPER = {
    "kind": "ttl-monitor",
    "schedule": "rate(1 hour)",
    "tableName": "t1",
    "tableArn": TABLE_ARN,
    "keyAttributes": ["id"],
}
SWEEPER_KINDS = {
    "sweep": {"s3": {"bucket": "b", "keyAttribute": "key"}},
    "orphaned-references": {
        "keyAttributes": ["id", "sk"],
        "references": {
            "hashValue": "tokens",
            "ownerAttribute": "data",
            "indexes": [{"rangePrefix": "idx:", "target": ["{owner}", "t:{token}"]}],
        },
    },
    "pg-purge": {
        "postgres": {"host": "db", "database": "app", "secretArn": SECRET_ARN},
        "purge": {"expiryColumn": "ttl"},
        "psycopgLayerArn": LAYER_ARN,
    },
    "pg-monitor": {
        "postgres": {"host": "db", "database": "app", "secretArn": SECRET_ARN},
        "purge": {"expiryColumn": "ttl"},
        "psycopgLayerArn": LAYER_ARN,
    },
}
CASCADE = {
    "tableName": "sessions",
    "tableArn": TABLE_ARN,
    "streamArn": f"{TABLE_ARN}/stream/2026-01-01T00:00:00.000",
    "keyAttributes": ["id"],
}
PG_VPC = {
    "table": "attributes",
    "expiryColumn": "ttl",
    "host": "db",
    "database": "app",
    "secretArn": SECRET_ARN,
    "subnetIds": ["subnet-a"],
    "securityGroupIds": ["sg-a"],
    "psycopgLayerArn": LAYER_ARN,
}
WATCHED = {"jobName": "j", "tableName": "t", "intervalSeconds": 3600.0, "timeoutSeconds": 60.0}
# (owner, property) of every enum the schema offers -> the component and inputs that use a value of it
ENUM_USES: dict[tuple[str, str], Callable[[str], tuple[str, dict[str, Any]]]] = {
    ("ScheduledSweeper", "kind"): lambda value: (
        "ScheduledSweeper",
        {**SWEEPER, "kind": value, **SWEEPER_KINDS.get(value, {})},
    ),
    ("ScheduledSweeper", "runtime"): lambda value: ("ScheduledSweeper", {**SWEEPER, "runtime": value}),
    ("ScheduledSweeper", "architecture"): lambda value: ("ScheduledSweeper", {**SWEEPER, "architecture": value}),
    ("ReferencesArgs", "ownerFormat"): lambda value: (
        "ScheduledSweeper",
        {
            **SWEEPER,
            **SWEEPER_KINDS["orphaned-references"],
            "kind": "orphaned-references",
            "references": {**SWEEPER_KINDS["orphaned-references"]["references"], "ownerFormat": value},
        },
    ),
    ("S3CascadeArgs", "keepMarker"): lambda value: (
        "TtlStreamCascade",
        {**CASCADE, "s3": {"bucket": "b", "keyAttribute": "key", "keepMarker": value}},
    ),
    ("PgCronCleanup", "architecture"): lambda value: ("PgCronCleanup", {**PG_VPC, "architecture": value}),
    ("TtlTable", "billingMode"): lambda value: (
        "TtlTable",
        {"hashKey": "id", "billingMode": value}
        | ({"readCapacity": 5.0, "writeCapacity": 5.0} if value == "PROVISIONED" else {}),
    ),
    ("TtlTable", "tableClass"): lambda value: ("TtlTable", {"hashKey": "id", "tableClass": value}),
    ("TtlTable", "streamViewType"): lambda value: ("TtlTable", {"hashKey": "id", "streamViewType": value}),
    ("TtlTable", "hashKeyType"): lambda value: ("TtlTable", {"hashKey": "id", "hashKeyType": value}),
    ("TtlTable", "rangeKeyType"): lambda value: (
        "TtlTable",
        {"hashKey": "id", "rangeKey": "sk", "rangeKeyType": value},
    ),
    ("GlobalIndexArgs", "projection"): lambda value: (
        "TtlTable",
        {
            "hashKey": "id",
            "attributes": {"owner": "S"},
            "globalIndexes": [
                {"name": "by-owner", "hashKey": "owner", "projection": value}
                | ({"nonKeyAttributes": ["status"]} if value == "INCLUDE" else {})
            ],
        },
    ),
    ("WatchedJobArgs", "kind"): lambda value: ("CleanupAlarms", {"jobs": [{**WATCHED, "kind": value}]}),
}


def test_every_enum_value_the_schema_offers_is_accepted_where_it_is_offered(monitor: Plugin):
    schema = monitor.schema()
    enums = {f"#/types/{token}": spec["enum"] for token, spec in schema["types"].items() if "enum" in spec}
    owners = {token.split(":")[-1]: spec["inputProperties"] for token, spec in schema["resources"].items()}
    owners |= {token.split(":")[-1]: spec.get("properties", {}) for token, spec in schema["types"].items()}
    offered = {
        (owner, name): [entry["value"] for entry in enums[prop["$ref"]]]
        for owner, props in owners.items()
        for name, prop in props.items()
        if prop.get("$ref") in enums
    }
    assert set(offered) == set(ENUM_USES)
    refused = []
    for use, values in offered.items():
        for value in values:
            component, inputs = ENUM_USES[use](value)
            try:
                monitor.construct(component, "enum", inputs)
            except grpc.RpcError as error:
                refused.append(f"{use} {value!r}: {error.details()}")
            monitor.monitor.registered.clear()
    assert refused == []


def descriptions(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                yield path, value
            else:
                yield from descriptions(value, f"{path}/{key}")
    elif isinstance(node, list):
        for position, item in enumerate(node):
            yield from descriptions(item, f"{path}[{position}]")


def test_descriptions_are_clean_text_without_docstring_indentation(plugin: Plugin):
    found = list(descriptions(plugin.schema()))
    assert len(found) > 100
    unclean = [
        (path, text)
        for path, text in found
        if not text.split("\n")[0].strip() or any(line != line.strip() for line in text.split("\n"))
    ]
    assert unclean == []


def test_schema_states_the_package_as_pyproject_does(plugin: Plugin):
    schema = plugin.schema()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert schema["description"] == project["description"]
    assert schema["license"] == project["license"] == "Apache-2.0"
    assert "Apache License\n                           Version 2.0" in (ROOT / "LICENSE").read_text()
    assert set(project["keywords"]) <= set(schema["keywords"])
    assert {"category/utility", "kind/component"} <= set(schema["keywords"])
    assert schema["version"] == __version__


def resent(value: Any) -> Any:
    """A state value as an SDK sends it on: an unknown (a preview) as the engine's unknown sentinel."""
    if isinstance(value, Unknown):
        return rpc.UNKNOWN
    if isinstance(value, dict):
        return {key: resent(item) for key, item in value.items()}
    if isinstance(value, list):
        return [resent(item) for item in value]
    return value


def test_schema_describes_the_table_target_once_for_both_directions(plugin: Plugin):
    """Issue 19: TtlTable's `target` output is the type ScheduledSweeper's and TtlStreamCascade's `table`
    input takes, every field an Input (the type is an output too), documented, with the required ones."""
    schema = plugin.schema()
    target = schema["types"]["expiry:index:TableTarget"]
    assert target["type"] == "object" and target["description"]
    assert set(target["properties"]) == {
        "tableName",
        "tableArn",
        "keyAttributes",
        "ttlAttribute",
        "streamArn",
        "streamViewType",
        "expiryIndexName",
        "expiryIndexShards",
        "expiryShardAttribute",
    }
    assert set(target["required"]) == {"tableName", "tableArn", "keyAttributes", "ttlAttribute"}
    for name, prop in target["properties"].items():
        assert prop["description"] and "plain" not in prop and "plain" not in prop.get("items", {}), name
    keys = target["properties"]["keyAttributes"]
    assert keys["type"] == "array" and keys["items"]["type"] == "string"
    assert target["properties"]["expiryIndexShards"]["type"] == "integer"
    resources = {token.split(":")[-1]: spec for token, spec in schema["resources"].items()}
    ref = "#/types/expiry:index:TableTarget"
    assert resources["TtlTable"]["properties"]["target"]["$ref"] == ref
    assert "target" in resources["TtlTable"]["required"]
    for component in ("ScheduledSweeper", "TtlStreamCascade"):
        table = resources[component]["inputProperties"]["table"]
        assert table["$ref"] == ref and "plain" not in table and "TtlTable's `target`" in table["description"]
        assert "table" not in resources[component].get("requiredInputs", [])
    assert set(resources["ScheduledSweeper"]["requiredInputs"]) == {"kind", "schedule"}
    assert resources["TtlStreamCascade"].get("requiredInputs", []) == []


def test_a_table_target_wires_a_sweeper_and_a_cascade_from_other_languages(monitor: Plugin):
    table = monitor.construct(
        "TtlTable",
        "sessions",
        {"hashKey": "id", "ttlAttribute": "ttl", "expiryIndex": True, "streamViewType": "NEW_AND_OLD_IMAGES"},
    )
    target = table["target"]
    assert target["tableName"] == table["tableName"] and target["tableArn"] == table["tableArn"]
    assert target["keyAttributes"] == ["id"] and target["ttlAttribute"] == "ttl"
    assert target["expiryIndexName"] == "expiry-index" and target["expiryIndexShards"] == 10
    assert target["streamViewType"] == "NEW_AND_OLD_IMAGES"
    assert "streamArn" not in table and "streamArn" not in target  # the fake engine computes no stream ARN
    monitor.monitor.registered.clear()
    # As SDKs pass a component's output on: one output value, with the table as its dependency.
    monitor.construct(
        "ScheduledSweeper",
        "sweeper",
        {"kind": "sweep", "schedule": "rate(1 hour)", "table": output(target, table["urn"]), "workers": 8.0},
    )
    (function,) = monitor.monitor.of_type("aws:lambda/function:Function")
    job = json.loads(function.inputs["environment"]["variables"]["EXPIRY_JOB"])
    assert (
        job["table_name"] == target["tableName"] and job["key_attributes"] == ["id"] and job["ttl_attribute"] == "ttl"
    )
    index = ("expiry_index_name", "expiry_index_shards", "expiry_shard_attribute")
    assert [job[key] for key in index] == ["expiry-index", 10, "expiry_shard"]
    policies = {r.name: r.inputs["policy"] for r in monitor.monitor.of_type("aws:iam/rolePolicy:RolePolicy")}
    assert target["tableArn"] in policies["sweeper-policy"]
    monitor.monitor.registered.clear()
    stream = f"{target['tableArn']}/stream/2026-01-01T00:00:00.000"
    given = output({**target, "streamArn": stream}, table["urn"])
    monitor.construct("TtlStreamCascade", "cascade", {"table": given, "s3": CASCADE_S3})
    (mapping,) = monitor.monitor.of_type("aws:lambda/eventSourceMapping:EventSourceMapping")
    assert mapping.inputs["eventSourceArn"] == stream


def test_a_table_target_at_preview_with_unknown_names(monitor: Plugin):
    """A new table at a preview: its names and ARNs unknown inside a known target, as the SDKs send it
    on (one output value), or field by field (each an output value, as YAML may)."""
    monitor.monitor.preview = True
    table = monitor.construct("TtlTable", "sessions", {"hashKey": "id", "streamViewType": "OLD_IMAGE"})
    target = table["target"]
    assert isinstance(target["tableName"], Unknown) and target["keyAttributes"] == ["id"]
    fields = {key: unknown(table["urn"]) if isinstance(item, Unknown) else item for key, item in target.items()}
    for given in (output(resent(target), table["urn"]), fields):
        state = monitor.construct(
            "ScheduledSweeper", "sweeper", {"kind": "ttl-monitor", "schedule": "rate(1 hour)", "table": given}
        )
        assert state["kind"] == "ttl-monitor" and isinstance(state["tableName"], Unknown)
        monitor.construct("TtlStreamCascade", "cascade", {"table": given, "s3": CASCADE_S3})
        monitor.monitor.registered.clear()


CASCADE_S3 = {"bucket": "uploads", "keyAttribute": "key"}
TARGET = {"tableName": "t1", "tableArn": TABLE_ARN, "keyAttributes": ["id"], "ttlAttribute": "ttl"}
SWEEP = {"kind": "ttl-monitor", "schedule": "rate(1 hour)"}
TABLE_REFUSALS = [
    (
        "ScheduledSweeper",
        {**SWEEP, "table": TARGET, "tableName": "t1"},
        "ScheduledSweeper: table: give either table or table_name, table_arn, key_attributes, ttl_attribute, "
        "expiry_index_name, expiry_index_shards, expiry_shard_attribute, not both (also given: table_name)",
    ),
    (
        "ScheduledSweeper",
        {**SWEEP, "table": {**TARGET, "tableNme": "t1"}},
        "ScheduledSweeper: table.tableNme: unknown key; a table target has tableName, tableArn, keyAttributes",
    ),
    (
        "ScheduledSweeper",
        {**SWEEP, "table": unknown(TABLE_URN)},
        "ScheduledSweeper: table: must be known at construction (a TtlTable's target)",
    ),
    ("ScheduledSweeper", {**SWEEP, "table": "t1"}, "ScheduledSweeper: table: must be a TtlTable's target"),
    (
        "ScheduledSweeper",
        {**SWEEP, "table": secret(TARGET)},
        "ScheduledSweeper: table: must not be a secret: the function's settings name the table",
    ),
    (
        "ScheduledSweeper",
        {**SWEEP, "table": {**TARGET, "expiryIndexName": "expiry-index", "expiryIndexShards": 2.5}},
        "ScheduledSweeper: table.expiry_index_shards: must be an integer, got 2.5",
    ),
    (
        "ScheduledSweeper",
        {**SWEEP, "table": {**TARGET, "keyAttributes": unknown(TABLE_URN)}},
        "ScheduledSweeper: table.key_attributes: must be a plain value known at construction",
    ),
    ("ScheduledSweeper", SWEEP, "ScheduledSweeper: table_name: is required (or give table, a TtlTable's target)"),
    (
        "TtlStreamCascade",
        {"table": {**TARGET, "streamArn": f"{TABLE_ARN}/stream/x"}, "streamArn": "s", "s3": CASCADE_S3},
        "TtlStreamCascade: table: give either table or table_name, table_arn, stream_arn, key_attributes, "
        "ttl_attribute, not both (also given: stream_arn)",
    ),
    (
        "TtlStreamCascade",
        {"table": {**TARGET, "streamArn": "s", "streamViewType": "KEYS_ONLY"}, "s3": CASCADE_S3},
        "TtlStreamCascade: stream_arn: the table's stream must carry old images",
    ),
    (
        "TtlStreamCascade",
        {"table": {**TARGET, "streamArn": "s", "colour": "red"}, "s3": CASCADE_S3},
        "TtlStreamCascade: table.colour: unknown key",
    ),
]


@pytest.mark.parametrize(("component", "inputs", "message"), TABLE_REFUSALS)
def test_a_bad_table_input_is_refused_by_name_and_registers_nothing(monitor, component, inputs, message):
    with pytest.raises(grpc.RpcError) as raised:
        monitor.construct(component, "bad", inputs)
    assert raised.value.details().startswith(message), raised.value.details()
    assert "Traceback" not in raised.value.details()
    assert monitor.monitor.registered == []
