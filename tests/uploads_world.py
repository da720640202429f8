"""The video-upload system in moto, laid out as its document lays it out: sessions keyed by
uploadSessionId with key, s3UploadId, uploadType, status (created, uploaded, partial) and ttl;
objects at uploads/YYYY-MM-DD/<sessionId>.<ext>."""

import io
import json
import time
from dataclasses import dataclass
from typing import Any

from tests_support import emf_totals

from expiry.runtime.dynamodb.deletion_budget import LEDGER_KEY
from expiry.runtime.dynamodb.ttl import expiry_shard
from expiry.runtime.jobs.config import Job, parse_job
from expiry.runtime.jobs.runner import Work, run_job

NOW = int(time.time()) + 3 * 86400  # the sweep's clock: three days ahead, so S3 objects are old
TABLE = "upload-sessions"
BUCKET = "uploads"
SHARDS = 4
OWNER_INDEX = "key-owner-index"


def create_table(
    dynamodb: Any,
    expiry_index: bool = False,
    name: str = TABLE,
    hash_key: str = "uploadSessionId",
    range_key: str | None = None,
    owner_index: bool = False,
) -> None:
    keys = [{"AttributeName": hash_key, "KeyType": "HASH"}]
    attributes = [{"AttributeName": hash_key, "AttributeType": "S"}]
    if range_key:
        keys.append({"AttributeName": range_key, "KeyType": "RANGE"})
        attributes.append({"AttributeName": range_key, "AttributeType": "S"})
    indexes: list[dict[str, Any]] = []
    if owner_index:
        attributes.append({"AttributeName": "key", "AttributeType": "S"})
        indexes.append(
            {
                "IndexName": OWNER_INDEX,
                "KeySchema": [{"AttributeName": "key", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        )
    if expiry_index:
        attributes += [
            {"AttributeName": "expiry_shard", "AttributeType": "S"},
            {"AttributeName": "ttl", "AttributeType": "N"},
        ]
        indexes += [
            {
                "IndexName": "expiry-index",
                "KeySchema": [
                    {"AttributeName": "expiry_shard", "KeyType": "HASH"},
                    {"AttributeName": "ttl", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ]
    extra = {"GlobalSecondaryIndexes": indexes} if indexes else {}
    dynamodb.create_table(
        TableName=name, KeySchema=keys, AttributeDefinitions=attributes, BillingMode="PAY_PER_REQUEST", **extra
    )


def put_session(
    dynamodb: Any,
    session_id: str,
    ttl: int | None,
    *,
    key: str | None = None,
    upload_id: str | None = None,
    status: str | None = None,
    created: Any = None,
    shard: bool = False,
    table: str = TABLE,
) -> None:
    item: dict[str, Any] = {"uploadSessionId": {"S": session_id}}
    if ttl is not None:
        item["ttl"] = {"N": str(ttl)}
        if shard:
            item["expiry_shard"] = {"S": expiry_shard(session_id, SHARDS)}
    if key:
        item["key"] = {"S": key}
    item["uploadType"] = {"S": "multipart" if upload_id else "single"}
    if upload_id:
        item["s3UploadId"] = {"S": upload_id}
    if status:
        item["status"] = {"S": status}
    if created is not None:
        item["createdAt"] = {"N": str(created)} if isinstance(created, int) else {"S": created}
    dynamodb.put_item(TableName=table, Item=item)


def create_ledger(dynamodb: Any, name: str) -> None:
    """The breaker's budget ledger, keyed as ScheduledSweeper creates it."""
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": LEDGER_KEY, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": LEDGER_KEY, "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def session_ids(dynamodb: Any, table: str = TABLE) -> set[str]:
    items = dynamodb.scan(TableName=table)["Items"]
    return {item["uploadSessionId"]["S"] for item in items}


def object_keys(s3: Any) -> set[str]:
    return {obj["Key"] for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def upload_ids(s3: Any) -> set[str]:
    return {u["UploadId"] for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])}


def sweep_job(**settings: Any) -> Job:
    raw = {
        "kind": "sweep",
        "job_name": "video-sweeper",
        "table_name": TABLE,
        "key_attributes": ["uploadSessionId"],
        "ttl_attribute": "ttl",
        "workers": 4,
        **settings,
    }
    return parse_job({k: v for k, v in raw.items() if v is not None})


S3_SETTINGS = {
    "bucket": BUCKET,
    "key_attribute": "key",
    "upload_id_attribute": "s3UploadId",
    "status_attribute": "status",
    "keep_statuses": ["uploaded"],
}
ALLOW = {"allow_mass_deletion": True}  # for tests of paging and stopping, where everything expired
INDEX_SETTINGS = {
    "expiry_index_name": "expiry-index",
    "expiry_index_shards": SHARDS,
    "expiry_shard_attribute": "expiry_shard",
}


@dataclass
class Run:
    summary: dict[str, Any]
    lines: list[dict[str, Any]]

    @property
    def counts(self) -> dict[str, int]:
        return self.summary["counts"]

    @property
    def emf(self) -> dict[str, Any]:
        return emf_totals(self.lines)


def run(
    job: Job, work: Work, stop_after: int | None = None, event: Any = None, stream_lines: list[Any] | None = None
) -> Run:
    """Run a job as its handler does, with the sweep's clock and, optionally, a Lambda clock that
    runs out after ``stop_after`` checks of it (each check takes an equal share of the time).
    ``stream_lines`` receives the lines it printed, also when it fails."""
    stream = io.StringIO()
    checks = {"n": 0}

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            checks["n"] += 1
            if stop_after is None:
                return 900_000
            return max(0, 900_000 - 900_000 * checks["n"] // max(1, stop_after))

    try:
        summary = run_job(job, work, Context(), clock=lambda: NOW, stream=stream, event=event)
    finally:
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        if stream_lines is not None:
            stream_lines += lines
    return Run(summary, lines)
