"""Pulumi's component analyzer infers a schema for every component, so that TypeScript, Go and YAML
stacks can use them (`pulumi package add`): typed args, a docstring per field, typed outputs."""

from pulumi.provider.experimental.analyzer import Analyzer
from pulumi.provider.experimental.schema import generate_schema

from expiry.components.cleanup_alarms import CleanupAlarms
from expiry.components.pg_cron_cleanup import PgCronCleanup
from expiry.components.scheduled_sweeper import ScheduledSweeper
from expiry.components.stream_cascade import TtlStreamCascade
from expiry.components.ttl_table import TtlTable

COMPONENTS = (TtlTable, ScheduledSweeper, TtlStreamCascade, PgCronCleanup, CleanupAlarms)


def schema():
    result = Analyzer("expiry").analyze(list(COMPONENTS))
    return generate_schema(
        "expiry",
        "0.1.0",
        None,
        result["component_definitions"],
        result["type_definitions"],
        list(result["dependencies"]),
    )


def test_every_component_has_a_schema_with_documented_inputs_and_outputs():
    found = schema()
    assert set(found.resources) == {f"expiry:index:{c.__name__}" for c in COMPONENTS}
    for token, resource in found.resources.items():
        assert resource.is_component and resource.description, token
        assert resource.properties, token
        for name, prop in {**resource.input_properties, **resource.properties}.items():
            assert prop.description, f"{token}.{name} has no description"


def test_required_inputs_and_nested_types():
    found = schema()
    required = {token.split(":")[-1]: set(r.required_inputs) for token, r in found.resources.items()}
    assert required == {
        "TtlTable": {"hashKey"},
        # The table comes whole (`table`, a TtlTable's target) or field by field: the components check which.
        "ScheduledSweeper": {"kind", "schedule"},
        "TtlStreamCascade": set(),
        "PgCronCleanup": {"table"},  # and expiry_column or expiry_expression: the component checks which
        "CleanupAlarms": {"jobs"},
    }
    table = found.resources["expiry:index:TtlTable"]
    assert set(table.required) >= {"tableName", "tableArn", "ttlAttribute", "hashKey", "expiryIndexShards"}
    assert set(found.types["expiry:index:GlobalIndexArgs"].required) == {"name", "hashKey"}
    for nested in (
        "S3CascadeArgs",
        "StuckUploadsArgs",
        "OrphanedObjectsArgs",
        "ReferencesArgs",
        "PostgresArgs",
        "PurgeArgs",
        "WatchedJobArgs",
        "TableTarget",
    ):
        assert f"expiry:index:{nested}" in found.types, nested
    assert "jobId" in found.resources["expiry:index:PgCronCleanup"].properties
    assert "dashboardUrl" in found.resources["expiry:index:CleanupAlarms"].properties


def test_a_ttl_tables_target_is_the_table_input_of_the_components_that_work_on_it():
    found = schema()
    ref = "#/types/expiry:index:TableTarget"
    assert found.resources["expiry:index:TtlTable"].properties["target"].ref == ref
    for component in ("ScheduledSweeper", "TtlStreamCascade"):
        table = found.resources[f"expiry:index:{component}"].input_properties["table"]
        assert table.ref == ref and not table.plain, component
    target = found.types["expiry:index:TableTarget"]
    assert set(target.required) == {"tableName", "tableArn", "keyAttributes", "ttlAttribute"}
    assert all(prop.description for prop in target.properties.values())
