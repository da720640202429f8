"""The operator CLI, `expiry` (or `python -m expiry`): the checks the maintenance guide does by hand with `aws`
and `psql`, and a sweep run now, with the same library code as the Lambda handlers.

    expiry status --table collections-checkpoints-prod
    expiry sweep --table upload-sessions-prod --dry-run
    expiry sweep --table upload-sessions-prod --yes --s3-bucket uploads --s3-key-attribute s3Key
    expiry status --postgres "host=db dbname=app user=ops" --table attributes --expiry-column ttl_timestamp
    expiry sweep --job @upload-sweeper.json --dry-run     # the settings a Lambda runs with

Errors are one line on stderr: exit 2 for a wrong command or setting, 1 when AWS or PostgreSQL fails.
"""

import argparse
import io
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn, TextIO

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from expiry.runtime.aws_clients import client_config
from expiry.runtime.handlers.work import WORK
from expiry.runtime.jobs.config import KIND_SWEEP, KIND_TTL_MONITOR, Job, JobConfigError, parse_job
from expiry.runtime.jobs.run_control import Tally
from expiry.runtime.jobs.runner import run_job

PROG = "expiry"
STATUS_SETTINGS = ("name", "table", "namespace", "key_attributes", "ttl_attribute", "expiry_index", "page_size")


class UsageError(Exception):
    """A wrong command line; exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, text in (
        ("status", "TTL status, expired backlog, oldest expiry, last runs"),
        ("sweep", "run a cleanup now (--dry-run first, then --yes)"),
    ):
        command = commands.add_parser(name, help=text)
        target = command.add_argument_group("target")
        target.add_argument("--table", help="DynamoDB table, or the PostgreSQL table with --postgres")
        target.add_argument("--job", help="the job's settings as JSON, or @file (what EXPIRY_JOB holds)")
        target.add_argument("--ttl-attribute", help="TTL attribute (default: the table's TTL setting)")
        target.add_argument("--endpoint-url", help="any AWS-compatible endpoint (moto_server, LocalStack)")
        target.add_argument("--region", help="AWS region (default: your AWS configuration's)")
        target.add_argument("--log-group", help="the job's log group: status shows its last runs")
        pg = command.add_argument_group("PostgreSQL")
        pg.add_argument("--postgres", metavar="DSN", help="libpq connection string or URL")
        pg.add_argument("--expiry-column", help="the table's expiry column")
        pg.add_argument("--table-schema", default="public")
        pg.add_argument("--job-name", help="the PgCronCleanup job (status: its last runs)")
        command.add_argument("--json", action="store_true", help="print JSON instead of text")
        if name == "sweep":
            command.add_argument("--dry-run", action="store_true", help="report what would be deleted, delete nothing")
            command.add_argument("--yes", action="store_true", help="really delete")
            command.add_argument(
                "--allow-mass-deletion",
                action="store_true",
                help="go on when the breaker refuses a run that deletes most of what it examined",
            )
            command.add_argument("--max-items", type=int, help="most items this run handles")
            command.add_argument("--workers", type=int, help="concurrent deletions (default 8)")
            command.add_argument("--batch-size", type=int, default=5000, help="PostgreSQL rows per batch")
            command.add_argument("--max-runtime-seconds", type=int, default=300)
            command.add_argument("--s3-bucket", help="S3 cascade: the bucket")
            command.add_argument("--s3-key-attribute", help="S3 cascade: the item attribute with the object key")
            command.add_argument("--s3-upload-id-attribute", help="S3 cascade: the multipart upload id attribute")
            command.add_argument(
                "--progress",
                action=argparse.BooleanOptionalAction,
                default=None,
                help="progress on stderr (default: when stderr is a terminal)",
            )
    return parser


def _clients(args: argparse.Namespace) -> Callable[[str], Any]:
    session = boto3.Session(region_name=args.region)
    cache: dict[str, Any] = {}

    def client(service: str) -> Any:
        if service not in cache:
            cache[service] = session.client(service, endpoint_url=args.endpoint_url, config=client_config(32))
        return cache[service]

    return client


def _table_job(args: argparse.Namespace, kind: str, clients: Callable[[str], Any]) -> Job:
    """A job for --table, its keys read from DescribeTable and its TTL attribute from DescribeTimeToLive."""
    if args.job:
        text = Path(args.job[1:]).read_text() if args.job.startswith("@") else args.job
        try:
            given = json.loads(text)
        except json.JSONDecodeError as error:
            raise JobConfigError(f"--job: is not valid JSON: {error}") from error
        if kind == KIND_TTL_MONITOR and isinstance(given, dict):  # status of the job's table
            given = {key: given[key] for key in STATUS_SETTINGS if key in given} | {"kind": kind}
        return _with_overrides(given, args, "--job")
    if not args.table:
        raise UsageError("give --table (or --job)")
    dynamodb = clients("dynamodb")
    table = dynamodb.describe_table(TableName=args.table)["Table"]
    keys = [key["AttributeName"] for key in sorted(table["KeySchema"], key=lambda k: k["KeyType"])]
    ttl_attribute = args.ttl_attribute or dynamodb.describe_time_to_live(TableName=args.table)[
        "TimeToLiveDescription"
    ].get("AttributeName")
    if not ttl_attribute:
        raise JobConfigError(f"{args.table}: TTL is not enabled; give --ttl-attribute")
    raw: dict[str, Any] = {
        "kind": kind,
        "name": f"cli-{kind}",
        "table": args.table,
        "key_attributes": keys,
        "ttl_attribute": ttl_attribute,
    }
    if kind == KIND_SWEEP and args.s3_bucket:
        raw["s3"] = {"bucket": args.s3_bucket, "key_attribute": args.s3_key_attribute}
        if args.s3_upload_id_attribute:
            raw["s3"]["upload_id_attribute"] = args.s3_upload_id_attribute
    return _with_overrides(raw, args, "options")


def _with_overrides(raw: Any, args: argparse.Namespace, source: str) -> Job:
    """Parse the settings with the command line's overrides, so that they are checked the same way."""
    if not isinstance(raw, dict):
        raise JobConfigError(f"{source}: must be an object, got {raw!r}")
    changes: dict[str, Any] = {}
    if getattr(args, "dry_run", False):
        changes["dry_run"] = True
    if getattr(args, "allow_mass_deletion", False):
        changes["breaker"] = {**(raw.get("breaker") or {}), "allow_mass_deletion": True}
    for name in ("max_items", "workers"):
        if getattr(args, name, None) is not None:
            changes[name] = getattr(args, name)
    return parse_job({**raw, **changes}, source=source)


class Progress:
    """A one-line progress report on stderr, refreshed while a run goes on."""

    def __init__(self, stream: TextIO, read: Callable[[], str]) -> None:
        self.stream, self.read, self.done = stream, read, threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "Progress":
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.thread.join()
        self.stream.write(f"\r{self.read()}\n")
        self.stream.flush()

    def _loop(self) -> None:
        while not self.done.wait(0.5):
            self.stream.write(f"\r{self.read()}")
            self.stream.flush()


def _run(job: Job, clients: Callable[[str], Any], progress: bool, err: TextIO) -> dict[str, Any]:
    tallies: list[Tally] = []
    work = WORK[job.kind](clients)

    def tracked(job: Job, now: float, should_stop: Callable[[], bool], tally: Tally) -> dict[str, Any]:
        tallies.append(tally)
        return work(job, now, should_stop, tally)

    def line() -> str:
        counts = tallies[0].counts if tallies else {}
        shown = ("expired_found", "items_deleted", "items_to_delete", "items_skipped", "objects_deleted", "errors")
        return "  ".join(f"{name} {counts.get(name, 0)}" for name in shown if name in counts or name == "errors")

    quiet = io.StringIO()  # the EMF and summary lines: the summary is printed instead
    if progress:
        with Progress(err, line):
            return run_job(job, tracked, None, stream=quiet)
    return run_job(job, tracked, None, stream=quiet)


def _postgres(args: argparse.Namespace, err: TextIO, progress: bool) -> dict[str, Any]:
    import psycopg  # only PostgreSQL commands need psycopg

    from expiry.runtime.postgres import cleanup as pg_cleanup

    if not args.table or not args.expiry_column:
        raise UsageError("with --postgres, give --table and --expiry-column")
    spec = pg_cleanup.PurgeSpec(
        job_name=args.job_name or f"cli-{args.table}"[:48],
        table=args.table,
        expiry_column=args.expiry_column,
        table_schema=args.table_schema,
        batch_size=getattr(args, "batch_size", 5000),
        max_runtime_seconds=getattr(args, "max_runtime_seconds", 300),
        allow_mass_deletion=getattr(args, "allow_mass_deletion", False),
    )
    with psycopg.connect(args.postgres, autocommit=True, connect_timeout=15) as conn:
        if args.command == "status":
            return pg_cleanup.table_status(conn, spec, args.job_name)
        if args.dry_run:
            return {"dry_run": True, **asdict(pg_cleanup.plan(conn, spec))}
        deleted = [0]

        def on_batch(rows: int) -> None:
            deleted[0] += rows
            if progress:
                err.write(f"\rrows deleted {deleted[0]}")
                err.flush()

        result = pg_cleanup.purge(conn, spec, on_batch=on_batch)
        if progress:
            err.write("\n")
        if result.plan.refused:
            raise UsageError(result.plan.refused)
        return {"rows_deleted": result.rows_deleted, "batches": result.batches, "out_of_time": result.out_of_time}


def last_runs(logs: Any, log_group: str, count: int = 5, days: int = 7) -> list[dict[str, Any]]:
    """The job's last run summaries, read from its log group (one JSON summary line per run)."""
    kwargs: dict[str, Any] = {
        "logGroupName": log_group,
        "filterPattern": '"cleanup_summary"',
        "startTime": int((time.time() - days * 86400) * 1000),
    }
    summaries: list[dict[str, Any]] = []
    for page in logs.get_paginator("filter_log_events").paginate(**kwargs):
        for event in page.get("events", []):
            summary = _summary(event["message"])
            if summary is not None:
                summaries.append({"time": event["timestamp"], **summary})
    summaries.sort(key=lambda s: s["time"], reverse=True)
    return [
        {key: s.get(key) for key in ("time", "job", "dry_run", "stopped_early", "duration_ms", "counts")}
        for s in summaries[:count]
    ]


def _summary(message: str) -> dict[str, Any] | None:
    """A summary line, as printed or as wrapped by Lambda's JSON log format."""
    try:
        line = json.loads(message)
    except json.JSONDecodeError:
        return None
    if isinstance(line, dict) and isinstance(line.get("message"), str):
        return _summary(line["message"])
    return line if isinstance(line, dict) and line.get("event") == "cleanup_summary" else None


def _print(result: dict[str, Any], as_json: bool, out: TextIO) -> None:
    if as_json:
        out.write(json.dumps(result, default=str, indent=2) + "\n")
        return
    for key, value in result.items():
        if isinstance(value, dict | list):
            value = json.dumps(value, default=str)
        out.write(f"{key:28} {value}\n")


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        args = _parser().parse_args(argv)
        progress = args.progress if getattr(args, "progress", None) is not None else err.isatty()
        if args.command == "sweep" and not (args.dry_run or args.yes):
            raise UsageError("sweep deletes data: run it with --dry-run first, then with --yes")
        if args.postgres:
            result = _postgres(args, err, progress and args.command == "sweep")
        else:
            clients = _clients(args)
            kind = KIND_TTL_MONITOR if args.command == "status" else KIND_SWEEP
            job = _table_job(args, kind, clients)
            result = _run(job, clients, progress and args.command == "sweep", err)
            if args.command == "status" and args.log_group:
                result["last_runs"] = last_runs(clients("logs"), args.log_group)
        _print(result, args.json, out)
        refused = (result.get("plan") or {}).get("refused")
        if refused:
            err.write(f"{PROG}: error: {refused[0]}\n")
            return 3
        return 0
    except (UsageError, ValueError) as error:  # a wrong command line, or a wrong setting (JobConfigError too)
        err.write(f"{PROG}: error: {error}\n")
        return 2
    except (ClientError, BotoCoreError) as error:
        err.write(f"{PROG}: error: AWS: {error}\n")
        return 1
    except Exception as error:  # noqa: BLE001 - psycopg and OS errors: one line, no traceback
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        err.write(f"{PROG}: error: {type(error).__name__}: {message}\n")
        return 1
