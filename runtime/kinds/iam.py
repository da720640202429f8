"""IAM statements the kinds of job share: a statement, the ARNs a policy names, and the reads that
find expired items and an object's owners. Pure: no pulumi."""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from expiry.runtime.jobs.config import Inventory, Job


@dataclass(frozen=True)
class Arns:
    """The resolved ARNs and names a policy names exactly."""

    table: str | None
    log_group: str
    bucket: str | None = None
    target_table: str | None = None
    secret: str | None = None
    budget_table: str | None = None


def statement(sid: str, actions: list[str], resources: list[str], condition: dict | None = None) -> dict[str, Any]:
    statement: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def expired_item_reads(job: "Job", arns: Arns) -> tuple[set[str], list[dict[str, Any]]]:
    """How a job finds expired items: a Query of its expiry index, else a Scan of the table."""
    if job.expiry_index:
        return set(), [statement("ExpiryIndex", ["dynamodb:Query"], [f"{arns.table}/index/{job.expiry_index.name}"])]
    return {"dynamodb:Scan"}, []


def owner_reads(job: "Job", table_arn: str) -> tuple[set[str], list[dict[str, Any]]]:
    """What the ownership rule reads before an object is deleted: the items naming it (a Query on the
    owner index, else a consistent Scan of the table), then a consistent GetItem of each released one.
    Returns the table's actions and any other statement."""
    assert job.s3 is not None
    if job.s3.owner_index:
        index = f"{table_arn}/index/{job.s3.owner_index}"
        return {"dynamodb:GetItem"}, [statement("OwnerIndex", ["dynamodb:Query"], [index])]
    return {"dynamodb:GetItem", "dynamodb:Scan"}, []


def list_prefix(bucket_arn: str, prefix: str) -> dict[str, Any]:
    """ListBucket under ``prefix``: listing it, and a 404, not S3's 403, for a HeadObject of a missing key."""
    condition = {"StringLike": {"s3:prefix": [f"{prefix}*"]}} if prefix else None
    return statement("ListPrefix", ["s3:ListBucket"], [bucket_arn], condition)


def inventory_reads(inventory: "Inventory", source_bucket: str, table_arn: str) -> list[dict[str, Any]]:
    """What the orphan pass reads of the S3 Inventory reports, in the destination bucket: the listing
    of the configuration's report folders (to find the newest) and the manifests and data files."""
    partition = table_arn.split(":")[1] if table_arn.startswith("arn:") else "aws"
    bucket_arn = f"arn:{partition}:s3:::{inventory.destination_bucket}"
    reports = inventory.reports_prefix(source_bucket)
    return [
        statement("InventoryReports", ["s3:GetObject"], [f"{bucket_arn}/{reports}*"]),
        statement("InventoryFolders", ["s3:ListBucket"], [bucket_arn], {"StringLike": {"s3:prefix": [f"{reports}*"]}}),
    ]
