"""ScheduledSweeper's fan_out (issue 21): under Pulumi's mocks, the state machine, its IAM, the schedule's
target, the refusals and the URNs of sweepers without it; then its Map interpreted locally, each item
running the sweep handler in-process against moto with the exact payload the definition builds."""

import json
import re
import time
from typing import Any

import pytest
from stack_config import stack_config
from test_stack_program import jobs, run_program
from uploads_world import SHARDS, create_ledger, create_table, put_session, session_ids

from expiry.components.scheduled_sweeper import ScheduledSweeper
from expiry.runtime.handlers.work import entry_point
from expiry.runtime.jobs.config import KIND_SWEEP
from stack.settings import SettingError

FUNCTION = "aws:lambda/function:Function"
POLICY = "aws:iam/rolePolicy:RolePolicy"
SCHEDULE = "aws:scheduler/schedule:Schedule"
MACHINE = "aws:sfn/stateMachine:StateMachine"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
ACCOUNT, REGION = "123456789012", "us-east-1"
TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/upload-sessions"
LEDGER = "expiry-deletion-budget"
INDEX = {"expiry_index_name": "expiry-index", "expiry_index_shards": SHARDS, "expiry_shard_attribute": "expiry_shard"}


@pytest.fixture(autouse=True)
def build_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPIRY_BUILD_DIR", str(tmp_path / "build"))
    return tmp_path / "build"


def sweeper_args(**overrides: Any) -> dict[str, Any]:
    return {
        "kind": "sweep",
        "schedule": "rate(1 hour)",
        "table_name": "upload-sessions",
        "table_arn": TABLE_ARN,
        "key_attributes": ["uploadSessionId"],
        "ttl_attribute": "ttl",
        "unindexed_check_items": 0,
        "budget_table_name": LEDGER,
        "budget_table_arn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{LEDGER}",
        **INDEX,
        **overrides,
    }


def build(harness, args: dict[str, Any], name: str = "video") -> ScheduledSweeper:
    return harness.run(lambda: ScheduledSweeper(name, args))


def policy(harness, name: str) -> dict[str, Any]:
    return json.loads(harness.one(POLICY, name).inputs["policy"])


def asl(harness) -> dict[str, Any]:
    return json.loads(harness.one(MACHINE).inputs["definition"])


def test_the_state_machine_maps_every_shard_in_distributed_mode(pulumi_mocks):
    build(pulumi_mocks, sweeper_args(fan_out={"max_concurrency": 3, "tolerated_failure_percentage": 25}))
    machine = pulumi_mocks.one(MACHINE, "video-fan-out")
    assert machine.inputs["type"] == "STANDARD"
    assert machine.parent == pulumi_mocks.one("expiry:index:ScheduledSweeper", "video").urn
    definition = asl(pulumi_mocks)
    states = definition["States"]
    assert definition["StartAt"] == "Shards" and states["Shards"]["Next"] == "Sweep shards"
    assert states["Shards"]["Parameters"]["shards"] == list(range(SHARDS))
    fan = states["Sweep shards"]
    assert fan["Type"] == "Map" and fan["ItemsPath"] == "$.shards" and fan["Next"] == "Summary"
    assert fan["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert (fan["MaxConcurrency"], fan["ToleratedFailurePercentage"]) == (3, 25)
    assert fan["ItemSelector"] == {
        "shards.$": "States.Array($$.Map.Item.Value)",
        "source": "expiry-schedule",
        "job": "video",
        "dryRun.$": "$.run.dryRun",
    }
    task = fan["ItemProcessor"]["States"][fan["ItemProcessor"]["StartAt"]]
    function_arn = _function_arn()
    assert task["Resource"] == "arn:aws:states:::lambda:invoke" and task["End"] is True
    assert task["Parameters"] == {"FunctionName": function_arn, "Payload.$": "$"}
    assert "Lambda.TooManyRequestsException" in task["Retry"][0]["ErrorEquals"]
    assert "Lambda.ServiceException" in task["Retry"][0]["ErrorEquals"]
    assert set(task["ResultSelector"]) == {"dry_run.$", "stopped_early.$", "counts.$"}
    assert states["Summary"]["Type"] == "Pass" and states["Summary"]["End"] is True
    # The children run together: the function's reserved concurrency is the Map's.
    assert pulumi_mocks.one(FUNCTION).inputs["reservedConcurrentExecutions"] == 3


def _function_arn() -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:video-function/video-function-physical"


def test_defaults_are_ten_at_once_and_no_failure_tolerated(pulumi_mocks):
    build(pulumi_mocks, sweeper_args(fan_out={}))
    fan = asl(pulumi_mocks)["States"]["Sweep shards"]
    assert (fan["MaxConcurrency"], fan["ToleratedFailurePercentage"]) == (10, 0)


def test_iam_is_exact_and_the_schedule_starts_the_state_machine(pulumi_mocks):
    build(pulumi_mocks, sweeper_args(fan_out={}))
    function_arn = _function_arn()
    machine_arn = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:video-fan-out-physical"
    queue_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:video-dlq/video-dlq-physical"
    assert policy(pulumi_mocks, "video-fan-out-policy")["Statement"] == [
        {
            "Sid": "Invoke",
            "Effect": "Allow",
            "Action": ["lambda:InvokeFunction"],
            "Resource": [function_arn, f"{function_arn}:*"],
        },
        {"Sid": "StartChildren", "Effect": "Allow", "Action": ["states:StartExecution"], "Resource": [machine_arn]},
        {
            "Sid": "ManageChildren",
            "Effect": "Allow",
            "Action": ["states:DescribeExecution", "states:StopExecution"],
            "Resource": [f"arn:aws:states:{REGION}:{ACCOUNT}:execution:video-fan-out-physical/*"],
        },
    ]
    machine = pulumi_mocks.one(MACHINE)
    trust = json.loads(pulumi_mocks.one("aws:iam/role:Role", "video-fan-out-role").inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "states.amazonaws.com"}
    assert trust["Statement"][0]["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}
    mocked_machine_arn = f"arn:aws:sfn:{REGION}:{ACCOUNT}:video-fan-out/video-fan-out-physical"  # the mocks' ARN
    assert policy(pulumi_mocks, "video-scheduler-policy")["Statement"] == [
        {
            "Sid": "StartFanOut",
            "Effect": "Allow",
            "Action": ["states:StartExecution"],
            "Resource": [mocked_machine_arn],
        },
        {"Sid": "DeadLetters", "Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": [queue_arn]},
    ]
    target = pulumi_mocks.one(SCHEDULE).inputs["target"]
    assert target["arn"] == mocked_machine_arn != function_arn
    assert json.loads(target["input"]) == {"source": "expiry-schedule", "job": "video"}
    assert machine.inputs["roleArn"].endswith("video-fan-out-role-physical")
    alarm = pulumi_mocks.one(ALARM, "video-fan-out-failed").inputs
    assert (alarm["namespace"], alarm["metricName"], alarm["dimensions"]) == (
        "AWS/States",
        "ExecutionsFailed",
        {"StateMachineArn": mocked_machine_arn},
    )
    assert (alarm["comparisonOperator"], alarm["threshold"]) == ("GreaterThanThreshold", 0)
    assert not alarm.get("alarmActions")  # a ScheduledSweeper has no alarm topic


BAD = [
    ({"kind": "orphaned-references", "references": None}, "fan_out: fans an orphaned-references job out over"),
    ({"expiry_index_name": None}, "fan_out: needs an expiry index"),
    ({"fan_out": {"max_concurrency": 0}}, "fan_out.max_concurrency: must be an integer in 1..1000, got 0"),
    ({"fan_out": {"max_concurrency": 1001}}, "fan_out.max_concurrency: must be an integer in 1..1000"),
    ({"fan_out": {"max_concurrency": True}}, "fan_out.max_concurrency"),
    (
        {"fan_out": {"tolerated_failure_percentage": 101}},
        "fan_out.tolerated_failure_percentage: must be a number in 0..100",
    ),
    ({"fan_out": {"tolerated_failure_percentage": -1}}, "fan_out.tolerated_failure_percentage"),
    ({"fan_out": {"tolerated_failure_percentage": "5"}}, "fan_out.tolerated_failure_percentage"),
    ({"fan_out": {"concurrency": 5}}, "fan_out: unknown fields ['concurrency']"),
    ({"fan_out": [10]}, "fan_out: must be a mapping"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_fan_out_is_refused_by_name_before_anything_registers(pulumi_mocks, build_dir, overrides, message):
    args = sweeper_args(fan_out={})
    args.update(overrides)
    if overrides.get("kind") == "orphaned-references":
        args["references"] = {
            "hash_value": "_actingweb_oauth2",
            "indexes": [{"range_prefix": "_access_token_index:", "target": ["{owner}", "mcp_tokens:{token}"]}],
            "owner_attribute": "data",
        }
        args["key_attributes"] = ["id", "bucket_name"]
        for key in INDEX:
            args.pop(key)
    if overrides.get("expiry_index_name", "") is None:
        for key in INDEX:
            args.pop(key)
    with pytest.raises(ValueError) as error:
        build(pulumi_mocks, args)
    assert str(error.value).startswith("ScheduledSweeper: fan_out")
    assert message in str(error.value)
    assert pulumi_mocks.resources == []
    assert not build_dir.exists() or not any(build_dir.iterdir())


def test_a_monitor_cannot_fan_out(pulumi_mocks):
    args = sweeper_args(kind="ttl-monitor", fan_out={})
    for key in ("budget_table_name", "budget_table_arn"):
        args.pop(key)
    with pytest.raises(ValueError, match="ScheduledSweeper: fan_out: only sweep jobs .* fan out, not ttl-monitor"):
        build(pulumi_mocks, args)
    assert pulumi_mocks.resources == []


def test_transforms_of_fan_out_children_need_fan_out(pulumi_mocks):
    with pytest.raises(ValueError, match="state_machine"):
        pulumi_mocks.run(lambda: ScheduledSweeper("video", sweeper_args(), transforms={"state_machine": lambda a: a}))
    assert pulumi_mocks.resources == []


def test_without_fan_out_nothing_changes(pulumi_mocks):
    build(pulumi_mocks, sweeper_args())
    before = {(r.type, r.urn) for r in pulumi_mocks.resources}
    assert pulumi_mocks.of_type(MACHINE) == [] and pulumi_mocks.of_type(ALARM) == []
    assert pulumi_mocks.one(SCHEDULE).inputs["target"]["arn"] == _function_arn()
    assert pulumi_mocks.one(FUNCTION).inputs["reservedConcurrentExecutions"] == 1
    scheduler = policy(pulumi_mocks, "video-scheduler-policy")["Statement"]
    assert [s["Sid"] for s in scheduler] == ["Invoke", "DeadLetters"]
    assert {urn for _, urn in before} == URNS


COMPONENT_URN = "urn:pulumi:test::expiry::pulumi:pulumi:Stack$expiry:index:ScheduledSweeper::video"
URNS = {COMPONENT_URN} | {
    f"urn:pulumi:test::expiry::expiry:index:ScheduledSweeper${t}::{n}"
    for t, n in [
        ("aws:cloudwatch/logGroup:LogGroup", "video-logs"),
        ("aws:iam/role:Role", "video-role"),
        ("aws:iam/rolePolicy:RolePolicy", "video-policy"),
        ("aws:lambda/function:Function", "video-function"),
        ("aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig", "video-async"),
        ("aws:sqs/queue:Queue", "video-dlq"),
        ("aws:iam/role:Role", "video-scheduler-role"),
        ("aws:iam/rolePolicy:RolePolicy", "video-scheduler-policy"),
        ("aws:scheduler/schedule:Schedule", "video-schedule"),
    ]
}
FAN_OUT_URNS = {
    f"urn:pulumi:test::expiry::expiry:index:ScheduledSweeper${t}::{n}"
    for t, n in [
        (MACHINE, "video-fan-out"),
        ("aws:iam/role:Role", "video-fan-out-role"),
        (POLICY, "video-fan-out-policy"),
        (ALARM, "video-fan-out-failed"),
    ]
}


def test_with_fan_out_the_other_children_keep_their_urns(pulumi_mocks):
    build(pulumi_mocks, sweeper_args(fan_out={}))
    assert {r.urn for r in pulumi_mocks.resources} == URNS | FAN_OUT_URNS


# The stack program.


def test_the_stack_fans_the_upload_sweeper_out_when_asked(pulumi_mocks):
    run_program(
        pulumi_mocks,
        stack_config("dev", fanOut=True, expiryIndexShards=4, uploadsWritersSetExpiryShard=True),
    )
    machines = [m for m in pulumi_mocks.of_type(MACHINE) if m.name.startswith("upload")]
    assert [m.name for m in machines] == ["upload-sweeper-fan-out"]
    fan = json.loads(machines[0].inputs["definition"])["States"]["Sweep shards"]
    assert fan["ItemSelector"]["job"] == "upload-sweeper" and fan["MaxConcurrency"] == 10
    assert json.loads(machines[0].inputs["definition"])["States"]["Shards"]["Parameters"]["shards"] == [0, 1, 2, 3]
    assert jobs(pulumi_mocks)["upload-sweeper"].breaker.budget_table  # the shared ledger
    schedules = {s.name: s.inputs["target"]["arn"] for s in pulumi_mocks.of_type(SCHEDULE)}
    assert ":video" not in schedules["upload-sweeper-schedule"]
    assert schedules["upload-sweeper-schedule"].endswith("upload-sweeper-fan-out-physical")
    # The ActingWeb job fans out over its indexes: tests/test_fan_out_indexes.py.


def test_the_stack_without_fan_out_has_no_state_machine(pulumi_mocks):
    run_program(pulumi_mocks, stack_config("dev", expiryIndexShards=4, uploadsWritersSetExpiryShard=True))
    assert pulumi_mocks.of_type(MACHINE) == []


def test_the_stack_refuses_fan_out_without_an_expiry_index(pulumi_mocks):
    with pytest.raises(SettingError, match=r"expiry:fanOut: .*expiryIndexShards > 0"):
        run_program(pulumi_mocks, stack_config("dev", fanOut=True))


# The Map, interpreted: each item runs the handler with the payload the definition builds.

PATH = re.compile(r"^\$(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _path(document: Any, path: str) -> Any:
    assert PATH.match(path), f"not interpreted here: {path}"
    for part in path.split(".")[1:]:
        document = document[part]
    return document


def _intrinsic(expression: str, state: Any, item: Any) -> Any:
    """The few intrinsics and paths the definition uses, exactly; anything else fails the test."""
    if expression == "$$.Map.Item.Value":
        return item
    if expression.startswith("States.Array(") and expression.endswith(")"):
        return [_intrinsic(expression[len("States.Array(") : -1], state, item)]
    merge = re.fullmatch(r"States\.JsonMerge\(States\.StringToJson\('(.*)'\), \$, false\)", expression)
    if merge:
        assert isinstance(state, dict)
        return {**json.loads(merge.group(1)), **state}
    return _path(state, expression)


def _select(template: dict[str, Any], state: Any, item: Any = None) -> dict[str, Any]:
    return {
        key.removesuffix(".$"): _intrinsic(value, state, item) if key.endswith(".$") else value
        for key, value in template.items()
    }


def run_definition(definition: dict[str, Any], execution_input: dict[str, Any], invoke) -> dict[str, Any]:
    """The state machine run locally: Pass (Parameters), Map (ItemsPath, ItemSelector, one invocation per
    item; the Task's Parameters and ResultSelector), Pass; Retry and concurrency are Step Functions'."""
    states, name, state = definition["States"], definition["StartAt"], execution_input
    while True:
        current = states[name]
        if current["Type"] == "Pass":
            state = _select(current["Parameters"], state)
        elif current["Type"] == "Map":
            processor = current["ItemProcessor"]
            task = processor["States"][processor["StartAt"]]
            assert task["Resource"] == "arn:aws:states:::lambda:invoke"
            results = []
            for item in _path(state, current["ItemsPath"]):
                payload = _select(current["ItemSelector"], state, item)
                assert task["Parameters"]["Payload.$"] == "$"
                response = {"Payload": invoke(task["Parameters"]["FunctionName"], payload), "StatusCode": 200}
                results.append(_select(task["ResultSelector"], response))
            state = {**state, current["ResultPath"].removeprefix("$."): results}
        else:
            raise AssertionError(f"not interpreted here: {current['Type']}")
        if current.get("End"):
            return state
        name = current["Next"]


def deployed(pulumi_mocks, **overrides: Any) -> tuple[dict[str, Any], str]:
    """The registered definition and the function's EXPIRY_JOB."""
    build(pulumi_mocks, sweeper_args(fan_out={"max_concurrency": 2}, **overrides))
    environment = pulumi_mocks.one(FUNCTION).inputs["environment"]["variables"]["EXPIRY_JOB"]
    return asl(pulumi_mocks), environment


def invoker(monkeypatch, environment: str, payloads: list[dict[str, Any]]):
    monkeypatch.setenv("EXPIRY_JOB", environment)
    handler = entry_point(KIND_SWEEP)  # reads EXPIRY_JOB now, as at cold start

    def invoke(function_arn: str, payload: dict[str, Any]) -> dict[str, Any]:
        assert function_arn == _function_arn()
        payloads.append(payload)
        return json.loads(json.dumps(handler(json.loads(json.dumps(payload)), None)))

    return invoke


def world(dynamodb: Any, expired: int, live: int) -> None:
    create_table(dynamodb, expiry_index=True)
    create_ledger(dynamodb, LEDGER)
    now = int(time.time())
    for n in range(expired):
        put_session(dynamodb, f"old.{n}", now - 60, shard=True)
    for n in range(live):
        put_session(dynamodb, f"live.{n}", now + 3600, shard=True)


def test_the_interpreted_map_sweeps_every_shard_with_its_payload(pulumi_mocks, aws_in_process, monkeypatch):
    definition, environment = deployed(pulumi_mocks)
    world(aws_in_process.dynamodb, expired=8, live=40)
    payloads: list[dict[str, Any]] = []
    result = run_definition(
        definition, {"source": "expiry-schedule", "job": "video"}, invoker(monkeypatch, environment, payloads)
    )
    assert payloads == [
        {"shards": [k], "source": "expiry-schedule", "job": "video", "dryRun": False} for k in range(SHARDS)
    ]
    assert session_ids(aws_in_process.dynamodb) == {f"live.{n}" for n in range(40)}  # every expired item gone
    assert result["shards"] == list(range(SHARDS)) and len(result["children"]) == SHARDS
    assert sum(child["counts"]["items_deleted"] for child in result["children"]) == 8
    assert all(child["dry_run"] is False for child in result["children"])


def test_a_dry_run_execution_reaches_every_child(pulumi_mocks, aws_in_process, monkeypatch):
    definition, environment = deployed(pulumi_mocks)
    world(aws_in_process.dynamodb, expired=8, live=0)
    payloads: list[dict[str, Any]] = []
    result = run_definition(definition, {"dryRun": True}, invoker(monkeypatch, environment, payloads))
    assert all(p["dryRun"] is True for p in payloads) and len(payloads) == SHARDS
    assert len(session_ids(aws_in_process.dynamodb)) == 8
    assert all(child["dry_run"] is True for child in result["children"])


def test_the_breaker_holds_across_the_children(pulumi_mocks, aws_in_process, monkeypatch):
    """All 60 items expired: each shard alone is over half of what it examined, and so is the table;
    the children together delete no more than the breaker allows of the whole table."""
    definition, environment = deployed(pulumi_mocks, breaker={"max_share": 0.25, "ignore_below": 5})
    world(aws_in_process.dynamodb, expired=60, live=0)
    run_definition(definition, {"source": "expiry-schedule", "job": "video"}, invoker(monkeypatch, environment, []))
    deleted = 60 - len(session_ids(aws_in_process.dynamodb))
    assert 0 < deleted <= max(5, int(0.25 * 60)), f"{deleted} of 60 deleted"


def test_a_count_limit_holds_for_the_children_together(pulumi_mocks, aws_in_process, monkeypatch):
    """40 expired items over 4 shards, at most 12 deletions in the window: each child alone would stay
    under it (about 10 each), so only the shared ledger keeps the four together at 12 or fewer."""
    definition, environment = deployed(pulumi_mocks, breaker={"max_share": 1.0, "max_count": 12, "ignore_below": 0})
    world(aws_in_process.dynamodb, expired=40, live=0)
    result = run_definition(definition, {}, invoker(monkeypatch, environment, []))
    deleted = 40 - len(session_ids(aws_in_process.dynamodb))
    assert 0 < deleted <= 12, f"{deleted} of 40 deleted"
    assert sum(child["counts"].get("items_deleted", 0) for child in result["children"]) == deleted
    assert sum(child["counts"].get("mass_deletion_refused", 0) for child in result["children"]) >= 1
