"""The S3 jobs' policies, statement by statement: what a HeadObject of a missing key and the ownership
rule need in a real account (tests/test_iam_enforced.py runs the stack's jobs under them)."""

from typing import Any

import pytest

from expiry.components.stream_cascade import _policy as cascade_policy
from expiry.components.sweeper_policy import Arns, function_policy
from expiry.runtime.jobs.config import parse_job

TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table/sessions"
S3 = {"bucket": "videos", "key_attribute": "key", "upload_id_attribute": "uploadId"}


def job(kind: str = "sweep", **settings: Any) -> Any:
    raw = {
        "kind": kind,
        "job_name": "videos",
        "table_name": "sessions",
        "key_attributes": ["id"],
        "ttl_attribute": "ttl",
    }
    return parse_job({**raw, **settings})


def sweep_policy(prefix: str = "uploads/", **settings: Any) -> dict[str, dict[str, Any]]:
    policy = function_policy(job(**settings), Arns(table=TABLE, log_group="arn:logs", bucket="videos"), prefix)
    return {s["Sid"]: s for s in policy["Statement"]}


def stream_policy(**s3: Any) -> dict[str, dict[str, Any]]:
    policy = cascade_policy(
        job("stream-cascade", s3={**S3, **s3}),
        TABLE,
        f"{TABLE}/stream/1",
        "arn:logs",
        "videos",
        None,
        "arn:queue",
        object_prefix="uploads/",
        archive_prefix="expired/",
    )
    return {s["Sid"]: s for s in policy["Statement"]}


def test_a_sweep_may_list_its_prefix_so_a_missing_object_is_404():
    found = sweep_policy(s3=S3)
    assert found["ListPrefix"] == {
        "Sid": "ListPrefix",
        "Effect": "Allow",
        "Action": ["s3:ListBucket"],
        "Resource": ["arn:aws:s3:::videos"],
        "Condition": {"StringLike": {"s3:prefix": ["uploads/*"]}},
    }
    assert "ListUploads" not in found  # no orphan pass, no listing of uploads
    assert "Condition" not in sweep_policy("", s3=S3)["ListPrefix"]  # the whole bucket: no prefix to name


def test_the_ownership_rule_reads_the_owner_index_or_scans():
    indexed = sweep_policy(s3={**S3, "owner_index": "by-key"})
    assert indexed["OwnerIndex"]["Action"] == ["dynamodb:Query"]
    assert indexed["OwnerIndex"]["Resource"] == [f"{TABLE}/index/by-key"]
    assert "dynamodb:GetItem" in indexed["Table"]["Action"]
    assert "s3:GetObjectTagging" in indexed["Objects"]["Action"]  # a marked object is kept
    scanned = sweep_policy(s3=S3)
    assert "OwnerIndex" not in scanned and {"dynamodb:Scan", "dynamodb:GetItem"} <= set(scanned["Table"]["Action"])
    unmarked = sweep_policy(s3={**S3, "keep_marker": "none"})
    assert "s3:GetObjectTagging" not in unmarked["Objects"]["Action"]  # no mark to read


@pytest.mark.parametrize("owner_index", [None, "by-key"])
def test_the_cascade_may_list_its_prefix_and_find_who_names_an_object(owner_index):
    found = stream_policy(**({"owner_index": owner_index} if owner_index else {}))
    assert found["ListPrefix"]["Resource"] == ["arn:aws:s3:::videos"]
    assert found["ListPrefix"]["Condition"] == {"StringLike": {"s3:prefix": ["uploads/*"]}}
    assert "s3:GetObjectTagging" in found["Objects"]["Action"]
    if owner_index:
        assert found["Table"]["Action"] == ["dynamodb:GetItem"]
        assert found["OwnerIndex"]["Resource"] == [f"{TABLE}/index/by-key"]
    else:
        assert found["Table"]["Action"] == ["dynamodb:GetItem", "dynamodb:Scan"] and "OwnerIndex" not in found
