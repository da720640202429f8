"""The Expiry stack: builds the cleanup infrastructure of one environment from stack config."""

import pulumi

from components.ttl_table import TtlTable

config = pulumi.Config()
environment = config.require("environment")
shards = config.require_int("expiryIndexShards")
expiry_index: dict = {"expiry_index": True, "expiry_index_shards": shards} if shards else {}

checkpoints = TtlTable(
    "checkpoints",
    {
        "table_name": f"collections-checkpoints-{environment}",
        "hash_key": "thread_id",
        "range_key": "checkpoint_id",
        "ttl_attribute": config.require("checkpointsTtlAttribute"),
        "attributes": {"user_id": "S", "last_activity": "N"},
        "global_indexes": [
            {"name": "user_id-last_activity-index", "hash_key": "user_id", "range_key": "last_activity"}
        ],
        "deletion_protection": config.require_bool("deletionProtection"),
        "point_in_time_recovery": config.require_bool("pointInTimeRecovery"),
        "tags": {"project": "expiry", "environment": environment, "system": "chat-checkpoints"},
        **expiry_index,
    },
)

pulumi.export("checkpoints_table_name", checkpoints.table_name)
pulumi.export("checkpoints_table_arn", checkpoints.table_arn)
