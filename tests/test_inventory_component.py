"""ScheduledSweeper's orphaned_objects.inventory under Pulumi's mocks: the S3 Inventory configured on
the uploads bucket, the sweep role's exact reads of the reports, the job it hands the function, and
the destination bucket policy the user adds (components/inventory.py)."""

import json
from typing import Any

import pytest

from expiry.components.inventory import destination_bucket_policy
from expiry.components.scheduled_sweeper import ScheduledSweeper

INVENTORY_TYPE = "aws:s3/inventory:Inventory"
POLICY = "aws:iam/rolePolicy:RolePolicy"
FUNCTION = "aws:lambda/function:Function"
TABLE_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/upload-sessions"
S3 = {"bucket": "uploads-bucket", "key_attribute": "key", "object_prefix": "uploads/"}
INVENTORY = {"destination_bucket": "acme-inventory", "destination_prefix": "reports", "inventory_id": "orphans"}
ORPHANS = {"prefix": "uploads/videos/", "id_pattern": "^uploads/videos/([^/]+)/", "inventory": INVENTORY}


@pytest.fixture(autouse=True)
def build_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPIRY_BUILD_DIR", str(tmp_path / "build"))


def build(harness: Any, orphans: dict[str, Any] | None = ORPHANS) -> ScheduledSweeper:
    args: dict[str, Any] = {
        "kind": "sweep",
        "schedule": "rate(6 hours)",
        "table_name": "upload-sessions",
        "table_arn": TABLE_ARN,
        "key_attributes": ["uploadSessionId"],
        "ttl_attribute": "ttl",
        "s3": S3,
    }
    if orphans is not None:
        args["orphaned_objects"] = orphans
    return harness.run(lambda: ScheduledSweeper("video", args))


def statements(harness: Any) -> dict[str, dict[str, Any]]:
    policy = json.loads(harness.one(POLICY, "video-policy").inputs["policy"])
    return {s["Sid"]: s for s in policy["Statement"]}


def test_the_uploads_bucket_gets_a_daily_csv_inventory_of_the_orphan_prefix(pulumi_mocks):
    sweeper = build(pulumi_mocks)
    inventory = pulumi_mocks.one(INVENTORY_TYPE, "video-inventory")
    component = pulumi_mocks.one("expiry:index:ScheduledSweeper", "video")
    assert inventory.parent == component.urn and sweeper.inventory is not None
    assert inventory.inputs == {
        "bucket": "uploads-bucket",
        "name": "orphans",
        "includedObjectVersions": "Current",
        "schedule": {"frequency": "Daily"},
        "filter": {"prefix": "uploads/videos/"},
        "optionalFields": ["Size", "LastModifiedDate"],
        "destination": {
            "bucket": {"bucketArn": "arn:aws:s3:::acme-inventory", "format": "CSV", "prefix": "reports"},
        },
    }


def test_the_role_reads_exactly_the_reports_of_this_configuration(pulumi_mocks):
    build(pulumi_mocks)
    found = statements(pulumi_mocks)
    assert found["InventoryReports"] == {
        "Sid": "InventoryReports",
        "Effect": "Allow",
        "Action": ["s3:GetObject"],
        "Resource": ["arn:aws:s3:::acme-inventory/reports/uploads-bucket/orphans/*"],
    }
    assert found["InventoryFolders"] == {
        "Sid": "InventoryFolders",
        "Effect": "Allow",
        "Action": ["s3:ListBucket"],
        "Resource": ["arn:aws:s3:::acme-inventory"],
        "Condition": {"StringLike": {"s3:prefix": ["reports/uploads-bucket/orphans/*"]}},
    }
    # Nothing else of the destination bucket: no write, no delete, no other prefix.
    others = [s for sid, s in found.items() if sid not in ("InventoryReports", "InventoryFolders")]
    assert not any("acme-inventory" in json.dumps(s) for s in others)


def test_the_function_reads_the_setting_it_was_given(pulumi_mocks):
    build(pulumi_mocks)
    job = json.loads(pulumi_mocks.one(FUNCTION).inputs["environment"]["variables"]["EXPIRY_JOB"])
    assert job["orphaned_objects"]["inventory"] == INVENTORY


def test_without_the_setting_there_is_no_inventory_nor_its_grants(pulumi_mocks):
    sweeper = build(pulumi_mocks, {k: v for k, v in ORPHANS.items() if k != "inventory"})
    assert sweeper.inventory is None and not pulumi_mocks.of_type(INVENTORY_TYPE)
    assert not {"InventoryReports", "InventoryFolders"} & set(statements(pulumi_mocks))


@pytest.mark.parametrize(
    "inventory, field",
    [
        ({**INVENTORY, "destination_bucket": "Bad_Bucket"}, "orphaned_objects.inventory.destination_bucket"),
        ({**INVENTORY, "frequency": "Weekly"}, "orphaned_objects.inventory: unknown settings ['frequency']"),
        ({k: v for k, v in INVENTORY.items() if k != "inventory_id"}, "orphaned_objects.inventory.inventory_id"),
    ],
)
def test_a_bad_setting_is_refused_naming_the_field_before_anything_registers(pulumi_mocks, inventory, field):
    with pytest.raises(ValueError, match="ScheduledSweeper") as refused:
        build(pulumi_mocks, {**ORPHANS, "inventory": inventory})
    assert field in str(refused.value)
    assert not pulumi_mocks.of_type(INVENTORY_TYPE) and not pulumi_mocks.of_type(FUNCTION)


def test_the_destination_policy_lets_only_this_bucket_of_this_account_write_reports():
    policy = destination_bucket_policy("acme-inventory", "reports", "uploads-bucket", "123456789012")
    assert policy["Statement"] == [
        {
            "Sid": "InventoryReports",
            "Effect": "Allow",
            "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "s3:PutObject",
            "Resource": "arn:aws:s3:::acme-inventory/reports/*",
            "Condition": {
                "ArnLike": {"aws:SourceArn": "arn:aws:s3:::uploads-bucket"},
                "StringEquals": {"aws:SourceAccount": "123456789012", "s3:x-amz-acl": "bucket-owner-full-control"},
            },
        }
    ]
    whole = destination_bucket_policy("acme-inventory", "", "uploads-bucket", "123456789012", "aws-us-gov")
    assert whole["Statement"][0]["Resource"] == "arn:aws-us-gov:s3:::acme-inventory/*"
