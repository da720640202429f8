"""__main__.py under the mocks, with the config the Pulumi CLI would hand it."""

import runpy

import pulumi
import pytest
from stack_config import ROOT, declared_settings, stack_config

TABLE = "aws:dynamodb/table:Table"


def run_program(harness, config: dict[str, str]) -> None:
    pulumi.runtime.set_all_config(config)
    harness.run(lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__"))


def test_every_declared_setting_has_type_description_and_default():
    for key, spec in declared_settings().items():
        assert spec.get("type") in {"string", "integer", "boolean", "array"}, key
        assert spec.get("description"), key
        assert "default" in spec, key


def test_dev_stack_builds_the_checkpoints_table(pulumi_mocks):
    run_program(pulumi_mocks, stack_config("dev"))
    table = pulumi_mocks.one(TABLE, "checkpoints-table").inputs
    assert table["name"] == "collections-checkpoints-dev"
    assert (table["hashKey"], table["rangeKey"]) == ("thread_id", "checkpoint_id")
    assert table["ttl"] == {"attributeName": "expires_at", "enabled": True}
    assert table["deletionProtectionEnabled"] is False  # Pulumi.dev.yaml turns it off
    names = {g["name"] for g in table["globalSecondaryIndexes"]}
    assert names == {"user_id-last_activity-index", "expiry-index"}


def test_settings_change_the_table(pulumi_mocks):
    run_program(pulumi_mocks, stack_config("dev", environment="qa", expiryIndexShards=0, deletionProtection=True))
    table = pulumi_mocks.one(TABLE, "checkpoints-table").inputs
    assert table["name"] == "collections-checkpoints-qa"
    assert table["deletionProtectionEnabled"] is True
    assert [g["name"] for g in table["globalSecondaryIndexes"]] == ["user_id-last_activity-index"]


def test_missing_setting_names_the_key(pulumi_mocks):
    with pytest.raises(pulumi.ConfigMissingError, match="expiry:environment"):
        run_program(pulumi_mocks, stack_config("dev", drop=("environment",)))
    assert pulumi_mocks.of_type(TABLE) == []


def test_wrong_setting_names_the_key(pulumi_mocks):
    with pytest.raises(pulumi.ConfigTypeError, match="expiry:expiryIndexShards"):
        run_program(pulumi_mocks, stack_config("dev", expiryIndexShards="ten"))
    assert pulumi_mocks.of_type(TABLE) == []


def test_out_of_range_setting_reaches_the_component_check(pulumi_mocks):
    with pytest.raises(ValueError, match=r"TtlTable: expiry_index_shards: must be an integer in 1\.\.100, got 500"):
        run_program(pulumi_mocks, stack_config("dev", expiryIndexShards=500))
    assert pulumi_mocks.of_type(TABLE) == []
