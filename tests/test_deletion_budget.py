"""One mass-deletion budget per table: the breaker's limits hold across invocations, shards, fan-out
and retries within a window, through the budget ledger (moto, in-process and moto_server)."""

import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from uploads_world import (
    BUCKET,
    NOW,
    S3_SETTINGS,
    TABLE,
    Run,
    create_ledger,
    create_table,
    object_keys,
    put_session,
    sweep_job,
)

from expiry.components import alarm_rules
from expiry.components.scheduled_sweeper import ScheduledSweeper
from expiry.runtime.dynamodb.deletion_budget import LEDGER_KEY, LEDGER_TTL
from expiry.runtime.dynamodb.ttl import expiry_shard
from expiry.runtime.handlers.work import references_work, sweep_work
from expiry.runtime.jobs import metrics
from expiry.runtime.jobs.config import Breaker, Job, JobConfigError, parse_job
from expiry.runtime.jobs.runner import Work, run_job

LEDGER = "expiry-deletion-budget"
SHARDS = 10
ITEMS = 200
INDEX = {"expiry_index_name": "expiry-index", "expiry_index_shards": SHARDS, "expiry_shard_attribute": "expiry_shard"}
BUDGET = {"window_seconds": 3600}  # the breaker, with the ledger LEDGERED names
LEDGERED = {"budget_table_name": LEDGER}


def ledger_record(dynamodb: Any, table: str = TABLE) -> dict[str, int] | None:
    item = dynamodb.get_item(TableName=LEDGER, Key={LEDGER_KEY: {"S": table}}, ConsistentRead=True).get("Item")
    return None if item is None else {name: int(value["N"]) for name, value in item.items() if "N" in value}


def run_at(job: Job, work: Work, now: float = NOW, event: Any = None) -> Run:
    """A run as its handler makes it, with the clock at ``now``."""
    stream = io.StringIO()
    summary = run_job(job, work, None, clock=lambda: now, stream=stream, event=event)
    return Run(summary, [json.loads(line) for line in stream.getvalue().splitlines()])


def clients(aws: Any, dynamodb: Any = None) -> Any:
    return lambda service: {"dynamodb": dynamodb or aws.dynamodb, "s3": aws.s3}[service]


def remaining(dynamodb: Any) -> int:
    return dynamodb.scan(TableName=TABLE, Select="COUNT")["Count"]


@pytest.fixture
def expired(aws):
    """The finding's table: 200 items, all expired, over 10 expiry-index shards; and a ledger."""
    create_table(aws.dynamodb, expiry_index=True)
    create_ledger(aws.dynamodb, LEDGER)
    sessions = [f"session-{n}" for n in range(ITEMS)]
    for start in range(0, ITEMS, 25):
        puts = [
            {
                "PutRequest": {
                    "Item": {
                        "uploadSessionId": {"S": session},
                        "ttl": {"N": str(NOW - 60)},
                        "expiry_shard": {"S": expiry_shard(session, SHARDS)},
                    }
                }
            }
            for session in sessions[start : start + 25]
        ]
        aws.dynamodb.batch_write_item(RequestItems={TABLE: puts})
    return aws


def test_ten_shard_invocations_delete_no_more_than_one_run_may(expired):
    """Issue 18, finding 4: one run is refused, and ten {"shards": [k]} invocations deleted 181 of 200."""
    job = sweep_job(**INDEX, breaker=BUDGET, **LEDGERED)
    whole = run_at(job, sweep_work(clients(expired)))
    assert whole.counts.get("items_deleted", 0) == 0 and whole.emf[metrics.MASS_DELETION_REFUSED] == 1
    runs = [run_at(job, sweep_work(clients(expired)), event={"shards": [k]}) for k in range(SHARDS)]
    deleted = ITEMS - remaining(expired.dynamodb)
    assert 0 < deleted <= ITEMS // 2  # breaker.max_share (50 %) of the table, across all ten
    assert sum(r.counts.get("items_deleted", 0) for r in runs) == deleted
    refused = [r for r in runs if r.summary["plan"]["refused"]]
    assert refused and all(r.emf[metrics.MASS_DELETION_REFUSED] == 1 for r in refused)
    assert all(r.counts.get("items_deleted", 0) == 0 for r in refused)  # a refused run deletes nothing
    assert "reserved by earlier runs in this window" in refused[0].summary["plan"]["refused"][0]
    assert all(r.summary["breaker"] == "per-table" for r in runs)
    record = ledger_record(expired.dynamodb)
    assert record is not None and record["items_reserved"] == deleted and record["items_base"] == ITEMS


class SerializedLedger:
    """The DynamoDB client with the ledger's reads held until every invocation has read (so all ten race
    for the same version), and conditional writes applied one at a time, as DynamoDB applies writes to
    one item (moto applies them without a per-item lock)."""

    def __init__(self, inner: Any, racers: int) -> None:
        self.inner, self.lock = inner, threading.Lock()
        self.first_reads = threading.Barrier(racers, timeout=60)
        self.held = threading.local()

    def get_item(self, **kwargs: Any) -> Any:
        if kwargs["TableName"] == LEDGER and not getattr(self.held, "read", False):
            self.held.read = True
            response = self.inner.get_item(**kwargs)
            self.first_reads.wait()
            return response
        return self.inner.get_item(**kwargs)

    def update_item(self, **kwargs: Any) -> Any:
        with self.lock:
            return self.inner.update_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_concurrent_shard_invocations_share_one_budget(expired):
    job = sweep_job(**INDEX, breaker=BUDGET, **LEDGERED)
    dynamodb = SerializedLedger(expired.dynamodb, SHARDS)
    with ThreadPoolExecutor(max_workers=SHARDS) as pool:
        runs = list(
            pool.map(
                lambda k: run_at(job, sweep_work(clients(expired, dynamodb)), event={"shards": [k]}), range(SHARDS)
            )
        )
    deleted = ITEMS - remaining(expired.dynamodb)
    assert 0 < deleted <= ITEMS // 2
    assert any(r.summary["plan"]["refused"] for r in runs)
    record = ledger_record(expired.dynamodb)
    assert record is not None and record["items_reserved"] == deleted
    assert record["version"] == sum(1 for r in runs if not r.summary["plan"]["refused"])  # one write per reservation


def test_a_run_within_the_budget_deletes_and_reserves_what_it_planned(aws):
    create_table(aws.dynamodb)
    create_ledger(aws.dynamodb, LEDGER)
    for n in range(30):
        put_session(aws.dynamodb, f"live-{n}", NOW + 3600)
    for n in range(12):
        put_session(aws.dynamodb, f"gone-{n}", NOW - 60)
    result = run_at(sweep_job(breaker=BUDGET, **LEDGERED), sweep_work(clients(aws)))
    assert result.counts["items_deleted"] == 12 and result.summary["plan"]["refused"] == []
    budget = result.summary["budget"]
    assert budget["ledger"] == LEDGER and budget["window_ends"] == NOW + 3600
    assert budget["items"] == {"reserved_before": 0, "planned": 12, "base": 42, "allowed": 21}
    record = ledger_record(aws.dynamodb)
    assert record is not None and (record["items_reserved"], record["items_base"]) == (12, 42)
    assert record["window_opened"] == NOW and record[LEDGER_TTL] > record["window_ends"]  # TTL after the window


def test_the_window_rolls_over(expired):
    job = sweep_job(**INDEX, breaker=BUDGET, **LEDGERED)
    for k in range(SHARDS):
        run_at(job, sweep_work(clients(expired)), event={"shards": [k]})
    first = ITEMS - remaining(expired.dynamodb)
    assert first <= ITEMS // 2
    within = run_at(job, sweep_work(clients(expired)), now=NOW + 3599)  # the window's last second
    assert within.counts.get("items_deleted", 0) == 0 and within.summary["plan"]["refused"]
    later = NOW + 3600  # the window ended: a new one, judged against the table as it is now
    runs = [run_at(job, sweep_work(clients(expired)), now=later, event={"shards": [k]}) for k in range(SHARDS)]
    second = ITEMS - first - remaining(expired.dynamodb)
    assert 0 < second <= (ITEMS - first) // 2
    judged = [r.summary["budget"] for r in runs if "budget" in r.summary]  # shards left to sweep
    assert judged and all(budget["window_opened"] == later for budget in judged)
    record = ledger_record(expired.dynamodb)
    assert record is not None and (record["window_opened"], record["items_reserved"]) == (later, second)


def test_a_dry_run_judges_the_window_and_reserves_nothing(expired):
    job = sweep_job(**INDEX, breaker=BUDGET, **LEDGERED)
    for k in range(SHARDS):
        run_at(job, sweep_work(clients(expired)), event={"shards": [k]})
    before = ledger_record(expired.dynamodb)
    dry = run_at(job, sweep_work(clients(expired)), event={"shards": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "dryRun": True})
    assert dry.summary["dry_run"] is True and dry.summary["plan"]["refused"]
    assert ledger_record(expired.dynamodb) == before


def test_breaker_off_is_named_in_the_summary_and_metric(expired):
    off = run_at(
        sweep_job(**INDEX, breaker={**BUDGET, "allow_mass_deletion": True}, **LEDGERED), sweep_work(clients(expired))
    )
    assert off.summary["breaker"] == "off" and off.emf[metrics.BREAKER_DISABLED] == 1
    assert remaining(expired.dynamodb) == 0 and "budget" not in off.summary
    assert ledger_record(expired.dynamodb) is None  # the breaker off asks no ledger
    per_run = run_at(sweep_job(), sweep_work(clients(expired)))
    assert per_run.summary["breaker"] == "per-run" and per_run.emf[metrics.BREAKER_DISABLED] == 0


def test_orphaned_objects_have_their_own_budget_for_the_window(aws):
    create_table(aws.dynamodb)
    create_ledger(aws.dynamodb, LEDGER)
    aws.s3.create_bucket(Bucket=BUCKET)

    def put(owner: str, with_item: bool) -> None:
        key = f"uploads/2025-08-21/{owner}.mp4"
        aws.s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
        if with_item:
            put_session(aws.dynamodb, owner, NOW + 86400, key=key)

    for n in range(25):
        put(f"owned-{n}", with_item=True)
    for n in range(15):
        put(f"orphan-{n}", with_item=False)
    orphans = {"prefix": "uploads/", "older_than_seconds": 86400, "id_pattern": r"^uploads/[^/]+/(?P<id>[^/]+)\.mp4$"}
    job = sweep_job(s3=S3_SETTINGS, orphaned_objects=orphans, breaker=BUDGET, **LEDGERED)
    first = run_at(job, sweep_work(clients(aws)))
    assert first.counts["orphans_deleted"] == 15  # 15 of 40 examined: within 50 %
    for n in range(10):
        put(f"late-orphan-{n}", with_item=False)
    second = run_at(job, sweep_work(clients(aws)))  # 10 of 35 alone; 25 of 40 in the window
    assert second.counts.get("orphans_deleted", 0) == 0
    assert second.summary["plan"]["refused"][0].startswith("orphaned objects: 10 to delete after 15 reserved")
    assert len([k for k in object_keys(aws.s3) if "late-orphan" in k]) == 10
    record = ledger_record(aws.dynamodb)
    assert record is not None and (record["orphaned_objects_reserved"], record["orphaned_objects_base"]) == (15, 40)


def test_index_entries_have_their_own_budget_for_the_window(aws):
    table = "attributes"
    create_table(aws.dynamodb, name=table, hash_key="id", range_key="bucket_name")
    create_ledger(aws.dynamodb, LEDGER)

    def entry(token: str, with_target: bool) -> None:
        if with_target:
            aws.dynamodb.put_item(TableName=table, Item={"id": {"S": "actor"}, "bucket_name": {"S": f"tokens:{token}"}})
        aws.dynamodb.put_item(
            TableName=table,
            Item={"id": {"S": "_index"}, "bucket_name": {"S": f"_token:{token}"}, "data": {"S": "actor"}},
        )

    for n in range(25):
        entry(f"live-{n}", with_target=True)
    for n in range(15):
        entry(f"gone-{n}", with_target=False)
    job = parse_job(
        {
            "kind": "orphaned-references",
            "job_name": "index-cleanup",
            "table_name": table,
            "key_attributes": ["id", "bucket_name"],
            "references": {
                "hash_value": "_index",
                "owner_attribute": "data",
                "indexes": [{"range_prefix": "_token:", "target": ["{owner}", "tokens:{token}"]}],
            },
            "breaker": BUDGET,
            **LEDGERED,
        }
    )
    first = run_at(job, references_work(clients(aws)))
    assert first.counts["orphans_deleted"] == 15 and first.summary["breaker"] == "per-table"
    for n in range(10):
        entry(f"late-{n}", with_target=False)
    second = run_at(job, references_work(clients(aws)))
    assert second.counts.get("orphans_deleted", 0) == 0 and second.emf[metrics.MASS_DELETION_REFUSED] == 1
    assert second.summary["plan"]["refused"][0].startswith("index entries: 10 to delete after 15 reserved")
    record = ledger_record(aws.dynamodb, table)
    assert record is not None and record["index_entries_reserved"] == 15 and record["items_reserved"] == 0


@pytest.mark.parametrize(
    ("settings", "kind", "message"),
    [
        ({"breaker": {"window_seconds": 3600}}, "sweep", r"breaker\.window_seconds: needs budget_table_name"),
        (
            {**LEDGERED, "breaker": {"window_seconds": 10}},
            "sweep",
            r"breaker\.window_seconds: must be an integer in 60",
        ),
        ({"budget_table_name": ""}, "sweep", r"budget_table_name: must be a non-empty string"),
        ({**LEDGERED, "breaker": {"ttl": 1}}, "sweep", r"breaker: unknown settings \['ttl'\]"),
        ({**LEDGERED, "breaker": {}}, "pg-purge", r"budget_table_name: only sweep and orphaned-references jobs"),
    ],
)
def test_budget_settings_that_are_wrong_name_the_field(settings, kind, message):
    raw: dict[str, Any] = {"kind": kind, "job_name": "job", "table_name": TABLE, "key_attributes": ["id"], **settings}
    if kind == "pg-purge":
        raw |= {
            "postgres": {"host": "db", "database": "app", "secret_arn": "arn:aws:secretsmanager:x"},
            "purge": {"expiry_column": "expires_at"},
        }
    with pytest.raises(JobConfigError, match=message):
        parse_job(raw)


# The ledger in ScheduledSweeper, under Pulumi's mocks --------------------------------------------------

FUNCTION = "aws:lambda/function:Function"
DYNAMODB_TABLE = "aws:dynamodb/table:Table"
TABLE_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/upload-sessions"


def sweeper_args(**overrides: Any) -> dict[str, Any]:
    return {
        "kind": "sweep",
        "schedule": "rate(6 hours)",
        "table_name": TABLE,
        "table_arn": TABLE_ARN,
        "key_attributes": ["uploadSessionId"],
        "ttl_attribute": "ttl",
        **overrides,
    }


def deployed_job(harness: Any, function: str) -> Job:
    variables = harness.one(FUNCTION, f"{function}-function").inputs["environment"]["variables"]
    return parse_job(json.loads(variables["EXPIRY_JOB"]))


def budget_statement(harness: Any, name: str) -> dict[str, Any] | None:
    policy = json.loads(harness.one("aws:iam/rolePolicy:RolePolicy", f"{name}-policy").inputs["policy"])
    return next((s for s in policy["Statement"] if s["Sid"] == "DeletionBudget"), None)


def test_a_sweeper_creates_its_ledger_and_reserves_in_it(pulumi_mocks):
    sweeper = pulumi_mocks.run(lambda: ScheduledSweeper("video", sweeper_args()))
    ledger = pulumi_mocks.one(DYNAMODB_TABLE, "video-budget")
    assert ledger.parent == pulumi_mocks.urn_of("expiry:index:ScheduledSweeper", "video")
    inputs = ledger.inputs
    assert (inputs["hashKey"], inputs["attributes"]) == (LEDGER_KEY, [{"name": LEDGER_KEY, "type": "S"}])
    assert inputs["billingMode"] == "PAY_PER_REQUEST"
    assert inputs["ttl"] == {"attributeName": LEDGER_TTL, "enabled": True}
    job = deployed_job(pulumi_mocks, "video")
    assert job.breaker.budget_table == "video-budget-physical"
    assert job.breaker.window_seconds == 6 * 3600  # the schedule's interval: each run has the budget it had
    ledger_arn = pulumi_mocks.value(sweeper.budget_table_arn)
    assert budget_statement(pulumi_mocks, "video") == {
        "Sid": "DeletionBudget",
        "Effect": "Allow",
        "Action": ["dynamodb:GetItem", "dynamodb:UpdateItem"],
        "Resource": [ledger_arn],
    }
    assert pulumi_mocks.value(sweeper.budget_table_name) == "video-budget-physical"


def test_sweepers_share_a_ledger_they_are_given(pulumi_mocks):
    def program() -> None:
        first = ScheduledSweeper("video", sweeper_args())
        shared = {"budget_table_name": first.budget_table_name, "budget_table_arn": first.budget_table_arn}
        ScheduledSweeper("index", sweeper_args(job_name="index", breaker={"window_seconds": 600}, **shared))

    pulumi_mocks.run(program)
    assert [r.name for r in pulumi_mocks.of_type(DYNAMODB_TABLE)] == ["video-budget"]
    assert deployed_job(pulumi_mocks, "index").breaker == Breaker(
        budget_table="video-budget-physical", window_seconds=600
    )
    assert budget_statement(pulumi_mocks, "index") == budget_statement(pulumi_mocks, "video")


def test_a_job_that_deletes_nothing_has_no_ledger(pulumi_mocks):
    sweeper = pulumi_mocks.run(lambda: ScheduledSweeper("monitor", sweeper_args(kind="ttl-monitor")))
    assert pulumi_mocks.of_type(DYNAMODB_TABLE) == []
    assert budget_statement(pulumi_mocks, "monitor") is None
    assert pulumi_mocks.value(sweeper.budget_table_name) is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"budget_table_name": "ledger"}, "budget_table_arn: budget_table_name and budget_table_arn go together"),
        (
            {"kind": "ttl-monitor", "budget_table_name": "ledger", "budget_table_arn": "arn:ledger"},
            "budget_table_name: only sweep and orphaned-references jobs reserve deletions",
        ),
        ({"breaker": {"budget_table": "ledger"}}, "breaker.budget_table: is set by the component"),
        ({"breaker": {"window_seconds": 30}}, "breaker.window_seconds: must be an integer in 60..604800"),
    ],
)
def test_ledger_args_that_are_wrong_name_the_field(pulumi_mocks, overrides, message):
    with pytest.raises(ValueError, match=r"^ScheduledSweeper: ") as error:
        pulumi_mocks.run(lambda: ScheduledSweeper("video", sweeper_args(**overrides)))
    assert message in str(error.value)
    assert pulumi_mocks.resources == []


@pytest.mark.parametrize(
    ("kind", "alarmed"),
    [("sweep", True), ("orphaned-references", True), ("pg-purge", True), ("ttl-monitor", False)],
)
def test_a_breaker_left_off_is_alarmed(kind, alarmed):
    job = alarm_rules.Job("job", kind, TABLE, "Expiry", 3600, 300)
    specs = {spec.alarm: spec for spec in alarm_rules.job_alarms(job, alarm_rules.Settings())}
    assert ("breaker-disabled" in specs) is alarmed
    if alarmed:
        spec = specs["breaker-disabled"]
        assert (spec.metric, spec.statistic, spec.threshold) == (metrics.BREAKER_DISABLED, "Maximum", 1)
        assert (spec.comparison, spec.missing_data) == ("GreaterThanOrEqualToThreshold", "notBreaching")
