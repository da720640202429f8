"""TtlTable under Pulumi's mocks: every input, every bad input, and the inferred schema."""

from typing import Any

import pulumi
import pytest

from expiry.components.ttl_table import TtlTable, table_spec

TABLE = "aws:dynamodb/table:Table"
COMPONENT = "expiry:index:TtlTable"


def build(harness, args: dict[str, Any], name: str = "orders") -> tuple[TtlTable, dict[str, Any]]:
    table = harness.run(lambda: TtlTable(name, args))
    return table, harness.one(TABLE).inputs


def index_keys(gsi: dict[str, Any]) -> dict[str, str]:
    return {k["keyType"]: k["attributeName"] for k in gsi["keySchemas"]}


def test_defaults_are_safe(pulumi_mocks):
    table, inputs = build(pulumi_mocks, {"hash_key": "id"})
    assert inputs["hashKey"] == "id"
    assert "rangeKey" not in inputs
    assert inputs["attributes"] == [{"name": "id", "type": "S"}]
    assert inputs["ttl"] == {"attributeName": "expires_at", "enabled": True}
    assert inputs["billingMode"] == "PAY_PER_REQUEST"
    assert "readCapacity" not in inputs and "writeCapacity" not in inputs
    assert inputs["pointInTimeRecovery"] == {"enabled": True}
    assert inputs["deletionProtectionEnabled"] is True
    assert inputs["serverSideEncryption"] == {"enabled": False}
    assert inputs["tableClass"] == "STANDARD"
    assert inputs["streamEnabled"] is False
    assert "globalSecondaryIndexes" not in inputs
    assert pulumi_mocks.value(table.stream_arn) is None
    assert pulumi_mocks.value(table.expiry_index_name) is None
    assert pulumi_mocks.value(table.expiry_index_shards) == 0


def test_ttl_can_be_turned_off(pulumi_mocks):
    """The first step of renaming the TTL attribute (DynamoDB refuses a new attribute while TTL is on)."""
    _, inputs = build(pulumi_mocks, {"hash_key": "id", "ttl_attribute": "expires_at", "ttl_enabled": False})
    assert inputs["ttl"] == {"attributeName": "expires_at", "enabled": False}


def test_children_are_named_from_the_component_and_parented(pulumi_mocks):
    build(pulumi_mocks, {"hash_key": "id"}, name="sessions")
    component = pulumi_mocks.one(COMPONENT, "sessions")
    child = pulumi_mocks.one(TABLE)
    assert child.name == "sessions-table"
    assert child.parent == component.urn


def test_outputs_resolve(pulumi_mocks):
    table, inputs = build(
        pulumi_mocks,
        {"hash_key": "pk", "range_key": "sk", "ttl_attribute": "ttl", "stream_view_type": "NEW_AND_OLD_IMAGES"},
    )
    value = pulumi_mocks.value
    assert value(table.table_name) == "orders-table-physical"
    assert value(table.table_arn).startswith("arn:aws:dynamodb:")
    assert value(table.stream_arn).endswith("/stream/2026-01-01T00:00:00.000")
    assert (value(table.hash_key), value(table.range_key), value(table.ttl_attribute)) == ("pk", "sk", "ttl")
    assert inputs["streamEnabled"] is True and inputs["streamViewType"] == "NEW_AND_OLD_IMAGES"


@pytest.mark.parametrize("key_type", ["S", "N", "B"])
def test_key_types(pulumi_mocks, key_type):
    _, inputs = build(
        pulumi_mocks, {"hash_key": "pk", "hash_key_type": key_type, "range_key": "sk", "range_key_type": key_type}
    )
    assert inputs["rangeKey"] == "sk"
    assert inputs["attributes"] == [{"name": "pk", "type": key_type}, {"name": "sk", "type": key_type}]


def test_ttl_attribute_may_be_a_number_key(pulumi_mocks):
    _, inputs = build(
        pulumi_mocks, {"hash_key": "pk", "range_key": "until", "range_key_type": "N", "ttl_attribute": "until"}
    )
    assert inputs["ttl"]["attributeName"] == "until"


def test_global_indexes_and_attributes(pulumi_mocks):
    _, inputs = build(
        pulumi_mocks,
        {
            "hash_key": "thread_id",
            "range_key": "checkpoint_id",
            "attributes": {"user_id": "S", "last_activity": "N", "tenant": "S"},
            "global_indexes": [
                {"name": "user_id-last_activity-index", "hash_key": "user_id", "range_key": "last_activity"},
                {"name": "by-tenant", "hash_key": "tenant", "projection": "KEYS_ONLY"},
                {
                    "name": "by-expiry",
                    "hash_key": "tenant",
                    "range_key": "expires_at",
                    "projection": "INCLUDE",
                    "non_key_attributes": ["status"],
                },
            ],
        },
    )
    gsis = {g["name"]: g for g in inputs["globalSecondaryIndexes"]}
    assert index_keys(gsis["user_id-last_activity-index"]) == {"HASH": "user_id", "RANGE": "last_activity"}
    assert gsis["user_id-last_activity-index"]["projectionType"] == "ALL"
    assert index_keys(gsis["by-tenant"]) == {"HASH": "tenant"}
    assert gsis["by-tenant"]["projectionType"] == "KEYS_ONLY"
    assert gsis["by-expiry"]["projectionType"] == "INCLUDE"
    assert gsis["by-expiry"]["nonKeyAttributes"] == ["status"]
    types = {a["name"]: a["type"] for a in inputs["attributes"]}
    # The TTL attribute, used as an index key without being declared, is defined as a Number.
    assert types == {
        "thread_id": "S",
        "checkpoint_id": "S",
        "user_id": "S",
        "last_activity": "N",
        "tenant": "S",
        "expires_at": "N",
    }


def test_provisioned_capacity_reaches_table_and_indexes(pulumi_mocks):
    _, inputs = build(
        pulumi_mocks,
        {
            "hash_key": "id",
            "billing_mode": "PROVISIONED",
            "read_capacity": 5,
            "write_capacity": 3,
            "attributes": {"a": "S", "b": "S"},
            "global_indexes": [
                {"name": "by-a", "hash_key": "a"},
                {"name": "by-b", "hash_key": "b", "read_capacity": 7, "write_capacity": 2},
            ],
            "expiry_index": True,
        },
    )
    assert (inputs["billingMode"], inputs["readCapacity"], inputs["writeCapacity"]) == ("PROVISIONED", 5, 3)
    capacity = {g["name"]: (g["readCapacity"], g["writeCapacity"]) for g in inputs["globalSecondaryIndexes"]}
    assert capacity == {"by-a": (5, 3), "by-b": (7, 2), "expiry-index": (5, 3)}


def test_protection_recovery_class_and_tags(pulumi_mocks):
    _, inputs = build(
        pulumi_mocks,
        {
            "hash_key": "id",
            "point_in_time_recovery": False,
            "deletion_protection": False,
            "table_class": "STANDARD_INFREQUENT_ACCESS",
            "tags": {"team": "video", "env": "dev"},
            "table_name": "upload-sessions.dev_1",
        },
    )
    assert inputs["pointInTimeRecovery"] == {"enabled": False}
    assert inputs["deletionProtectionEnabled"] is False
    assert inputs["tableClass"] == "STANDARD_INFREQUENT_ACCESS"
    assert inputs["tags"] == {"team": "video", "env": "dev"}
    assert inputs["name"] == "upload-sessions.dev_1"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({}, {"enabled": False}),
        ({"server_side_encryption": True}, {"enabled": True}),
        (
            {"kms_key_arn": "arn:aws:kms:us-east-1:123456789012:key/abc"},
            {"enabled": True, "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/abc"},
        ),
        (
            {"server_side_encryption": True, "kms_key_arn": "arn:aws:kms:us-east-1:123456789012:key/abc"},
            {"enabled": True, "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/abc"},
        ),
    ],
)
def test_server_side_encryption(pulumi_mocks, args, expected):
    _, inputs = build(pulumi_mocks, {"hash_key": "id", **args})
    assert inputs["serverSideEncryption"] == expected


def test_kms_key_may_be_an_output(pulumi_mocks):
    key = "arn:aws:kms:us-east-1:123456789012:key/from-output"
    _, inputs = build(pulumi_mocks, {"hash_key": "id", "kms_key_arn": pulumi.Output.from_input(key)})
    assert inputs["serverSideEncryption"] == {"enabled": True, "kmsKeyArn": key}


@pytest.mark.parametrize("view", ["KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES"])
def test_stream_view_types(pulumi_mocks, view):
    _, inputs = build(pulumi_mocks, {"hash_key": "id", "stream_view_type": view})
    assert (inputs["streamEnabled"], inputs["streamViewType"]) == (True, view)


def test_expiry_index_is_sparse_sharded_keys_only(pulumi_mocks):
    table, inputs = build(pulumi_mocks, {"hash_key": "id", "ttl_attribute": "ttl", "expiry_index": True})
    (gsi,) = inputs["globalSecondaryIndexes"]
    assert gsi["name"] == "expiry-index"
    assert index_keys(gsi) == {"HASH": "expiry_shard", "RANGE": "ttl"}
    assert gsi["projectionType"] == "KEYS_ONLY"
    types = {a["name"]: a["type"] for a in inputs["attributes"]}
    assert types == {"id": "S", "expiry_shard": "S", "ttl": "N"}
    assert pulumi_mocks.value(table.expiry_index_name) == "expiry-index"
    assert pulumi_mocks.value(table.expiry_index_shards) == 10
    assert pulumi_mocks.value(table.expiry_shard_attribute) == "expiry_shard"


def test_expiry_index_shards_and_attribute(pulumi_mocks):
    table, inputs = build(
        pulumi_mocks,
        {"hash_key": "id", "expiry_index": True, "expiry_index_shards": 32, "expiry_shard_attribute": "shard"},
    )
    assert index_keys(inputs["globalSecondaryIndexes"][0]) == {"HASH": "shard", "RANGE": "expires_at"}
    assert pulumi_mocks.value(table.expiry_index_shards) == 32
    assert table.spec.expiry_index_shards == 32 and table.spec.shard_attribute == "shard"


BAD_INPUTS = [
    ({"hash_key": "id", "hash_key_type": "X"}, "hash_key_type: must be one of S, N, B, got 'X'"),
    ({"hash_key": "id", "range_key": "sk", "range_key_type": "STRING"}, "range_key_type: must be one of S, N, B"),
    (
        {"hash_key": "id", "attributes": {"a": "BOOL"}, "global_indexes": [{"name": "by-a", "hash_key": "a"}]},
        "attributes.a: must be one of S, N, B",
    ),
    ({"hash_key": "expires_at"}, "ttl_attribute: 'expires_at' is a key of type S; TTL needs a Number"),
    (
        {"hash_key": "id", "range_key": "ttl", "range_key_type": "B", "ttl_attribute": "ttl"},
        "ttl_attribute: 'ttl' is a key of type B",
    ),
    (
        {"hash_key": "id", "global_indexes": [{"name": "by-user", "hash_key": "user_id"}]},
        "global_indexes[0].hash_key: attribute 'user_id' is not defined",
    ),
    (
        {
            "hash_key": "id",
            "attributes": {"u": "S"},
            "global_indexes": [{"name": "by-u", "hash_key": "u", "range_key": "missing"}],
        },
        "global_indexes[0].range_key: attribute 'missing' is not defined",
    ),
    (
        {
            "hash_key": "id",
            "attributes": {"u": "S"},
            "global_indexes": [{"name": "by-u", "hash_key": "u"}, {"name": "by-u", "hash_key": "u"}],
        },
        "global_indexes: duplicate index names ['by-u']",
    ),
    (
        {
            "hash_key": "id",
            "expiry_index": True,
            "attributes": {"u": "S"},
            "global_indexes": [{"name": "expiry-index", "hash_key": "u"}],
        },
        "duplicate index names ['expiry-index'] ('expiry-index' is the expiry index's)",
    ),
    ({"hash_key": "id", "read_capacity": 5}, "read_capacity: capacity is only allowed with billing_mode PROVISIONED"),
    ({"hash_key": "id", "write_capacity": 5}, "write_capacity: capacity is only allowed with billing_mode PROVISIONED"),
    (
        {
            "hash_key": "id",
            "attributes": {"u": "S"},
            "global_indexes": [{"name": "by-u", "hash_key": "u", "read_capacity": 1}],
        },
        "global_indexes[0].read_capacity: capacity is only allowed with billing_mode PROVISIONED",
    ),
    ({"hash_key": "id", "billing_mode": "PROVISIONED"}, "read_capacity: is required with billing_mode PROVISIONED"),
    (
        {"hash_key": "id", "billing_mode": "PROVISIONED", "read_capacity": 5},
        "write_capacity: is required with billing_mode PROVISIONED",
    ),
    (
        {"hash_key": "id", "billing_mode": "PROVISIONED", "read_capacity": 0, "write_capacity": 1},
        "read_capacity: must be an integer in 1..40000, got 0",
    ),
    ({"hash_key": "id", "billing_mode": "ON_DEMAND"}, "billing_mode: must be one of PAY_PER_REQUEST, PROVISIONED"),
    (
        {"hash_key": "id", "expiry_index": True, "expiry_index_shards": 0},
        "expiry_index_shards: must be an integer in 1..100, got 0",
    ),
    (
        {"hash_key": "id", "expiry_index": True, "expiry_index_shards": 101},
        "expiry_index_shards: must be an integer in 1..100, got 101",
    ),
    ({"hash_key": "id", "expiry_index_shards": 4}, "expiry_index_shards: is only allowed with expiry_index true"),
    (
        {"hash_key": "id", "expiry_index": True, "expiry_shard_attribute": "id"},
        "expiry_shard_attribute: 'id' must be a string attribute of its own",
    ),
    ({"hash_key": "id", "table_name": "t" * 256}, "table_name: must be 3..255 characters of A-Z a-z 0-9 _ . -"),
    ({"hash_key": "id", "table_name": "orders;drop"}, "table_name: must be 3..255 characters"),
    ({"hash_key": "id", "table_name": "my table"}, "table_name: must be 3..255 characters"),
    (
        {
            "hash_key": "id",
            "attributes": {f"a{i}": "S" for i in range(21)},
            "global_indexes": [{"name": f"by-a{i}", "hash_key": f"a{i}"} for i in range(21)],
        },
        "global_indexes: at most 20 indexes, the expiry index included; got 21",
    ),
    (
        {
            "hash_key": "id",
            "expiry_index": True,
            "attributes": {f"a{i}": "S" for i in range(20)},
            "global_indexes": [{"name": f"by-a{i}", "hash_key": f"a{i}"} for i in range(20)],
        },
        "global_indexes: at most 20 indexes, the expiry index included; got 21",
    ),
    (
        {"hash_key": "id", "attributes": {"unused": "S"}},
        "attributes: ['unused'] are not a key of the table or of an index",
    ),
    (
        {
            "hash_key": "id",
            "attributes": {"u": "S"},
            "global_indexes": [{"name": "by-u", "hash_key": "u", "projection": "INCLUDE"}],
        },
        "global_indexes[0].non_key_attributes: is required with projection INCLUDE",
    ),
    (
        {
            "hash_key": "id",
            "attributes": {"u": "S"},
            "global_indexes": [{"name": "by-u", "hash_key": "u", "non_key_attributes": ["x"]}],
        },
        "global_indexes[0].non_key_attributes: is only allowed with projection INCLUDE",
    ),
    (
        {
            "hash_key": "id",
            "attributes": {"u": "S"},
            "global_indexes": [{"name": "by-u", "hash_key": "u", "projection": "SOME"}],
        },
        "global_indexes[0].projection: must be one of ALL, KEYS_ONLY, INCLUDE",
    ),
    (
        {"hash_key": "id", "attributes": {"u": "S"}, "global_indexes": [{"name": "x", "hash_key": "u"}]},
        "global_indexes[0].name: must be 3..255 characters",
    ),
    ({"hash_key": "id", "attributes": {"id": "N"}}, "attributes.id: is a table key of type S, not N"),
    ({"hash_key": "id", "range_key": "id"}, "range_key: must differ from hash_key 'id'"),
    ({"hash_key": "id", "range_key_type": "N"}, "range_key_type: is only allowed with range_key"),
    ({"hash_key": ""}, "hash_key: must be a non-empty string"),
    ({"hash_key": "id", "deletion_protection": "yes"}, "deletion_protection: must be true or false, got 'yes'"),
    ({"hash_key": "id", "table_class": "GLACIER"}, "table_class: must be one of STANDARD, STANDARD_INFREQUENT_ACCESS"),
    ({"hash_key": "id", "ttl_enabled": "no"}, "ttl_enabled: must be true or false, got 'no'"),
    ({"hash_key": "id", "stream_view_type": "ALL"}, "stream_view_type: must be one of KEYS_ONLY, NEW_IMAGE"),
    (
        {"hash_key": "id", "server_side_encryption": False, "kms_key_arn": "arn:aws:kms:us-east-1:1:key/x"},
        "kms_key_arn: a KMS key needs server_side_encryption true",
    ),
    ({"hash_key": "id", "hash_type": "S"}, "args: unknown fields ['hash_type']"),
    ({"hash_key": pulumi.Output.from_input("id")}, "hash_key: must be a plain value known at construction"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=[m.split(":")[0] for _, m in BAD_INPUTS])
def test_bad_input_is_refused_before_anything_registers(pulumi_mocks, args, message):
    with pytest.raises(ValueError, match=r"^TtlTable: ") as error:
        pulumi_mocks.run(lambda: TtlTable("bad", args))
    assert message in str(error.value)
    assert pulumi_mocks.resources == []


def test_spec_is_plain_for_other_components():
    spec = table_spec(
        {"hash_key": "pk", "range_key": "sk", "ttl_attribute": "ttl", "expiry_index": True, "expiry_index_shards": 4}
    )
    assert spec.key_attributes == ("pk", "sk")
    assert (spec.ttl_attribute, spec.expiry_index_name, spec.expiry_index_shards) == ("ttl", "expiry-index", 4)
