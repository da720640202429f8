"""The upload system of the cleanup-Lambda document, swept by the archive the stack program builds.

The stack program runs under Pulumi's mocks with a stack's config; its upload table is created in
moto_server from the inputs the program registered; the sweeper's archive is unzipped and its
handler runs in a fresh interpreter whose clock is three days ahead (so the objects written now are
old), with the EXPIRY_JOB the program wrote. Sessions and objects follow the document's layout."""

import json
import runpy
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from stack_config import ROOT, stack_config
from tests_support import emf_totals

AHEAD = 3 * 86400
NOW = int(time.time()) + AHEAD  # the sweeper's clock
FUNCTION = "aws:lambda/function:Function"
TABLE = "aws:dynamodb/table:Table"

# Runs a handler from the unpacked archive, its clock AHEAD seconds in the future. With LOSE_REPLIES,
# the first attempt of each listed operation reaches the endpoint and its reply is lost (the
# connection resets), as on a flaky network: botocore's retry then meets the first attempt's effect.
RUN_HANDLER = """
import json, os, sys, time, urllib.request
real_time = time.time
time.time = lambda: real_time() + int(os.environ["CLOCK_AHEAD"])
import boto3
from botocore.exceptions import ConnectionClosedError
lose = set(json.loads(os.environ.get("LOSE_REPLIES", "[]")))
seen = set()
def lose_first_reply(request, event_name, **_):
    operation = event_name.rsplit(".", 1)[-1]
    body = request.body if isinstance(request.body, bytes) else (request.body or b"")
    if operation not in lose or (operation, request.url, body) in seen:
        return None
    seen.add((operation, request.url, body))
    sent = urllib.request.Request(request.url, data=body or None, headers=dict(request.headers), method=request.method)
    try:
        urllib.request.urlopen(sent, timeout=30).read()
    except urllib.error.HTTPError:
        pass
    raise ConnectionClosedError(endpoint_url=request.url)
boto3.setup_default_session()
boto3.DEFAULT_SESSION.events.register("before-send", lose_first_reply)
import expiry.runtime
assert expiry.runtime.__file__.startswith(sys.argv[1]), expiry.runtime.__file__
module_name, function_name = sys.argv[2].rsplit(".", 1)
handler = getattr(__import__(module_name, fromlist=[function_name]), function_name)
class Context:
    def get_remaining_time_in_millis(self):
        return 300_000
print("RESULT " + json.dumps(handler(json.loads(sys.argv[3]), Context())))
"""


@dataclass
class Deployed:
    """The upload sweeper as the stack program built it."""

    archive: Path
    handler: str
    job: dict[str, Any]
    table_inputs: dict[str, Any]
    cascade_job: dict[str, Any] | None = None

    @property
    def table(self) -> str:
        return str(self.job["table_name"])

    @property
    def bucket(self) -> str:
        return str(self.job["s3"]["bucket"])


def deploy(harness: Any, tmp_path: Path, monkeypatch: Any, stack: str = "dev", **overrides: Any) -> Deployed:
    """Run __main__.py under the mocks with ``stack``'s config (and ``overrides``, as `pulumi config
    set` would); return the upload sweeper's archive, handler and settings."""
    build = tmp_path / "build"
    monkeypatch.setenv("EXPIRY_BUILD_DIR", str(build))
    config = stack_config(stack, **overrides)
    pulumi.runtime.set_all_config(config, secret_keys=["expiry:postgresPassword"])
    harness.run(lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__"))
    # The last program run's registrations (a test may deploy twice with other settings).
    function = [r.inputs for r in harness.of_type(FUNCTION) if r.name == "upload-sweeper-function"][-1]
    table = [r.inputs for r in harness.of_type(TABLE) if r.inputs["name"].startswith("upload-sessions-")][-1]
    cascades = [r.inputs for r in harness.of_type(FUNCTION) if r.name == "upload-cascade-function"]
    return Deployed(
        archive=Path(function["code"].path),
        handler=function["handler"],
        job=json.loads(function["environment"]["variables"]["EXPIRY_JOB"]),
        table_inputs=table,
        cascade_job=json.loads(cascades[-1]["environment"]["variables"]["EXPIRY_JOB"]) if cascades else None,
    )


def create_table(dynamodb: Any, inputs: dict[str, Any]) -> None:
    """The table as the stack program declared it (keys, attributes, global indexes, stream)."""
    keys = [{"AttributeName": inputs["hashKey"], "KeyType": "HASH"}]
    if inputs.get("rangeKey"):
        keys.append({"AttributeName": inputs["rangeKey"], "KeyType": "RANGE"})
    extra: dict[str, Any] = {}
    if inputs.get("globalSecondaryIndexes"):
        extra["GlobalSecondaryIndexes"] = [
            {
                "IndexName": index["name"],
                "KeySchema": [
                    {"AttributeName": key["attributeName"], "KeyType": key["keyType"]} for key in index["keySchemas"]
                ],
                "Projection": {"ProjectionType": index.get("projectionType", "ALL")},
            }
            for index in inputs["globalSecondaryIndexes"]
        ]
    if inputs.get("streamEnabled"):
        extra["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": inputs["streamViewType"]}
    dynamodb.create_table(
        TableName=inputs["name"],
        KeySchema=keys,
        AttributeDefinitions=[{"AttributeName": a["name"], "AttributeType": a["type"]} for a in inputs["attributes"]],
        BillingMode="PAY_PER_REQUEST",
        **extra,
    )


@dataclass
class World:
    """Sessions and objects written the way the upload application writes them."""

    dynamodb: Any
    s3: Any
    table: str
    bucket: str
    expected_kept: set[str] = field(default_factory=set)

    def session(
        self,
        session_id: str,
        ttl: int,
        status: str,
        *,
        multipart: bool = False,
        parts: int = 0,
        with_object: bool = True,
        date: str = "2025-08-21",
    ) -> str:
        key = f"uploads/{date}/{session_id}.mp4"
        item = {
            "uploadSessionId": {"S": session_id},
            "key": {"S": key},
            "uploadType": {"S": "multipart" if multipart else "single"},
            "status": {"S": status},
            "ttl": {"N": str(ttl)},
        }
        if multipart:
            upload_id = self.s3.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
            for number in range(1, parts + 1):
                self.s3.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=b"p")
            item["s3UploadId"] = {"S": upload_id}
        if with_object:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=b"video")
        self.dynamodb.put_item(TableName=self.table, Item=item)
        return key

    def orphan(self, name: str) -> str:
        key = f"uploads/2025-08-20/{name}.mp4"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=b"left behind")
        return key

    def items(self) -> dict[str, dict[str, Any]]:
        pages = self.dynamodb.get_paginator("scan").paginate(TableName=self.table)
        return {item["uploadSessionId"]["S"]: item for page in pages for item in page["Items"]}

    def objects(self) -> set[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return {obj["Key"] for page in pages for obj in page.get("Contents", [])}

    def uploads(self) -> set[str]:
        return {u["UploadId"] for u in self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])}

    def marked(self) -> set[str]:
        return {
            key
            for key in self.objects()
            if {"Key": "expiry-kept", "Value": "true"}
            in self.s3.get_object_tagging(Bucket=self.bucket, Key=key)["TagSet"]
        }

    def snapshot(self) -> tuple[Any, ...]:
        items = {k: json.dumps(v, sort_keys=True) for k, v in self.items().items()}
        return items, self.objects(), self.uploads(), self.marked()


@dataclass
class Invocation:
    returncode: int
    stdout: str
    stderr: str

    @property
    def summary(self) -> dict[str, Any]:
        return next(line for line in self.lines if line.get("event") == "cleanup_summary")  # the run's one summary line

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    @property
    def emf(self) -> dict[str, Any]:
        return emf_totals(self.lines)

    def errors(self, action: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == "cleanup_error" and line.get("action") == action]


def invoke(
    deployed: Deployed,
    tmp_path: Path,
    endpoint: str,
    payload: dict[str, Any] | None = None,
    lose_replies: tuple[str, ...] = (),
    cascade: bool = False,
) -> Invocation:
    """Invoke the shipped sweeper (or, with ``cascade``, the stream cascade) with ``payload`` as
    Lambda would, against ``endpoint``."""
    handler = "expiry.runtime.handlers.stream_cascade.handler" if cascade else deployed.handler
    unpacked = tmp_path / "task"
    if not unpacked.exists():
        zipfile.ZipFile(deployed.archive).extractall(unpacked)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(unpacked),
        "PYTHONDONTWRITEBYTECODE": "1",
        "EXPIRY_JOB": json.dumps(deployed.cascade_job if cascade else deployed.job),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "CLOCK_AHEAD": str(AHEAD),
        "LOSE_REPLIES": json.dumps(list(lose_replies)),
    }
    done = subprocess.run(
        [sys.executable, "-c", RUN_HANDLER, str(unpacked), handler, json.dumps(payload or {})],
        cwd=unpacked,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return Invocation(done.returncode, done.stdout, done.stderr)


def ttl_deletes(world: World, session_ids: set[str]) -> list[dict[str, Any]]:
    """What DynamoDB does when TTL removes these sessions: delete them and put REMOVE records by its
    service principal, with the old images, on the stream."""
    records = []
    for number, session_id in enumerate(sorted(session_ids), start=1):
        old = world.dynamodb.delete_item(
            TableName=world.table, Key={"uploadSessionId": {"S": session_id}}, ReturnValues="ALL_OLD"
        )["Attributes"]
        records.append(
            {
                "eventID": f"ttl-{number}",
                "eventName": "REMOVE",
                "eventSource": "aws:dynamodb",
                "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
                "dynamodb": {"ApproximateCreationDateTime": NOW, "OldImage": old, "SequenceNumber": str(number)},
            }
        )
    return records
