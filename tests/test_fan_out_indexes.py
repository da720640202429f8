"""Fan-out of an orphaned-references job over its references' indexes (issue 21): under Pulumi's mocks,
the definition, its exact IAM and the refusals; the `indexes` payload's refusals by name; then the Map
interpreted locally (tests/test_fan_out.py's interpreter), each child the real orphaned-references
handler against moto on ActingWeb's attributes layout."""

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stack_config import stack_config
from test_fan_out import ACCOUNT, ALARM, FUNCTION, LEDGER, MACHINE, POLICY, REGION, SCHEDULE, run_definition
from test_monitor_and_references import ATTRIBUTES, BUCKETS, SYSTEM, keys, put_attribute, put_token
from test_stack_program import jobs, run_program
from uploads_world import create_ledger, create_table

from expiry.components.fan_out import checked_fan_out
from expiry.components.scheduled_sweeper import ScheduledSweeper
from expiry.runtime.dynamodb.deletion_budget import LEDGER_KEY
from expiry.runtime.handlers.work import entry_point
from expiry.runtime.jobs.config import KIND_ORPHANED_REFERENCES, JobConfigError, parse_job
from expiry.runtime.jobs.payload import as_invoked
from stack.settings import SettingError
from stack.systems import ACTINGWEB_REFERENCES

NAME = "aw"
TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{ATTRIBUTES}"
LEDGER_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{LEDGER}"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:{NAME}-function/{NAME}-function-physical"
INDEXES = len(ACTINGWEB_REFERENCES["indexes"])
SOURCE = {"source": "expiry-schedule", "job": NAME}


@pytest.fixture(autouse=True)
def build_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPIRY_BUILD_DIR", str(tmp_path / "build"))
    return tmp_path / "build"


def cleanup_args(**overrides: Any) -> dict[str, Any]:
    return {
        "kind": "orphaned-references",
        "schedule": "cron(0 3 * * ? *)",
        "table_name": ATTRIBUTES,
        "table_arn": TABLE_ARN,
        "key_attributes": ["id", "bucket_name"],
        "ttl_attribute": "ttl_timestamp",
        "references": ACTINGWEB_REFERENCES,
        "budget_table_name": LEDGER,
        "budget_table_arn": LEDGER_ARN,
        **overrides,
    }


def build(harness, args: dict[str, Any]) -> ScheduledSweeper:
    return harness.run(lambda: ScheduledSweeper(NAME, args))


def policy(harness, name: str) -> dict[str, Any]:
    return json.loads(harness.one(POLICY, name).inputs["policy"])


def asl(harness) -> dict[str, Any]:
    return json.loads(harness.one(MACHINE).inputs["definition"])


def test_the_state_machine_maps_every_index_in_distributed_mode(pulumi_mocks):
    build(pulumi_mocks, cleanup_args(fan_out={"max_concurrency": 3, "tolerated_failure_percentage": 25}))
    definition = asl(pulumi_mocks)
    states = definition["States"]
    assert (
        definition["Comment"]
        == f"Expiry: orphaned-references job {NAME}, one invocation per index of references.indexes"
    )
    assert definition["StartAt"] == "Indexes" and states["Indexes"]["Next"] == "Clean indexes"
    assert states["Indexes"]["Parameters"] == {
        "run.$": "States.JsonMerge(States.StringToJson('{\"dryRun\":false}'), $, false)",
        "indexes": list(range(INDEXES)),
    }
    fan = states["Clean indexes"]
    assert fan["Type"] == "Map" and fan["ItemsPath"] == "$.indexes" and fan["Next"] == "Summary"
    assert fan["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert (fan["MaxConcurrency"], fan["ToleratedFailurePercentage"]) == (3, 25)
    assert fan["ItemSelector"] == {
        "indexes.$": "States.Array($$.Map.Item.Value)",
        "source": "expiry-schedule",
        "job": NAME,
        "dryRun.$": "$.run.dryRun",
    }
    assert fan["ItemProcessor"]["StartAt"] == "Clean index"
    task = fan["ItemProcessor"]["States"]["Clean index"]
    assert task["Parameters"] == {"FunctionName": FUNCTION_ARN, "Payload.$": "$"} and task["End"] is True
    assert states["Summary"]["Parameters"] == {"job": NAME, "indexes.$": "$.indexes", "children.$": "$.children"}
    assert pulumi_mocks.one(FUNCTION).inputs["reservedConcurrentExecutions"] == 3
    alarm = pulumi_mocks.one(ALARM, f"{NAME}-fan-out-failed").inputs
    assert alarm["alarmDescription"] == (
        f"A fan-out execution of orphaned-references job {NAME} failed (its indexes: see the execution)."
    )


def test_iam_is_exact_and_the_function_keeps_its_own(pulumi_mocks):
    build(pulumi_mocks, cleanup_args())
    without = policy(pulumi_mocks, f"{NAME}-policy")
    pulumi_mocks.monitor.registered.clear()
    build(pulumi_mocks, cleanup_args(fan_out={}))
    assert policy(pulumi_mocks, f"{NAME}-policy") == without  # Query, GetItem, DeleteItem, the ledger: no Scan
    assert not any("dynamodb:Scan" in s["Action"] for s in without["Statement"])
    machine_arn = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{NAME}-fan-out-physical"
    assert policy(pulumi_mocks, f"{NAME}-fan-out-policy")["Statement"] == [
        {
            "Sid": "Invoke",
            "Effect": "Allow",
            "Action": ["lambda:InvokeFunction"],
            "Resource": [FUNCTION_ARN, f"{FUNCTION_ARN}:*"],
        },
        {"Sid": "StartChildren", "Effect": "Allow", "Action": ["states:StartExecution"], "Resource": [machine_arn]},
        {
            "Sid": "ManageChildren",
            "Effect": "Allow",
            "Action": ["states:DescribeExecution", "states:StopExecution"],
            "Resource": [f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{NAME}-fan-out-physical/*"],
        },
    ]
    mocked_machine_arn = f"arn:aws:sfn:{REGION}:{ACCOUNT}:{NAME}-fan-out/{NAME}-fan-out-physical"
    queue_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{NAME}-dlq/{NAME}-dlq-physical"
    assert policy(pulumi_mocks, f"{NAME}-scheduler-policy")["Statement"] == [
        {
            "Sid": "StartFanOut",
            "Effect": "Allow",
            "Action": ["states:StartExecution"],
            "Resource": [mocked_machine_arn],
        },
        {"Sid": "DeadLetters", "Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": [queue_arn]},
    ]
    assert pulumi_mocks.one(SCHEDULE).inputs["target"]["arn"] == mocked_machine_arn


ONE_INDEX = {**ACTINGWEB_REFERENCES, "indexes": ACTINGWEB_REFERENCES["indexes"][:1]}
BAD = [
    ({"references": ONE_INDEX}, "fan_out: fans an orphaned-references job out over its references.indexes"),
    ({"fan_out": {"max_concurrency": 0}}, "fan_out.max_concurrency: must be an integer in 1..1000, got 0"),
    ({"fan_out": {"segments": 4}}, "fan_out: unknown fields ['segments']"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_fan_out_is_refused_by_name_before_anything_registers(pulumi_mocks, build_dir, overrides, message):
    with pytest.raises(ValueError) as error:
        build(pulumi_mocks, cleanup_args(**{"fan_out": {}, **overrides}))
    assert str(error.value).startswith("ScheduledSweeper: fan_out") and message in str(error.value)
    assert pulumi_mocks.resources == []
    assert not build_dir.exists() or not any(build_dir.iterdir())


def test_with_one_index_the_message_says_how_many(pulumi_mocks):
    with pytest.raises(ValueError, match="it needs at least 2, got 1"):
        build(pulumi_mocks, cleanup_args(references=ONE_INDEX, fan_out={}))


def test_without_the_budget_ledger_there_is_no_fan_out():
    """The component always gives a deleting job a ledger; the check itself refuses a job without one."""
    with pytest.raises(ValueError, match="ScheduledSweeper: fan_out: needs the breaker's budget ledger"):
        checked_fan_out("ScheduledSweeper", {}, reference_job())


def test_without_fan_out_nothing_changes(pulumi_mocks):
    build(pulumi_mocks, cleanup_args())
    assert pulumi_mocks.of_type(MACHINE) == [] and pulumi_mocks.of_type(ALARM) == []
    assert pulumi_mocks.one(SCHEDULE).inputs["target"]["arn"] == FUNCTION_ARN
    assert pulumi_mocks.one(FUNCTION).inputs["reservedConcurrentExecutions"] == 1


# The `indexes` payload: a closed key, of this job's indexes only, narrowing only.


def reference_job(**settings: Any):
    return parse_job(
        {
            "kind": "orphaned-references",
            "job_name": NAME,
            "table_name": ATTRIBUTES,
            "key_attributes": ["id", "bucket_name"],
            "ttl_attribute": "ttl_timestamp",
            "references": ACTINGWEB_REFERENCES,
            **settings,
        }
    )


def sweep_job():
    return parse_job(
        {"kind": "sweep", "job_name": "s", "table_name": "t", "key_attributes": ["id"], "ttl_attribute": "ttl"}
    )


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (
            {"indexes": [INDEXES]},
            (
                "indexes: must be a non-empty list of distinct positions in this job's references.indexes "
                f"{list(range(INDEXES))}, got [{INDEXES}]"
            ),
        ),
        ({"indexes": [-1]}, "indexes: must be a non-empty list"),
        ({"indexes": []}, "indexes: must be a non-empty list"),
        ({"indexes": [1, 1]}, "indexes: must be a non-empty list of distinct positions"),
        ({"indexes": 1}, "indexes: must be a non-empty list"),
        ({"indexes": ["1"]}, "indexes: must be a non-empty list"),
        ({"indexes": [True]}, "indexes: must be a non-empty list"),
        ({"indexes": [0.5]}, "indexes: must be a non-empty list"),
        ({"indexes": "_access_token_index:"}, "indexes: must be a non-empty list"),
        ({"index": [0]}, "index: unknown key; did you mean 'indexes'?"),
        ({"Indexes": [0]}, "Indexes: unknown key; did you mean 'indexes'?"),
        ({"segments": [0]}, "segments: unknown key"),
        ({"segment": 0}, "segment: unknown key"),
        ({"shards": [0]}, "shards: unknown key"),  # no expiry index here
    ],
)
def test_bad_indexes_payloads_are_refused_by_name(event, message):
    with pytest.raises(JobConfigError) as error:
        as_invoked(reference_job(), event)
    assert str(error.value).startswith("invocation payload: ")
    assert message in str(error.value) and str(error.value).endswith("nothing was read or deleted")


@pytest.mark.parametrize("payload", [{"indexes": [INDEXES]}, {"indexes": [0, 0]}, {"segments": [0]}, {"Indexes": [0]}])
def test_the_handler_refuses_a_bad_payload_before_reading_or_deleting(
    pulumi_mocks, aws_in_process, monkeypatch, payload
):
    _, environment = deployed(pulumi_mocks)
    db = aws_in_process.dynamodb
    world(db)
    before = keys(db)
    key = next(iter(payload))
    with pytest.raises(JobConfigError, match=f"invocation payload: {key}: .*nothing was read or deleted"):
        invoker(monkeypatch, environment, [], [])(FUNCTION_ARN, {**SOURCE, **payload})
    assert keys(db) == before
    assert db.scan(TableName=LEDGER)["Items"] == []  # nothing reserved either


def test_a_job_without_references_refuses_indexes():
    with pytest.raises(JobConfigError, match="invocation payload: indexes: unknown key"):
        as_invoked(sweep_job(), {"indexes": [0]})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(-3, INDEXES + 2), st.booleans(), st.text(max_size=2)), max_size=6))
def test_an_indexes_payload_only_narrows(value):
    job = reference_job(dry_run=False)
    everything = job.references.indexes
    valid = (
        bool(value)
        and all(isinstance(k, int) and not isinstance(k, bool) and 0 <= k < INDEXES for k in value)
        and len(set(value)) == len(value)
    )
    if not valid:
        with pytest.raises(JobConfigError, match="invocation payload: indexes: "):
            as_invoked(job, {"indexes": value})
        return
    narrowed = as_invoked(job, {"indexes": value, "dryRun": False})
    assert narrowed.references.indexes == tuple(everything[k] for k in sorted(value))
    assert narrowed.breaker == job.breaker and narrowed.dry_run is False and narrowed.table == job.table
    assert narrowed.references.hash_value == job.references.hash_value


# The Map, interpreted: each child is the orphaned-references handler against moto.


def world(dynamodb: Any, orphans_per_index: int = 1, live_per_index: int = 0) -> set[tuple[str, str]]:
    """ActingWeb's layout: live tokens (entries kept), a deleted actor's entries in every index
    (orphans), an entry in its grace (TTL's); the orphaned entries' keys."""
    create_table(dynamodb, name=ATTRIBUTES, hash_key="id", range_key="bucket_name")
    create_ledger(dynamodb, LEDGER)
    now = int(time.time())
    for i in range(3):
        put_token(dynamodb, "_access_token_index", "actor-1", f"aw_live{i}", now + 3600)
    put_token(dynamodb, "_auth_code_index", "actor-1", "ac_live", now + 600)
    put_token(dynamodb, "_refresh_token_index", "actor-1", "rt_live", now + 30 * 86400)
    put_token(dynamodb, "_client_index", "actor-1", "mcp_client_live", None)
    put_attribute(dynamodb, "actor-1", "_properties", "email", "a@example.com", None)
    put_token(dynamodb, "_auth_code_index", "actor-1", "ac_grace", now - 1800, with_target=False)
    for n in range(live_per_index):
        for index in BUCKETS:
            put_token(dynamodb, index, "actor-3", f"more{n}", now + 3600)
    orphans = set()
    for n in range(orphans_per_index):
        for index, ttl in (
            ("_auth_code_index", now + 600),
            ("_access_token_index", now + 1800),
            ("_refresh_token_index", now + 20 * 86400),
            ("_client_index", None),
        ):
            put_token(dynamodb, index, "actor-2", f"gone{n}", ttl, with_target=False)
            orphans.add((SYSTEM, f"{index}:gone{n}"))
    return orphans


def deployed(pulumi_mocks, **overrides: Any) -> tuple[dict[str, Any], str]:
    """The registered definition and the function's EXPIRY_JOB."""
    build(pulumi_mocks, cleanup_args(fan_out={"max_concurrency": 2}, **overrides))
    environment = pulumi_mocks.one(FUNCTION).inputs["environment"]["variables"]["EXPIRY_JOB"]
    return asl(pulumi_mocks), environment


def invoker(monkeypatch, environment: str, payloads: list[dict[str, Any]], responses: list[dict[str, Any]]):
    monkeypatch.setenv("EXPIRY_JOB", environment)
    handler = entry_point(KIND_ORPHANED_REFERENCES)  # reads EXPIRY_JOB now, as at cold start

    def invoke(function_arn: str, payload: dict[str, Any]) -> dict[str, Any]:
        assert function_arn == FUNCTION_ARN
        payloads.append(payload)
        response = json.loads(json.dumps(handler(json.loads(json.dumps(payload)), None)))
        responses.append(response)
        return response

    return invoke


def test_every_orphan_is_deleted_and_live_entries_kept(pulumi_mocks, aws_in_process, monkeypatch):
    definition, environment = deployed(pulumi_mocks)
    db = aws_in_process.dynamodb
    orphans = world(db)
    before = keys(db)
    payloads: list[dict[str, Any]] = []
    result = run_definition(definition, dict(SOURCE), invoker(monkeypatch, environment, payloads, []))
    assert payloads == [{"indexes": [k], **SOURCE, "dryRun": False} for k in range(INDEXES)]
    assert before - keys(db) == orphans  # every orphan gone, nothing else: live entries and their targets stay
    assert (SYSTEM, "_auth_code_index:ac_grace") in keys(db)  # in its grace: TTL's to remove
    assert result["indexes"] == list(range(INDEXES)) and len(result["children"]) == INDEXES
    counts = [child["counts"] for child in result["children"]]
    assert [c.get("orphans_deleted", 0) for c in counts] == [1] * INDEXES
    assert sum(c.get("read_calls", 0) for c in counts) == INDEXES  # one Query per index, across the children


def test_a_dry_run_reaches_every_child_and_is_the_real_run(pulumi_mocks, aws_in_process, monkeypatch):
    definition, environment = deployed(pulumi_mocks)
    db = aws_in_process.dynamodb
    orphans = world(db, orphans_per_index=2)
    before = keys(db)
    payloads: list[dict[str, Any]] = []
    responses: list[dict[str, Any]] = []
    dry = run_definition(definition, {"dryRun": True}, invoker(monkeypatch, environment, payloads, responses))
    assert [p["dryRun"] for p in payloads] == [True] * INDEXES
    assert all(child["dry_run"] is True for child in dry["children"]) and keys(db) == before
    planned = {(k["id"], k["bucket_name"]) for r in responses for k in r["plan"]["sample"]["orphans_to_delete"]}
    assert planned == orphans
    run_definition(definition, dict(SOURCE), invoker(monkeypatch, environment, [], []))
    assert before - keys(db) == planned


def test_the_breaker_holds_across_the_children(pulumi_mocks, aws_in_process, monkeypatch):
    """10 orphans in each of 4 indexes, at most 12 deletions in the window: each child alone would stay
    under it, so only the shared ledger keeps the four together at 12 or fewer."""
    definition, environment = deployed(pulumi_mocks, breaker={"max_share": 1.0, "max_count": 12, "ignore_below": 0})
    db = aws_in_process.dynamodb
    orphans = world(db, orphans_per_index=10)
    result = run_definition(definition, {}, invoker(monkeypatch, environment, [], []))
    deleted = orphans - keys(db)
    assert 0 < len(deleted) <= 12, f"{len(deleted)} of {len(orphans)} deleted"
    assert keys(db) >= keys_of_live()
    assert sum(child["counts"].get("orphans_deleted", 0) for child in result["children"]) == len(deleted)
    assert sum(child["counts"].get("mass_deletion_refused", 0) for child in result["children"]) >= 1


def test_a_share_limit_holds_across_the_children(pulumi_mocks, aws_in_process, monkeypatch):
    """Each index alone is under the breaker's share (1 orphan among 5 or more entries, 25% allowed), but
    the table's window holds for all four children together: they delete no more than one share."""
    definition, environment = deployed(pulumi_mocks, breaker={"max_share": 0.25, "ignore_below": 0})
    db = aws_in_process.dynamodb
    orphans = world(db, orphans_per_index=1, live_per_index=4)
    result = run_definition(definition, {}, invoker(monkeypatch, environment, [], []))
    deleted = orphans - keys(db)
    largest = 3 + 4 + 1  # the access-token index: 3 live tokens, the 4 added, 1 orphan: the window's base
    assert 0 < len(deleted) <= int(0.25 * largest) < len(orphans), f"{len(deleted)} of {len(orphans)} deleted"
    assert sum(child["counts"].get("mass_deletion_refused", 0) for child in result["children"]) >= 1


def keys_of_live() -> set[tuple[str, str]]:
    live = {("actor-1", f"mcp_tokens:aw_live{i}") for i in range(3)}
    live |= {(SYSTEM, f"_access_token_index:aw_live{i}") for i in range(3)}
    return live | {("actor-1", "mcp_clients:mcp_client_live"), (SYSTEM, "_client_index:mcp_client_live")}


def test_the_rate_limit_holds_across_the_children(pulumi_mocks, aws_in_process, monkeypatch):
    """The children take their deletions from the same per-second records of the ledger."""
    limit = 2
    definition, environment = deployed(pulumi_mocks, breaker={"max_share": 1.0, "max_deletes_per_second": limit})
    db = aws_in_process.dynamodb
    orphans = world(db, orphans_per_index=1)
    run_definition(definition, {}, invoker(monkeypatch, environment, [], []))
    assert orphans.isdisjoint(keys(db))
    records = [
        item for item in db.scan(TableName=LEDGER)["Items"] if item[LEDGER_KEY]["S"].startswith(f"{ATTRIBUTES}#rate#")
    ]
    assert records and all(int(item["deletes"]["N"]) <= limit for item in records)
    assert sum(int(item["deletes"]["N"]) for item in records) >= len(orphans)


# The stack program.


def test_the_stack_fans_out_the_upload_sweeper_and_the_actingweb_job(pulumi_mocks):
    run_program(pulumi_mocks, stack_config("dev", fanOut=True, expiryIndexShards=4, uploadsWritersSetExpiryShard=True))
    machines = {m.name: json.loads(m.inputs["definition"]) for m in pulumi_mocks.of_type(MACHINE)}
    assert set(machines) == {"upload-sweeper-fan-out", "attribute-index-cleanup-fan-out"}
    actingweb = machines["attribute-index-cleanup-fan-out"]["States"]
    assert actingweb["Indexes"]["Parameters"]["indexes"] == list(range(INDEXES))
    assert actingweb["Clean indexes"]["ItemSelector"]["job"] == "attribute-index-cleanup"
    assert jobs(pulumi_mocks)["attribute-index-cleanup"].breaker.budget_table  # the shared ledger
    schedules = {s.name: s.inputs["target"]["arn"] for s in pulumi_mocks.of_type(SCHEDULE)}
    assert schedules["attribute-index-cleanup-schedule"].endswith("attribute-index-cleanup-fan-out-physical")


def test_the_stack_fans_out_the_actingweb_job_without_uploads(pulumi_mocks):
    run_program(pulumi_mocks, stack_config("dev", fanOut=True, uploadsEnabled=False))
    assert [m.name for m in pulumi_mocks.of_type(MACHINE)] == ["attribute-index-cleanup-fan-out"]


def test_the_stack_refuses_fan_out_with_nothing_to_fan_out(pulumi_mocks):
    with pytest.raises(SettingError, match=r"expiry:fanOut: .*uploadsEnabled and actingwebEnabled are both false"):
        run_program(pulumi_mocks, stack_config("dev", fanOut=True, uploadsEnabled=False, actingwebEnabled=False))
    assert pulumi_mocks.resources == []


def test_urns_are_unchanged_without_fan_out(pulumi_mocks):
    config = {"expiryIndexShards": 4, "uploadsWritersSetExpiryShard": True}
    run_program(pulumi_mocks, stack_config("dev", **config))
    without = {r.urn for r in pulumi_mocks.resources}
    pulumi_mocks.monitor.registered.clear()
    run_program(pulumi_mocks, stack_config("dev", fanOut=True, **config))
    with_fan_out = {r.urn for r in pulumi_mocks.resources}
    assert without < with_fan_out
    added = {urn.rsplit("::", 1)[1] for urn in with_fan_out - without}
    assert added == {
        f"{job}-{suffix}"
        for job in ("upload-sweeper", "attribute-index-cleanup")
        for suffix in ("fan-out", "fan-out-role", "fan-out-policy", "fan-out-failed")
    }
