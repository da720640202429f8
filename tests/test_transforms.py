"""Escape hatches (components/transforms.py): a transform per child reaches that child only, changes no
URN, is refused (with nothing registered) when its key is unknown, names a child the configuration
does not create, is not callable or changes what the rails stand on; an existing role or log group is
read, not created, and the least-privilege policy goes onto it."""

import json
import zipfile
from collections.abc import Callable
from typing import Any

import pulumi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pulumi_harness import Harness, RecordingMocks, RecordingMonitor
from test_user_mocks import pg_vpc

from expiry.components import lambda_parts
from expiry.components.cleanup_alarms import CHILDREN as ALARM_CHILDREN
from expiry.components.cleanup_alarms import CleanupAlarms
from expiry.components.pg_cron_cleanup import CHILDREN as PG_CHILDREN
from expiry.components.pg_cron_cleanup import PgCronCleanup
from expiry.components.scheduled_sweeper import CHILDREN as SWEEPER_CHILDREN
from expiry.components.scheduled_sweeper import FAN_OUT_CHILDREN, ScheduledSweeper
from expiry.components.stream_cascade import CHILDREN as CASCADE_CHILDREN
from expiry.components.stream_cascade import TtlStreamCascade
from expiry.components.transforms import Child
from expiry.components.ttl_table import CHILDREN as TABLE_CHILDREN
from expiry.components.ttl_table import TtlTable
from expiry.testing import ExpiryMocks

ROLE = "aws:iam/role:Role"
POLICY = "aws:iam/rolePolicy:RolePolicy"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
FUNCTION = "aws:lambda/function:Function"
TABLE_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/sessions"
STREAM_ARN = f"{TABLE_ARN}/stream/2026-01-01T00:00:00.000"
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf"
BOUNDARY = "arn:aws:iam::123456789012:policy/boundary"
KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.fixture(autouse=True)
def fake_layer(tmp_path, monkeypatch):
    """The psycopg layer is a stand-in zip: no download from PyPI."""
    layer = tmp_path / "layer.zip"
    with zipfile.ZipFile(layer, "w") as archive:
        archive.writestr("python/psycopg/__init__.py", "")
    monkeypatch.setattr(lambda_parts, "build_psycopg_layer", lambda *args: layer)


FAN_OUT_INDEX = {"expiry_index_name": "expiry-index", "expiry_index_shards": 4, "expiry_shard_attribute": "shard"}


def sweep(**overrides: Any) -> dict[str, Any]:
    return {
        "kind": "sweep",
        "schedule": "rate(6 hours)",
        "table_name": "sessions",
        "table_arn": TABLE_ARN,
        "key_attributes": ["id"],
        "subnet_ids": ["subnet-a"],
        "security_group_ids": ["sg-a"],
        **overrides,
    }


def pg_purge() -> dict[str, Any]:
    return {
        "kind": "pg-purge",
        "schedule": "rate(1 hour)",
        "table_name": "attributes",
        "postgres": {"host": "db.internal", "database": "app", "secret_arn": SECRET},
        "purge": {"expiry_column": "ttl_timestamp"},
    }


def cascade(**overrides: Any) -> dict[str, Any]:
    return {
        "archive_bucket": "archive",
        "table_name": "sessions",
        "table_arn": TABLE_ARN,
        "stream_arn": STREAM_ARN,
        "key_attributes": ["id"],
        **overrides,
    }


def pg_direct() -> dict[str, Any]:
    return {"table": "attributes", "expiry_column": "ttl_timestamp", "host": "db", "database": "app", "user": "u"}


def alarms(**overrides: Any) -> dict[str, Any]:
    return {
        "jobs": [
            {
                "job_name": "sweep",
                "kind": "sweep",
                "table_name": "sessions",
                "function_name": "sweep-fn",
                "log_group_name": "/expiry/sweep",
                "interval_seconds": 3600,
                "timeout_seconds": 300,
            }
        ],
        "email_addresses": ["ops@example.com"],
        **overrides,
    }


Build = Callable[..., pulumi.ComponentResource]
# (component, a builder taking transforms, its CHILDREN, the children this configuration has)
CASES: list[tuple[str, Build, dict[str, Child], set[str]]] = [
    ("TtlTable", lambda **t: TtlTable("t", {"hash_key": "id"}, **t), TABLE_CHILDREN, {"table"}),
    (
        "ScheduledSweeper",
        lambda **t: ScheduledSweeper("s", sweep(), **t),
        SWEEPER_CHILDREN,
        set(SWEEPER_CHILDREN) - {"psycopg_layer", *FAN_OUT_CHILDREN},
    ),
    (
        "ScheduledSweeper",
        lambda **t: ScheduledSweeper("s", sweep(fan_out={}, **FAN_OUT_INDEX), **t),
        SWEEPER_CHILDREN,
        set(SWEEPER_CHILDREN) - {"psycopg_layer"},
    ),
    (
        "ScheduledSweeper",
        lambda **t: ScheduledSweeper("s", pg_purge(), **t),
        SWEEPER_CHILDREN,
        set(SWEEPER_CHILDREN) - {"vpc_access", "budget_table", *FAN_OUT_CHILDREN},
    ),
    ("TtlStreamCascade", lambda **t: TtlStreamCascade("c", cascade(), **t), CASCADE_CHILDREN, set(CASCADE_CHILDREN)),
    ("PgCronCleanup", lambda **t: PgCronCleanup("p", pg_vpc(), **t), PG_CHILDREN, set(PG_CHILDREN) - {"job"}),
    ("PgCronCleanup", lambda **t: PgCronCleanup("p", pg_direct(), **t), PG_CHILDREN, {"job"}),
    ("CleanupAlarms", lambda **t: CleanupAlarms("a", alarms(), **t), ALARM_CHILDREN, set(ALARM_CHILDREN)),
]
PER_CHILD = [(case, key) for case in CASES for key in sorted(case[3])]


def children_of(harness: Harness) -> list[tuple[str, str, str]]:
    """(type, name, URN) of everything but the component, in registration order."""
    return sorted((r.type, r.name, r.urn) for r in harness.resources if r.parent is not None)


def fresh() -> Harness:
    pulumi.runtime.set_all_config({})
    monitor = RecordingMonitor(RecordingMocks())
    pulumi.runtime.set_mocks(monitor.mocks, project="expiry", stack="test", preview=False, monitor=monitor)
    return Harness(monitor)


def untransformed(build: Build) -> list[tuple[str, str, str]]:
    harness = fresh()
    harness.run(build)
    return children_of(harness)


@pytest.mark.parametrize(
    ("case", "key"), PER_CHILD, ids=[f"{case[0]}-{'+'.join(sorted(case[3]))[:12]}-{key}" for case, key in PER_CHILD]
)
def test_a_transform_reaches_exactly_its_children_and_changes_no_urn(pulumi_mocks, case, key):
    component, build, children, _ = case
    expected = untransformed(build)
    parented: list[bool] = []

    def spy(args: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        assert isinstance(args, dict) and isinstance(opts, pulumi.ResourceOptions)
        parented.append(opts.parent is not None)

    # Which child each call was: the transform sees the args; the names come from the CHILDREN table.
    harness = fresh()
    harness.run(lambda: build(transforms={key: spy}))
    assert children_of(harness) == expected  # a transform that changes nothing changes no URN
    child = children[key]
    meant = [(t, n) for t, n, _ in expected if child.matches(n.split("-")[0], t, n)]
    assert meant, f"{component}.{key} matches no child"
    assert len(parented) == len(meant) and all(parented)


def test_a_permissions_boundary_and_a_kms_key_reach_the_role_and_the_log_group_only(pulumi_mocks):
    def boundary(args: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        args["permissions_boundary"] = BOUNDARY

    def kms(args: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        args["kms_key_id"] = KMS_KEY

    def tag(args: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        args["tags"] = {**(args.get("tags") or {}), "cost-center": "42"}

    def describe(args: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        args["description"] = "cost-center 42"  # EventBridge Scheduler schedules take no tags

    pulumi_mocks.run(
        lambda: ScheduledSweeper(
            "s",
            sweep(tags={"team": "data"}),
            transforms={"role": boundary, "log_group": kms, "schedule": describe, "dead_letter_queue": tag},
        )
    )
    assert pulumi_mocks.one(ROLE, "s-role").inputs["permissionsBoundary"] == BOUNDARY
    assert "permissionsBoundary" not in pulumi_mocks.one(ROLE, "s-scheduler-role").inputs
    assert pulumi_mocks.one(LOG_GROUP, "s-logs").inputs["kmsKeyId"] == KMS_KEY
    assert pulumi_mocks.one("aws:scheduler/schedule:Schedule").inputs["description"] == "cost-center 42"
    assert pulumi_mocks.one("aws:sqs/queue:Queue").inputs["tags"] == {"team": "data", "cost-center": "42"}
    # The shared tags dict was copied for the transform: no other child got the tag.
    assert pulumi_mocks.one(ROLE, "s-role").inputs["tags"] == {"team": "data"}
    assert pulumi_mocks.one(FUNCTION).inputs["tags"] == {"team": "data"}


def test_transforms_reach_the_children_of_every_component(pulumi_mocks):
    def boundary(args: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        args["permissions_boundary"] = BOUNDARY

    def kms(args: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        args["kms_master_key_id"] = KMS_KEY

    def pitr_off(args: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        args["tags"] = {"backup": "none"}

    def protect(args: dict[str, Any], opts: pulumi.ResourceOptions) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(protect=True)

    def missing_data(args: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        args["alarm_description"] = "[team-x] " + args["alarm_description"]

    pulumi_mocks.run(
        lambda: (
            TtlTable("t", {"hash_key": "id"}, transforms={"table": pitr_off}),
            TtlStreamCascade("c", cascade(), transforms={"role": boundary, "failure_queue": kms}),
            PgCronCleanup("p", pg_vpc(), transforms={"role": boundary, "invocation": protect}),
            CleanupAlarms("a", alarms(), transforms={"topic": kms, "alarms": missing_data}),
        )
    )
    assert pulumi_mocks.one("aws:dynamodb/table:Table", "t-table").inputs["tags"] == {"backup": "none"}
    assert pulumi_mocks.one(ROLE, "c-role").inputs["permissionsBoundary"] == BOUNDARY
    assert pulumi_mocks.one("aws:sqs/queue:Queue", "c-failures").inputs["kmsMasterKeyId"] == KMS_KEY
    assert pulumi_mocks.one(ROLE, "p-provisioner-role").inputs["permissionsBoundary"] == BOUNDARY
    assert pulumi_mocks.one("aws:sns/topic:Topic").inputs["kmsMasterKeyId"] == KMS_KEY
    # Every alarm is CleanupAlarms' (a TtlStreamCascade makes none): its transform reaches them all.
    descriptions = [
        r.inputs["alarmDescription"] for r in pulumi_mocks.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    ]
    assert descriptions and all(d.startswith("[team-x] ") for d in descriptions)


REFUSALS = [
    ({"rol": lambda a, o: None}, "ScheduledSweeper: transforms.rol: unknown child; the children of a ScheduledSweeper"),
    ({"role": "permissions_boundary"}, "ScheduledSweeper: transforms.role: must be callable"),
    ({"psycopg_layer": lambda a, o: None}, "transforms.psycopg_layer: this ScheduledSweeper creates no psycopg_layer"),
]


@pytest.mark.parametrize(("transforms", "message"), REFUSALS, ids=["unknown", "not-callable", "absent"])
def test_bad_keys_and_values_are_refused_before_anything_registers(pulumi_mocks, transforms, message):
    with pytest.raises(ValueError) as error:
        pulumi_mocks.run(lambda: ScheduledSweeper("s", sweep(), transforms=transforms))
    assert message in str(error.value)
    if "unknown" in message:
        assert "role, policy, log_group, function" in str(error.value)
    assert pulumi_mocks.resources == []


def _change_environment(args: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
    args["environment"].variables["EXPIRY_JOB"] = json.dumps({"kind": "sweep", "dry_run": False})


def _add_a_variable(args: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
    args["environment"].variables["OTHER"] = "1"


def _widen_the_policy(args: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
    args["policy"] = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*"}]})


def _another_role(args: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
    args["role"] = "arn:aws:iam::123456789012:role/admin"


def _typo(args: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
    args["permission_boundary"] = BOUNDARY


def _tag_the_schedule(args: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
    args["tags"] = {"team": "data"}


def _reparent(args: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
    opts.parent = None


def _drop_depends_on(args: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
    opts.depends_on = []


RAIL_REFUSALS = [
    ("function", _change_environment, "transforms.function: changed environment of s-function"),
    ("function", _add_a_variable, "transforms.function: changed environment of s-function"),
    ("policy", _widen_the_policy, "transforms.policy: changed policy of s-policy: it is the least-privilege policy"),
    ("function", _another_role, "transforms.function: changed role of s-function"),
    ("role", _typo, "transforms.role: 'permission_boundary' is not an argument of aws:iam/role:Role (did you mean"),
    ("schedule", _tag_the_schedule, "transforms.schedule: 'tags' is not an argument of aws:scheduler/schedule"),
    ("log_group", _reparent, "transforms.log_group: must not change the child's parent"),
    ("function", _drop_depends_on, "transforms.function: must not drop the child's depends_on"),
]


@pytest.mark.parametrize(
    ("key", "transform", "message"), RAIL_REFUSALS, ids=[t.__name__.strip("_") for _, t, _ in RAIL_REFUSALS]
)
def test_a_transform_that_bypasses_the_rails_is_refused_and_nothing_registers(pulumi_mocks, key, transform, message):
    with pytest.raises(ValueError) as error:
        pulumi_mocks.run(lambda: ScheduledSweeper("s", sweep(), transforms={key: transform}))
    assert str(error.value).startswith("ScheduledSweeper: ")
    assert message in str(error.value)
    assert pulumi_mocks.resources == []


def test_the_stream_cascade_filter_and_the_pg_cron_job_are_rails_too(pulumi_mocks):
    def no_filter(args: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        args["filter_criteria"] = None

    with pytest.raises(ValueError, match="TtlStreamCascade: transforms.event_source_mapping: changed filter_criteria"):
        pulumi_mocks.run(lambda: TtlStreamCascade("c", cascade(), transforms={"event_source_mapping": no_filter}))
    assert pulumi_mocks.resources == []

    def bigger_batches(args: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        args["batch_size"] = 10**9

    with pytest.raises(ValueError, match="PgCronCleanup: transforms.job: changed batch_size of p-job"):
        pulumi_mocks.run(lambda: PgCronCleanup("p", pg_direct(), transforms={"job": bigger_batches}))
    assert pulumi_mocks.resources == []


def test_existing_role_and_log_group_are_read_and_carry_the_policy(pulumi_mocks):
    reads: list[tuple[str, str, str]] = []
    read = pulumi_mocks.monitor.ReadResource

    def recording(request: Any) -> Any:
        reads.append((request.type, request.name, request.id))
        return read(request)

    pulumi_mocks.monitor.ReadResource = recording  # type: ignore[method-assign]
    expected = untransformed(lambda: ScheduledSweeper("s", sweep()))
    harness = fresh()
    harness.monitor.ReadResource = recording  # type: ignore[method-assign]
    args = sweep(existing_role_name="bounded-lambda", existing_log_group_name="/team/encrypted")
    sweeper = harness.run(lambda: ScheduledSweeper("s", args))
    assert sorted(reads) == [
        (LOG_GROUP, "s-existing-logs", "/team/encrypted"),
        (ROLE, "s-existing-role", "bounded-lambda"),
    ]
    assert [r.name for r in harness.of_type(ROLE)] == ["s-scheduler-role"]
    assert harness.of_type(LOG_GROUP) == []
    policy = harness.one(POLICY, "s-policy")
    assert policy.inputs["role"] == "bounded-lambda"
    assert harness.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment").inputs["role"] == "bounded-lambda"
    function = harness.one(FUNCTION).inputs
    assert function["loggingConfig"]["logGroup"] == "/team/encrypted"
    logs_arn = harness.value(sweeper.log_group.arn)
    logs = {s["Sid"]: s for s in json.loads(policy.inputs["policy"])["Statement"]}["Logs"]
    assert logs["Resource"] == [logs_arn, f"{logs_arn}:*"]
    assert function["role"] == harness.value(sweeper.role.arn) == harness.value(sweeper.role_arn)
    assert harness.value(sweeper.log_group_name) == "/team/encrypted"
    # Everything else keeps its name and URN.
    unchanged = [c for c in expected if c[1] not in ("s-role", "s-logs")]
    assert children_of(harness) == unchanged


def test_existing_role_and_log_group_under_expiry_mocks_have_real_arns():
    pulumi.runtime.set_mocks(ExpiryMocks(), project="expiry", stack="test", preview=False)
    harness = Harness(RecordingMonitor(RecordingMocks()))  # only for run() and value()
    cascade_ = harness.run(
        lambda: TtlStreamCascade(
            "c", cascade(existing_role_name="bounded-lambda", existing_log_group_name="/team/encrypted")
        )
    )
    assert harness.value(cascade_.role.arn) == "arn:aws:iam::123456789012:role/bounded-lambda"
    assert harness.value(cascade_.log_group.arn) == "arn:aws:logs:us-east-1:123456789012:log-group:/team/encrypted"


@pytest.mark.parametrize(
    ("overrides", "transforms", "message"),
    [
        (
            {"existing_role_name": "mine"},
            {"role": lambda a, o: None},
            "ScheduledSweeper: transforms.role: this ScheduledSweeper creates no role: it conflicts with "
            "existing_role_name",
        ),
        (
            {"existing_log_group_name": "/mine"},
            {"log_group": lambda a, o: None},
            "transforms.log_group: this ScheduledSweeper creates no log_group: it conflicts with "
            "existing_log_group_name",
        ),
        (
            {"existing_log_group_name": "/mine", "log_retention_days": 7},
            None,
            "ScheduledSweeper: log_retention_days: conflicts with existing_log_group_name",
        ),
        ({"existing_role_name": "not a role"}, None, "ScheduledSweeper: existing_role_name: must be a role name"),
        ({"existing_log_group_name": ""}, None, "ScheduledSweeper: existing_log_group_name: must be a log group name"),
    ],
)
def test_conflicts_with_existing_resources_are_refused_naming_both(pulumi_mocks, overrides, transforms, message):
    with pytest.raises(ValueError) as error:
        pulumi_mocks.run(lambda: ScheduledSweeper("s", sweep(**overrides), transforms=transforms))
    assert message in str(error.value)
    assert pulumi_mocks.resources == []


def test_cascade_with_existing_role_attaches_its_policy_there(pulumi_mocks):
    with pytest.raises(ValueError, match="TtlStreamCascade: transforms.role: .*existing_role_name"):
        pulumi_mocks.run(
            lambda: TtlStreamCascade("c", cascade(existing_role_name="mine"), transforms={"role": lambda a, o: None})
        )
    harness = fresh()
    harness.run(lambda: TtlStreamCascade("c", cascade(existing_role_name="mine")))
    assert harness.of_type(ROLE) == []
    assert harness.one(POLICY, "c-policy").inputs["role"] == "mine"
    assert harness.one(LOG_GROUP, "c-logs")


SWEEP_PRESENT = [key for key in SWEEPER_CHILDREN if key not in ("psycopg_layer", *FAN_OUT_CHILDREN)]
BAD_KEYS = ["psycopg_layer", "rol", "Role", "alarms", ""]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(SWEEP_PRESENT + BAD_KEYS), st.booleans()),
        max_size=6,
        unique_by=lambda pair: pair[0],
    )
)
def test_any_mix_of_keys_registers_the_same_children_or_refuses_the_first_bad_one(pairs):
    expected = untransformed(lambda: ScheduledSweeper("s", sweep()))
    transforms: dict[str, Any] = {key: (lambda a, o: None) if callable_ else "not callable" for key, callable_ in pairs}
    harness = fresh()
    bad = [key for key, callable_ in pairs if key not in SWEEP_PRESENT or not callable_]
    if not bad:
        harness.run(lambda: ScheduledSweeper("s", sweep(), transforms=transforms))
        assert children_of(harness) == expected
        return
    with pytest.raises(ValueError) as error:
        harness.run(lambda: ScheduledSweeper("s", sweep(), transforms=transforms))
    assert str(error.value).startswith(f"ScheduledSweeper: transforms.{bad[0]}: ")
    assert harness.resources == []
