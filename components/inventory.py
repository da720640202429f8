"""The S3 Inventory a sweeper's orphan pass reads instead of listing a large bucket: the daily
report's configuration on the uploads bucket, and the bucket policy its destination needs.

The destination bucket is the user's: the component configures the report on the uploads bucket and
reads it, and creates no policy on the destination. A bucket has one policy, so a policy set here
would replace whatever the owner keeps there (and fight their own BucketPolicy on every update);
``destination_bucket_policy`` gives the statement to add to it (AWS documents it with aws:SourceArn
and aws:SourceAccount, so only the uploads bucket of this account can write reports there)."""

from typing import Any, NotRequired, TypedDict

import pulumi
import pulumi_aws as aws

from expiry.runtime.jobs.config import Job

# What the orphan pass reads of each object besides Bucket and Key, which every report has.
OPTIONAL_FIELDS = ["Size", "LastModifiedDate"]


class InventoryArgs(TypedDict):
    """A daily S3 Inventory report of the uploads bucket, read by the orphan pass instead of listing the
    bucket (for buckets too large to list every run). The component configures the report; the
    destination bucket and its policy are yours."""

    destination_bucket: str
    """Bucket the reports are written to; its policy must let s3.amazonaws.com write them (see the docs)."""
    inventory_id: str
    """Name of the inventory configuration on the uploads bucket, 1..64 of A-Z a-z 0-9 . _ -."""
    destination_prefix: NotRequired[str]
    """Key prefix of the reports in the destination bucket, without a leading or trailing / (default: none)."""
    max_age_hours: NotRequired[int]
    """Read a report at most this old, 24..720 (default 48); without one, the pass lists the bucket."""


def _partition(arn: str | None) -> str:
    return arn.split(":")[1] if arn and arn.startswith("arn:") else "aws"


def bucket_inventory(
    name: str, args: dict[str, Any], job: Job, opts: pulumi.ResourceOptions
) -> aws.s3.Inventory | None:
    """The uploads bucket's daily CSV inventory of current versions under the orphan pass's prefix,
    written to the destination the job reads; None when the job reads no inventory."""
    inventory = job.orphaned_objects.inventory if job.orphaned_objects else None
    if inventory is None or job.orphaned_objects is None:
        return None
    prefix = job.orphaned_objects.prefix
    destination = pulumi.Output.from_input(args.get("table_arn")).apply(
        lambda arn: f"arn:{_partition(arn)}:s3:::{inventory.destination_bucket}"
    )
    return aws.s3.Inventory(
        f"{name}-inventory",
        bucket=(args.get("s3") or {})["bucket"],
        name=inventory.inventory_id,
        included_object_versions="Current",
        schedule=aws.s3.InventoryScheduleArgs(frequency="Daily"),
        filter=aws.s3.InventoryFilterArgs(prefix=prefix) if prefix else None,
        optional_fields=OPTIONAL_FIELDS,
        destination=aws.s3.InventoryDestinationArgs(
            bucket=aws.s3.InventoryDestinationBucketArgs(
                bucket_arn=destination, format="CSV", prefix=inventory.destination_prefix or None
            )
        ),
        opts=opts,
    )


def destination_bucket_policy(
    destination_bucket: str, destination_prefix: str, source_bucket: str, account_id: str, partition: str = "aws"
) -> dict[str, Any]:
    """The statement (in a policy of its own) that lets S3 write ``source_bucket``'s reports under the
    prefix of the destination bucket, only for that bucket of ``account_id`` (AWS, "Grant permissions
    for S3 Inventory"): add it to the destination bucket's policy."""
    reports = f"{destination_prefix}/" if destination_prefix else ""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "InventoryReports",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "s3:PutObject",
                "Resource": f"arn:{partition}:s3:::{destination_bucket}/{reports}*",
                "Condition": {
                    "ArnLike": {"aws:SourceArn": f"arn:{partition}:s3:::{source_bucket}"},
                    "StringEquals": {"aws:SourceAccount": account_id, "s3:x-amz-acl": "bucket-owner-full-control"},
                },
            }
        ],
    }
