"""The operator CLI, `expiry` (or `python -m expiry`): the checks the maintenance guide does by hand with `aws`
and `psql`, and a sweep run now, with the same library code as the Lambda handlers.

    expiry sweep --function upload-sweeper-prod --dry-run   # exactly the job the deployed Lambda runs
    expiry status --table collections-checkpoints-prod
    expiry sweep --table upload-sessions-prod --dry-run
    expiry sweep --table upload-sessions-prod --s3-bucket uploads --s3-key-attribute s3Key   # plans, then asks
    expiry status --postgres "host=db dbname=app user=ops" --table attributes --expiry-column ttl_timestamp
    expiry sweep --job @upload-sweeper.json --dry-run     # the settings a Lambda runs with
    expiry sweep --table upload-sessions-prod --plan-out plan.json    # a dry run that saves its plan
    expiry sweep --table upload-sessions-prod --plan plan.json --yes  # carries out that plan, nothing else
    expiry pause --function upload-sweeper-prod     # its schedule DISABLED until `expiry resume`
    expiry pause --postgres "host=db dbname=app user=ops" --job-name attributes-purge   # its pg_cron jobs inactive

A sweep plans first, shows its target and what it would delete (counts, and the keys of the plan's sample),
and deletes only once "yes" or the table's name is typed in full on a terminal, or with --yes (scripts); what
it carries out is the plan it showed (or the saved plan), each item only while it is still as read. Ctrl-C
stops a run between two deletions and prints what was done. Errors are one line on stderr; the exit codes are
EXIT_CODES (every AWS call, retries included, ends within --call-timeout).
"""

import argparse
import dataclasses
import datetime as dt
import io
import json
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar, cast

import boto3
from botocore.exceptions import BotoCoreError, ClientError, ProfileNotFound

from expiry.runtime import cli_pause, kinds
from expiry.runtime.aws_clients import client_config
from expiry.runtime.cli_deployed import OVERRIDE, Deployed, LookupDeniedError, deployed_jobs, job_text, plan_deployed
from expiry.runtime.cli_deployed import refusal as deployed_refusal
from expiry.runtime.dynamodb import saved_plan
from expiry.runtime.dynamodb.sweep import Plan, report
from expiry.runtime.jobs.config import (
    ENV_VAR,
    KIND_SWEEP,
    KIND_TTL_MONITOR,
    SWEEPING_KINDS,
    Job,
    JobConfigError,
    SettingsDeprecationWarning,
    current_schema,
    loads_object,
    parse_job,
)
from expiry.runtime.jobs.run_control import Tally
from expiry.runtime.jobs.runner import Work, run_job

PROG = "expiry"
T = TypeVar("T")
NO_LIMIT_MS = 10**12
CLI_CALL_SECONDS = 30.0
FAILED, USAGE, REFUSED, NOT_CONFIRMED, INTERRUPTED = 1, 2, 3, 4, 130
EXIT_CODES = f"""exit codes:
  0    done (a dry run included)
  {FAILED}    AWS, PostgreSQL or the system failed
  {USAGE}    wrong command line, setting or plan file
  {REFUSED}    the breaker refused the plan; nothing was deleted
  {NOT_CONFIRMED}    not confirmed at the prompt; nothing was deleted
  {INTERRUPTED}  interrupted (Ctrl-C)"""
EXAMPLES = """examples:
  expiry status --table upload-sessions-prod --profile prod
  expiry sweep --function upload-sweeper-prod --dry-run    # the deployed Lambda's job, exactly
  expiry sweep --function upload-sweeper-prod              # plans, shows the target, then asks
  expiry sweep --table upload-sessions-prod --plan-out plan.json
  expiry sweep --table upload-sessions-prod --plan plan.json --yes
  expiry sweep --table scratch-table --yes --ignore-deployed   # not the deployed job's rules: spelled out
  expiry sweep --postgres "$DSN" --table attributes --expiry-column ttl_timestamp --dry-run
  expiry pause --function upload-sweeper-prod     # until `expiry resume --function upload-sweeper-prod`
  expiry pause --postgres "$DSN" --job-name attributes-purge    # a PgCronCleanup's pg_cron jobs inactive"""
FUNCTION_FIXES = (  # what would change the deployed job: refused with --function
    "job",
    "table",
    "ttl_attribute",
    "s3_bucket",
    "s3_key_attribute",
    "s3_upload_id_attribute",
    "max_items",
    "allow_mass_deletion",
    "postgres",
)
INTERRUPTED_WHILE_DELETING = (
    "interrupted while deleting, before the run's summary: some deletions may be done; "
    "run status (or sweep --dry-run) to see what is left"
)
PAUSE_NOTE = (
    "Pulumi does not know of the change: a refresh or the next update of the schedule or mapping sets it back "
    "to the stack's paused setting; for a lasting pause set expiry:paused (or the component's paused arg)."
)
PG_PAUSE_DRIFT = (
    "Pulumi does not know of this change: the next update of the PgCronCleanup (a change of its settings or of "
    "Expiry's version) sets its pg_cron jobs back to its paused arg (expiry:paused in this stack); for a lasting "
    "pause set that instead"
)
STATUS_SETTINGS = (
    "job_name",
    "table_name",
    "namespace",
    "key_attributes",
    "ttl_attribute",
    "expiry_index_name",
    "expiry_index_shards",
    "expiry_shard_attribute",
    "page_size",
)


class UsageError(Exception):
    """A wrong command line; exit 2."""


class NotConfirmedError(Exception):
    """The person at the terminal did not answer yes; nothing was deleted."""


class RefusedError(Exception):
    """The breaker refused the run; nothing was deleted."""


class DeployedJobError(Exception):
    """An ad-hoc sweep would delete what the deployed job of its table keeps; nothing was deleted (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    texts: dict[str, Any] = {
        "epilog": f"{EXAMPLES}\n\n{EXIT_CODES}",
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }
    parser = _Parser(prog=PROG, description=" ".join(__doc__.split("\n\n")[0].split()), **texts)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('expiry')}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, text in (
        ("status", "TTL status, expired backlog, oldest expiry, last runs"),
        ("sweep", "run a cleanup now (--dry-run first, then --yes)"),
    ):
        command = commands.add_parser(name, help=text, description=text, **texts)
        target = command.add_argument_group("target")
        target.add_argument("--table", help="DynamoDB table, or the PostgreSQL table with --postgres")
        target.add_argument("--job", help="the job's settings as JSON, or @file (what EXPIRY_JOB holds)")
        target.add_argument(
            "--function",
            metavar="NAME",
            help="a deployed job's Lambda: run exactly its job (its EXPIRY_JOB); "
            "options that would change what it deletes are refused",
        )
        target.add_argument("--profile", help="AWS profile (default: your AWS configuration's)")
        target.add_argument("--ttl-attribute", help="TTL attribute (default: the table's TTL setting)")
        target.add_argument("--endpoint-url", help="any AWS-compatible endpoint (moto_server, LocalStack)")
        target.add_argument("--region", help="AWS region (default: your AWS configuration's)")
        target.add_argument("--log-group", help="the job's log group: status shows its last runs")
        target.add_argument(
            "--call-timeout",
            type=float,
            default=CLI_CALL_SECONDS,
            metavar="SECONDS",
            help=f"most time one AWS call may take, retries included (default {CLI_CALL_SECONDS:g})",
        )
        pg = command.add_argument_group("PostgreSQL")
        pg.add_argument("--postgres", metavar="DSN", help="libpq connection string or URL")
        pg.add_argument("--expiry-column", help="the table's expiry column")
        pg.add_argument("--table-schema", default="public")
        pg.add_argument("--job-name", help="the PgCronCleanup job (status: its last runs)")
        command.add_argument("--json", action="store_true", help="print JSON instead of text")
        if name == "sweep":
            command.add_argument("--dry-run", action="store_true", help="report what would be deleted, delete nothing")
            command.add_argument("--yes", action="store_true", help="delete without asking (scripts)")
            saved = command.add_mutually_exclusive_group()
            saved.add_argument(
                "--plan-out", metavar="FILE", help="a dry run that also writes its plan to FILE (JSON), for --plan"
            )
            saved.add_argument(
                "--plan",
                metavar="FILE",
                help="carry out the plan saved in FILE and nothing else; refused whole if it was made for another "
                "target or other settings; listed items changed since are skipped",
            )
            command.add_argument(
                "--allow-mass-deletion",
                action="store_true",
                help="go on when the breaker refuses a run that deletes most of what it examined",
            )
            command.add_argument(
                OVERRIDE,
                action="store_true",
                help="sweep --table/--job even where it deletes what the deployed sweep job of the table keeps "
                "(its kept statuses, stuck rule, orphans, breaker); spelled out in full, shown on the target line",
            )
            command.add_argument("--max-items", type=int, help="most items this run handles")
            command.add_argument("--workers", type=int, help="concurrent deletions (default: the job's)")
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
    for name, text in (
        (
            "pause",
            "pause a deployed job: disable its schedule (sweeper), stream mapping (cascade) or pg_cron jobs "
            "(PgCronCleanup, with --postgres and --job-name)",
        ),
        ("resume", "resume a paused deployed job: enable its schedule, stream mapping or pg_cron jobs again"),
    ):
        command = commands.add_parser(name, help=text, description=f"{text}. {PAUSE_NOTE}", **texts)
        command.add_argument("--function", metavar="NAME", help="the deployed job's Lambda")
        pg = command.add_argument_group("PostgreSQL (a PgCronCleanup)")
        pg.add_argument("--postgres", metavar="DSN", help="libpq connection string or URL of its database")
        pg.add_argument("--job-name", help="the PgCronCleanup job: its pg_cron job's name")
        command.add_argument("--profile", help="AWS profile (default: your AWS configuration's)")
        command.add_argument("--endpoint-url", help="any AWS-compatible endpoint (moto_server, LocalStack)")
        command.add_argument("--region", help="AWS region (default: your AWS configuration's)")
        command.add_argument(
            "--call-timeout",
            type=float,
            default=CLI_CALL_SECONDS,
            metavar="SECONDS",
            help=f"most time one AWS call may take, retries included (default {CLI_CALL_SECONDS:g})",
        )
        command.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def _pause(args: argparse.Namespace, err: TextIO) -> dict[str, Any]:
    """`expiry pause` / `expiry resume`: what changed, then the drift warning on stderr."""
    if args.postgres or args.job_name:
        return _pg_pause(args, err)
    if not args.function:
        raise UsageError("give --function NAME (a sweeper or cascade), or --postgres DSN with --job-name NAME")
    clients, shown = _clients(args)
    result = {"target": shown()} | cli_pause.set_paused(clients, args.function, args.command == "pause")
    warning = cli_pause.drift_warning(result)
    if warning:
        err.write(f"{PROG}: warning: {warning}\n")
    return result


def _pg_pause(args: argparse.Namespace, err: TextIO) -> dict[str, Any]:
    """`expiry pause|resume --postgres DSN --job-name NAME`: the PgCronCleanup's pg_cron jobs, only if Expiry's."""
    from expiry.runtime.postgres import pause as pg_pause  # only PostgreSQL commands need psycopg

    if args.function or not (args.postgres and args.job_name):
        raise UsageError("a PgCronCleanup is paused with --postgres DSN and --job-name NAME (and no --function)")
    with pg_pause.cron_connection(_conninfo(args.postgres)) as cron:
        target = {"database": cron.info.dbname, "host": cron.info.host}
        result = {"target": target} | pg_pause.set_paused(cron, args.job_name, args.command == "pause")
    if result["pg_cron_jobs_changed"]:
        err.write(f"{PROG}: warning: {PG_PAUSE_DRIFT}\n")
    return result


def _conninfo(dsn: str) -> str:
    """``dsn`` once psycopg can read it; a UsageError naming --postgres otherwise."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as error:
        raise UsageError(f"--postgres: not a libpq connection string or URL: {_first_line(error)}") from error
    return dsn


def _paused_status(clients: Callable[[str], Any], function: str, err: TextIO) -> dict[str, Any]:
    """`paused: yes/no` for status --function; what cannot be read is shown as unknown, with a warning."""
    try:
        return cli_pause.status(clients, function)
    except (cli_pause.NotPausableError, cli_pause.PauseDeniedError) as error:
        err.write(f"{PROG}: warning: paused unknown: {error}\n")
        return {"paused": "unknown"}


def _clients(args: argparse.Namespace) -> tuple[Callable[[str], Any], Callable[[], dict[str, Any]]]:
    """Clients of the command's target, and a function of the target (region, account, endpoint) as shown to the
    operator, called once the job is known: a job refused before then makes no AWS call."""
    if not 1 <= args.call_timeout <= 900:
        raise UsageError(f"--call-timeout: must be 1..900 seconds, got {args.call_timeout:g}")
    try:
        session = boto3.Session(region_name=args.region, profile_name=args.profile)
    except ProfileNotFound as error:
        raise UsageError(f"--profile: {error}") from error
    cache: dict[str, Any] = {}
    config = client_config(32, args.call_timeout)

    def client(service: str) -> Any:
        if service not in cache:
            cache[service] = session.client(service, endpoint_url=args.endpoint_url, config=config)
        return cache[service]

    def target() -> dict[str, Any]:
        try:
            account = client("sts").get_caller_identity()["Account"]
        except (ClientError, BotoCoreError):
            account = "unknown"
        endpoint = args.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or "AWS"
        return {"region": session.region_name, "account": account, "endpoint": endpoint}

    return client, target


def _table_job(args: argparse.Namespace, kind: str, clients: Callable[[str], Any]) -> Job:
    """The job of --function or --job; else one for --table, its keys read from DescribeTable and its TTL
    attribute from DescribeTimeToLive."""
    if args.function or args.job:
        source = f"--function {args.function}" if args.function else "--job"
        if args.function:
            text = _deployed_job(clients("lambda"), args.function)
        else:
            text = Path(args.job[1:]).read_text() if args.job.startswith("@") else args.job
        given = current_schema(loads_object(text, source), source)
        if kind == KIND_SWEEP and isinstance(given, dict) and given.get("kind") not in SWEEPING_KINDS:
            raise JobConfigError(
                f"{source}: kind: sweep runs {' and '.join(SWEEPING_KINDS)} jobs, got {given.get('kind')!r}"
                " (status reads a ttl-monitor job's table; --postgres runs PostgreSQL purges)"
            )
        if kind == KIND_TTL_MONITOR and isinstance(given, dict):  # status of the job's table
            given = {key: given[key] for key in STATUS_SETTINGS if key in given} | {"kind": kind}
        return _with_overrides(given, args, source)
    if not args.table:
        raise UsageError("give --table (or --job)")
    dynamodb = clients("dynamodb")
    table = dynamodb.describe_table(TableName=args.table)["Table"]
    keys = [key["AttributeName"] for key in sorted(table["KeySchema"], key=lambda k: k["KeyType"])]
    ttl_attribute = args.ttl_attribute or dynamodb.describe_time_to_live(TableName=args.table)[
        "TimeToLiveDescription"
    ].get("AttributeName")
    if not ttl_attribute:
        if kind == KIND_TTL_MONITOR:
            raise TtlOffError(table)
        raise JobConfigError(f"{args.table}: TTL is not enabled, so no item is expired; give --ttl-attribute")
    raw: dict[str, Any] = {
        "kind": kind,
        "job_name": f"cli-{kind}",
        "table_name": args.table,
        "key_attributes": keys,
        "ttl_attribute": ttl_attribute,
    }
    if kind == KIND_SWEEP and args.s3_bucket:
        raw["s3"] = {"bucket": args.s3_bucket, "key_attribute": args.s3_key_attribute}
        if args.s3_upload_id_attribute:
            raw["s3"]["upload_id_attribute"] = args.s3_upload_id_attribute
    return _with_overrides(raw, args, "options")


def _deployed_job(lambda_client: Any, function: str) -> str:
    """The job settings (EXPIRY_JOB) in the environment of the Lambda function ``function``."""
    text = job_text(lambda_client.get_function_configuration(FunctionName=function))
    if not text:
        raise UsageError(f"--function {function}: has no {ENV_VAR} in its environment: not an Expiry job")
    return text


def _refuse_changes_to_the_deployed_job(args: argparse.Namespace) -> None:
    """--function runs the deployed job as it is: options that would change what it deletes are refused."""
    given = [f"--{name.replace('_', '-')}" for name in FUNCTION_FIXES if getattr(args, name, None)]
    if args.function and given:
        raise UsageError(
            f"--function runs the deployed job as it is: {', '.join(given)} would change what it deletes "
            "(give the settings with --job for another job)"
        )


class TtlOffError(Exception):
    """Status of a table whose TTL is off and no --ttl-attribute says which attribute to count."""

    def __init__(self, table: dict[str, Any]) -> None:
        super().__init__(table["TableName"])
        self.table = table


def _ttl_off_status(table: dict[str, Any]) -> dict[str, Any]:
    return {
        "ttl_status": "DISABLED",
        "ttl_enabled": False,
        "ttl_attribute": None,
        "item_count": table.get("ItemCount", 0),
        "table_size_bytes": table.get("TableSizeBytes", 0),
        "diagnosis": "TTL is off: DynamoDB deletes no item of this table. Turn it on "
        "(aws dynamodb update-time-to-live, or TtlTable), or give --ttl-attribute to count expired items",
    }


def _with_overrides(raw: Any, args: argparse.Namespace, source: str) -> Job:
    """Parse the settings with the command line's overrides, so that they are checked the same way."""
    if not isinstance(raw, dict):
        raise JobConfigError(f"{source}: must be an object, got {raw!r}")
    changes: dict[str, Any] = {}
    if getattr(args, "dry_run", False) or getattr(args, "plan_out", None):
        changes["dry_run"] = True
    if getattr(args, "allow_mass_deletion", False):
        changes["breaker"] = {**(raw.get("breaker") or {}), "allow_mass_deletion": True}
    for name in ("max_items", "workers"):
        if getattr(args, name, None) is not None:
            changes[name] = getattr(args, name)
    return parse_job({**raw, **changes}, source=source)


class StopSwitch:
    """A Lambda-like context for CLI runs: no time limit until Ctrl-C, then none left, so the run's
    deadline stops it between two deletions as it stops a Lambda run before its timeout."""

    def __init__(self) -> None:
        self.stopped = threading.Event()

    def get_remaining_time_in_millis(self) -> int:
        return 0 if self.stopped.is_set() else NO_LIMIT_MS


def _interruptible(run: Callable[[], T], switch: StopSwitch, err: TextIO) -> T:
    """``run`` in a thread; Ctrl-C flips ``switch`` and waits for the run to stop cleanly."""
    outcome: dict[str, Any] = {}
    finished = threading.Event()

    def target() -> None:
        try:
            outcome["value"] = run()
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
            outcome["error"] = error
        finally:
            finished.set()

    threading.Thread(target=target, daemon=True).start()
    while True:  # an Event, not Thread.join: an interrupted join may report a live thread as ended
        try:
            if finished.wait(0.2):
                break
        except KeyboardInterrupt:
            if switch.stopped.is_set():
                raise
            switch.stopped.set()  # first: a second Ctrl-C during the message must find the run stopping
            err.write("\ninterrupted: finishing what is in flight, then stopping (Ctrl-C again to quit now)\n")
            err.flush()
    if "error" in outcome:
        raise outcome["error"]
    return cast(T, outcome["value"])


class Progress:
    """A one-line progress report on stderr, refreshed while a run goes on: done of total, rate, ETA."""

    def __init__(
        self, stream: TextIO, what: str, total: int, done: Callable[[], int], extra: Callable[[], str]
    ) -> None:
        self.stream, self.what, self.total, self.done, self.extra = stream, what, total, done, extra
        self.finished = threading.Event()
        self.first: tuple[float, int] | None = None
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "Progress":
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.finished.set()
        self.thread.join()
        self.stream.write(f"\r{self.line()}\n")
        self.stream.flush()

    def line(self) -> str:
        done, now = self.done(), time.monotonic()
        if self.first is None and done:
            self.first = (now, 0)
        shown = f"{self.what} {done}/{self.total}" if self.total else f"{self.what} {done}"
        if self.total:
            shown += f" ({100 * done / self.total:.1f}%)"
        if self.first is not None and now - self.first[0] >= 0.5:
            rate = (done - self.first[1]) / (now - self.first[0])
            shown += f"  {rate:.0f}/s"
            if self.total and rate > 0 and done < self.total:
                shown += f"  ETA {readable_duration((self.total - done) / rate)}"
        return f"{shown}  {self.extra()}".rstrip()

    def _loop(self) -> None:
        while not self.finished.wait(0.5):
            self.stream.write(f"\r{self.line()}\033[K")
            self.stream.flush()


def _run(
    job: Job,
    clients: Callable[[str], Any],
    err: TextIO,
    progress_total: int | None,
    switch: StopSwitch,
    work: Work | None = None,
) -> dict[str, Any]:
    """Run ``job`` as a Lambda would (its summary), stoppable by Ctrl-C; progress when a total is given.
    ``work`` is the job kind's work unless given."""
    tallies: list[Tally] = []
    work = work or kinds.kind(job.kind).work_factory()(clients)

    def tracked(job: Job, now: float, should_stop: Callable[[], bool], tally: Tally) -> dict[str, Any]:
        tallies.append(tally)
        return work(job, now, should_stop, tally)

    def count(*names: str) -> int:
        return sum(tallies[0].counts.get(name, 0) for name in names) if tallies else 0

    quiet = io.StringIO()  # the EMF and summary lines: the summary is printed instead

    def run() -> dict[str, Any]:
        return run_job(job, tracked, switch, stream=quiet)

    if progress_total is None:
        return _interruptible(run, switch, err)
    done = ("items_deleted", "items_skipped", "orphans_deleted")
    with Progress(err, "deleted", progress_total, lambda: count(*done), lambda: f"errors {count('errors')}"):
        return _interruptible(run, switch, err)


def _confirm(question: str, table: str, stdin: TextIO, err: TextIO) -> bool:
    """Whether the answer to ``question`` is "yes" or ``table``, typed in full (as terraform asks)."""
    err.write(f"{question} Type yes or {table} to delete: ")
    err.flush()
    return stdin.readline().strip() in ("yes", table)


def _postgres(
    args: argparse.Namespace, err: TextIO, progress: bool, stdin: TextIO, deleting: threading.Event
) -> dict[str, Any]:
    import psycopg  # only PostgreSQL commands need psycopg
    from psycopg.conninfo import conninfo_to_dict

    from expiry.runtime.postgres import pause as pg_pause
    from expiry.runtime.postgres import purge as pg_purge
    from expiry.runtime.postgres import status as pg_status
    from expiry.runtime.postgres.spec import PurgeSpec

    if not args.table or not args.expiry_column:
        raise UsageError("with --postgres, give --table and --expiry-column")
    where = conninfo_to_dict(_conninfo(args.postgres))
    spec = PurgeSpec(
        job_name=args.job_name or f"cli-{args.table}"[:48],
        table=args.table,
        expiry_column=args.expiry_column,
        table_schema=args.table_schema,
        batch_size=getattr(args, "batch_size", 5000),
        max_runtime_seconds=getattr(args, "max_runtime_seconds", 300),
        allow_mass_deletion=getattr(args, "allow_mass_deletion", False),
    )
    table = f"{spec.table_schema}.{spec.table}"
    target = {
        "host": where.get("host", "(libpq default)"),
        "database": where.get("dbname", "(libpq default)"),
        "table": table,
    }
    with psycopg.connect(args.postgres, autocommit=True, connect_timeout=15) as conn:
        if args.command == "status":
            status = {"target": target, **pg_status.table_status(conn, spec, args.job_name)}
            if args.job_name:  # whether its pg_cron jobs are paused
                with pg_pause.cron_connection(args.postgres) as cron:
                    status |= pg_pause.pause_status(cron, args.job_name)
            return status
        planned = pg_purge.plan(conn, spec)
        if args.dry_run:
            return {"target": target, "dry_run": True, **asdict(planned)}
        err.write(f"target: {_target_text(target)}\nplanned: {planned.expired_rows} expired rows to delete\n")
        if planned.refused:
            raise RefusedError(planned.refused)
        if not args.yes and not _confirm(f"Delete {planned.expired_rows} rows from {table}?", table, stdin, err):
            raise NotConfirmedError
        deleted = [0]
        switch = StopSwitch()
        deleting.set()

        def purge() -> Any:
            return pg_purge.purge(
                conn,
                spec,
                should_stop=switch.stopped.is_set,
                on_batch=lambda rows: deleted.__setitem__(0, deleted[0] + rows),
            )

        if progress:
            with Progress(err, "rows deleted", planned.expired_rows, lambda: deleted[0], lambda: ""):
                result = _interruptible(purge, switch, err)
        else:
            result = _interruptible(purge, switch, err)
        if result.plan.refused:
            raise RefusedError(result.plan.refused)
        summary = {
            "target": target,
            "rows_deleted": result.rows_deleted,
            "batches": result.batches,
            "out_of_time": result.out_of_time,
        }
        return summary | ({"interrupted": True} if switch.stopped.is_set() else {})


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


def iso(epoch: float) -> str:
    """An epoch in seconds as ISO-8601 UTC."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def readable_size(size: float) -> str:
    """Bytes as B, KB, MB, GB or TB (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def readable_duration(seconds: float) -> str:
    """Seconds as 45s, 12m 05s, 3h 02m or 2d 04h."""
    seconds = int(seconds)
    for unit, next_unit, size in (("d", "h", 86400), ("h", "m", 3600), ("m", "s", 60)):
        if seconds >= size:
            rest = seconds % size // (size // (24 if unit == "d" else 60))
            return f"{seconds // size}{unit} {rest:02d}{next_unit}"
    return f"{seconds}s"


def readable(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with readable companions: ``*_utc`` next to epochs, ``*_size`` next to byte counts,
    ``*_age`` next to ages in seconds."""
    shown: dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, dict):
            value = readable(value)
        elif isinstance(value, list):
            value = [readable(item) if isinstance(item, dict) else item for item in value]
        shown[key] = value
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and key in ("oldest_expiry", "newest_expiry"):
            shown[f"{key}_utc"] = iso(value)
        elif number and key == "time":  # a log event's time, in milliseconds
            shown["time_utc"] = iso(value / 1000)
        elif number and key.endswith("_bytes"):
            name = key.removesuffix("_bytes")
            shown[name if name.endswith("size") else f"{name}_size"] = readable_size(value)
        elif number and key.endswith("_age_seconds") and value:
            shown[f"{key.removesuffix('_seconds')}"] = readable_duration(value)
    return shown


def _print(result: dict[str, Any], as_json: bool, out: TextIO) -> None:
    result = readable(result)
    if as_json:
        out.write(json.dumps(result, default=str, indent=2) + "\n")
        return
    for key, value in result.items():
        if isinstance(value, dict | list):
            value = json.dumps(value, default=str)
        out.write(f"{key:28} {value}\n")


def _target_text(target: dict[str, Any]) -> str:
    return "  ".join(f"{key} {value}" for key, value in target.items())


def _plan_text(plan: dict[str, Any]) -> str:
    counts = plan.get("counts") or {}
    planned = ", ".join(f"{value} {_list_name(key)}" for key, value in counts.items() if value)
    return planned or "nothing to do"


def _list_name(key: str) -> str:
    """A plan list's name as shown: items_to_delete as "items to delete"."""
    return key.replace("_to_", " to ").replace("_", " ")


def _keys_text(plan: dict[str, Any]) -> str:
    """The keys of the plan's sample, list by list, each list's count shown ("and N more" past the sample)."""
    lines = []
    for name, keys in (plan.get("sample") or {}).items():
        count = (plan.get("counts") or {}).get(name, 0)
        if count:
            lines.append(f"{_list_name(name)} ({count}):")
            lines += [f"  {key if isinstance(key, str) else json.dumps(key, default=str)}" for key in keys]
            lines += [f"  and {count - len(keys)} more"] if count > len(keys) else []
    return "".join(f"{line}\n" for line in lines)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _dynamodb(
    args: argparse.Namespace, progress: bool, err: TextIO, stdin: TextIO, deleting: threading.Event
) -> dict[str, Any]:
    clients, shown = _clients(args)
    if args.command == "status":
        try:
            job = _table_job(args, KIND_TTL_MONITOR, clients)
        except TtlOffError as off:
            return {"target": {**shown(), "table": off.table["TableName"]}, **_ttl_off_status(off.table)}
        result = {"target": {**shown(), "table": job.table}, **_run(job, clients, err, None, StopSwitch())}
        if args.function:
            result |= _paused_status(clients, args.function, err)
        if args.log_group:
            result["last_runs"] = last_runs(clients("logs"), args.log_group)
        return result
    job = _table_job(args, KIND_SWEEP, clients)
    if job.dry_run and args.yes and not args.plan_out and not args.dry_run:
        err.write(f"{PROG}: job {job.name} is a dry run (dry_run: true): --yes deletes nothing\n")
    target = {**shown(), "table": job.table}
    if job.s3:
        target["bucket"] = job.s3.bucket
    plan_target = {**target, "bucket": target.get("bucket")}
    deployed = _deployed_of_table(args, job, clients, target, err)
    if (args.plan or args.plan_out) and job.kind != KIND_SWEEP:
        raise UsageError(f"--plan, --plan-out: saved plans are for {KIND_SWEEP} jobs, not {job.kind}")
    switch = StopSwitch()
    given: Plan | None
    if args.plan:  # the saved plan, checked against this command: nothing is planned again
        given, made = saved_plan.load(args.plan, job, plan_target, time.time())
        err.write(f"target: {_target_text(target)}\n")
        planned: dict[str, Any] = {"dry_run": job.dry_run, "plan": report(job, given)}
        err.write(f"planned: {_plan_text(planned['plan'])} (saved plan {args.plan}, made {iso(made)})\n")
    else:
        err.write(f"target: {_target_text(target)}\n")
        planning = saved_plan.PlanRun(clients)
        sweeping = planning if job.kind == KIND_SWEEP else None
        planned = _run(dataclasses.replace(job, dry_run=True), clients, err, None, switch, sweeping)
        err.write(f"planned: {_plan_text(planned.get('plan') or {})}\n")
        given = planning.plan
        if args.plan_out and given and not switch.stopped.is_set():
            Path(args.plan_out).write_text(saved_plan.dumps(given, job, plan_target, planning.now))
            planned["plan_file"] = args.plan_out
    plan = planned.get("plan") or {}
    counts = plan.get("counts") or {}
    nothing = not any(counts.get(key) for key in ("items_to_delete", "orphans_to_delete", "orphan_uploads_to_abort"))
    stopped = {"interrupted": True} if switch.stopped.is_set() else {}
    if deployed and not stopped:
        now = time.time() if args.plan else planning.now
        _check_deployed(job, given, deployed, clients, now, switch, counts, err)
    if job.dry_run or plan.get("refused") or stopped or nothing:
        return {"target": target, **planned, **stopped}
    if not args.yes:
        err.write(_keys_text(plan))
        if not _confirm(f"Delete as planned from {job.table}?", job.table, stdin, err):
            raise NotConfirmedError
    total = counts.get("items_to_delete", 0) + counts.get("orphans_to_delete", 0)
    deleting.set()
    carrying_out = saved_plan.PlanRun(clients, given) if given else None  # the plan shown, not a new one
    done = _run(job, clients, err, total if progress else None, switch, carrying_out)
    return {"target": target, **done} | ({"interrupted": True} if switch.stopped.is_set() else {})


def _deployed_of_table(
    args: argparse.Namespace, job: Job, clients: Callable[[str], Any], target: dict[str, Any], err: TextIO
) -> list[Deployed]:
    """The deployed sweep jobs of the table of an ad-hoc sweep (--table, --job), shown on the target line; none
    for --function (it is the deployed job) or with --ignore-deployed (shown instead). Listing denied: the
    sweep fails closed, a dry run goes on with a warning."""
    if args.command != "sweep" or args.function:
        return []
    if args.ignore_deployed:
        target["deployed"] = f"not checked ({OVERRIDE})"
        return []
    try:
        found = deployed_jobs(clients("lambda"), job.table, job.kind)
    except LookupDeniedError as denied:
        if not job.dry_run:
            raise
        err.write(f"{PROG}: warning: {denied}\n".replace("; nothing was deleted", "; a dry run deletes nothing"))
        return []
    if found:
        target["deployed"] = ",".join(d.function for d in found)
    return found


def _check_deployed(
    job: Job,
    given: Plan | None,
    deployed: list[Deployed],
    clients: Callable[[str], Any],
    now: float,
    switch: "StopSwitch",
    counts: dict[str, Any],
    err: TextIO,
) -> None:
    """Refuse (DeployedJobError) an ad-hoc plan that deletes what a deployed job of the table keeps: each
    deployed job is planned on the same data with the same clock and the plans compared (cli_deployed). A
    dry run is warned, not refused. A plan that deletes and marks nothing passes unplanned."""
    acting = ("items_to_delete", "items_to_mark", "uploads_to_abort", "objects_to_delete", "orphans_to_delete")
    if job.kind == KIND_SWEEP and not any(counts.get(key) for key in (*acting, "orphan_uploads_to_abort")):
        return
    planned: list[tuple[Deployed, Plan | None]] = []
    for d in deployed:
        if given is None or d.job.hook or d.job.dry_run:  # no plan to compare, or nothing it deletes
            planned.append((d, None if given is None else Plan()))
        else:
            planned.append((d, plan_deployed(d.job, job, clients, now, switch.stopped.is_set)))
    if switch.stopped.is_set():
        return  # interrupted while planning: nothing is carried out
    reason = deployed_refusal(job, given, planned)
    if reason is None:
        return
    if job.dry_run:
        err.write(f"{PROG}: warning: {reason} (a dry run: nothing is deleted)\n")
        return
    raise DeployedJobError(f"{reason}; nothing was deleted")


def main(
    argv: Sequence[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr, stdin: TextIO = sys.stdin
) -> int:
    """The CLI; settings written by 0.3 (a --job file, a function not yet updated) are read with one
    warning line per renamed key."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", SettingsDeprecationWarning)
        shown = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], *rest: Any, **named: Any) -> None:
            if issubclass(category, SettingsDeprecationWarning):
                err.write(f"{PROG}: warning: {message}\n")
            else:
                shown(message, category, *rest, **named)

        warnings.showwarning = show
        return _main(argv, out, err, stdin)


def _main(argv: Sequence[str] | None, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    as_json = False
    deleting = threading.Event()  # set once a run may delete: an interruption then cannot say "nothing"
    try:
        args = _parser().parse_args(argv)
        as_json = args.json
        if args.command in ("pause", "resume"):
            _print(_pause(args, err), args.json, out)
            return 0
        if getattr(args, "ignore_deployed", False) and OVERRIDE not in (sys.argv[1:] if argv is None else argv):
            raise UsageError(f"{OVERRIDE}: must be spelled out in full")
        progress = args.progress if getattr(args, "progress", None) is not None else err.isatty()
        if args.command == "sweep" and not (args.dry_run or args.plan_out or args.yes or stdin.isatty()):
            raise UsageError("sweep deletes data: run it with --dry-run first, then with --yes (or on a terminal)")
        _refuse_changes_to_the_deployed_job(args)
        if args.postgres and (getattr(args, "plan", None) or getattr(args, "plan_out", None)):
            raise UsageError("--plan, --plan-out: saved plans are for DynamoDB sweeps, not --postgres")
        if args.postgres:
            result = _postgres(args, err, progress and args.command == "sweep", stdin, deleting)
        else:
            result = _dynamodb(args, progress, err, stdin, deleting)
        _print(result, args.json, out)
        refused = (result.get("plan") or {}).get("refused") or result.get("refused")  # DynamoDB's, PostgreSQL's
        if refused:
            err.write(f"{PROG}: error: {refused if isinstance(refused, str) else refused[0]}\n")
            return REFUSED
        return INTERRUPTED if result.get("interrupted") else 0
    except NotConfirmedError:
        return _fail("not confirmed; nothing was deleted", NOT_CONFIRMED, as_json, out, err)
    except RefusedError as error:
        return _fail(str(error), REFUSED, as_json, out, err)
    except DeployedJobError as error:
        return _fail(str(error), USAGE, as_json, out, err)
    except LookupDeniedError as error:
        return _fail(str(error), FAILED, as_json, out, err)
    except cli_pause.PauseDeniedError as error:
        return _fail(f"AWS: {error}", FAILED, as_json, out, err)
    except cli_pause.NotPausableError as error:
        return _fail(str(error), USAGE, as_json, out, err)
    except KeyboardInterrupt:
        if deleting.is_set():
            return _fail(INTERRUPTED_WHILE_DELETING, INTERRUPTED, as_json, out, err)
        return _fail("interrupted; nothing was deleted", INTERRUPTED, as_json, out, err)
    except (UsageError, ValueError) as error:  # a wrong command line, or a wrong setting (JobConfigError too)
        return _fail(str(error), USAGE, as_json, out, err)
    except (ClientError, BotoCoreError) as error:
        return _fail(f"AWS: {error}", FAILED, as_json, out, err)
    except Exception as error:  # noqa: BLE001 - psycopg and OS errors: one line, no traceback
        return _fail(f"{type(error).__name__}: {_first_line(error)}", FAILED, as_json, out, err)


def _fail(message: str, code: int, as_json: bool, out: TextIO, err: TextIO) -> int:
    """One line on stderr (and, with --json, an error object on stdout)."""
    if as_json:
        out.write(json.dumps({"error": message, "exit_code": code}) + "\n")
    err.write(f"{PROG}: error: {message}\n")
    return code
