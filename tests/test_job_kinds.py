"""The registry of job kinds: every kind is whole, and a new kind reaches the parser, the runner, the
policy and the alarms through its registration alone."""

import dataclasses
import importlib
import importlib.util
import io
import json
from typing import Any

import pytest

from expiry.components import alarm_rules
from expiry.components.provider_host import ExpiryProvider
from expiry.components.sweeper_policy import function_policy
from expiry.runtime import kinds
from expiry.runtime.jobs import metrics as m
from expiry.runtime.jobs.config import parse_job
from expiry.runtime.jobs.runner import run_job
from expiry.runtime.kinds.iam import Arns, statement
from expiry.runtime.kinds.kind import JobKind

TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table/t"


@pytest.mark.parametrize("registered", kinds.REGISTERED, ids=lambda k: k.name)
def test_every_kind_names_a_handler_work_metrics_and_alarms_that_exist(registered: JobKind):
    module, _, attribute = registered.handler.rpartition(".")
    spec = importlib.util.find_spec(module)  # importing it reads EXPIRY_JOB: a handler starts at import
    assert spec and spec.origin
    with open(spec.origin) as source:
        assert f"\n{attribute} = " in source.read()
    assert callable(registered.work_factory())
    assert set(registered.metrics) <= set(m.UNITS)
    assert set(registered.alarms) <= set(alarm_rules.ALARMS)
    assert registered.description.endswith(".") and "\n" not in registered.description
    assert kinds.kind(registered.name) is registered


def test_an_unknown_kind_is_refused_naming_the_registered_ones():
    with pytest.raises(KeyError, match="registered: ttl-monitor, sweep, orphaned-references"):
        kinds.kind("sweeep")


def test_the_plugin_offers_the_scheduled_kinds_each_described_by_its_registration():
    schema = json.loads(ExpiryProvider().schema or "{}")
    enum = schema["types"]["expiry:index:JobKind"]["enum"]
    assert [entry["value"] for entry in enum] == list(kinds.names(scheduled=True))
    assert all(entry["description"] == kinds.kind(entry["value"]).description for entry in enum)


def toy_work(clients: Any) -> Any:
    def work(job: Any, now: float, should_stop: Any, tally: Any) -> dict[str, Any]:
        tally.add("items_skipped", 3)
        return {m.EXPIRED_BACKLOG: 7}

    return work


TOY = JobKind(
    name="toy-count",
    description="Count what a toy would delete.",
    handler="expiry.runtime.handlers.sweep.handler",
    work=f"{__name__}:toy_work",
    metrics=(m.ITEMS_SKIPPED, m.EXPIRED_BACKLOG),
    grants=lambda job, arns: ({"dynamodb:Scan"}, [statement("Toy", ["dynamodb:DescribeTable"], [str(arns.table)])]),
    alarms=("backlog",),
    deletes=True,
)


@pytest.fixture
def toy_registered(monkeypatch: pytest.MonkeyPatch) -> JobKind:
    """TOY registered the way a new kind is: one more entry in REGISTERED (and the index built from it)."""
    monkeypatch.setattr(kinds, "REGISTERED", (*kinds.REGISTERED, TOY))
    monkeypatch.setattr(kinds, "KINDS", {**kinds.KINDS, TOY.name: TOY})
    return TOY


def test_a_registered_kind_is_parsed_run_granted_and_watched(toy_registered: JobKind):
    job = parse_job(
        {"kind": "toy-count", "job_name": "toy", "table_name": "t", "key_attributes": ["id"], "breaker": {}}
    )
    assert job.kind == "toy-count" and "toy-count" in kinds.names(deletes=True)

    stream = io.StringIO()
    summary = run_job(job, kinds.kind(job.kind).work_factory()(None), None, stream=stream)
    assert summary["counts"]["items_skipped"] == 3
    emitted = [json.loads(line) for line in stream.getvalue().splitlines() if "_aws" in line]
    assert {m.ITEMS_SKIPPED, m.EXPIRED_BACKLOG} <= {key for line in emitted for key in line}

    policy = function_policy(job, Arns(TABLE, "arn:aws:logs:us-east-1:123456789012:log-group:toy"), "")
    sids = {s["Sid"]: s for s in policy["Statement"]}
    assert sids["Toy"]["Resource"] == [TABLE] and "dynamodb:Scan" in sids["Table"]["Action"]

    watched = alarm_rules.Job("toy", "toy-count", "t", "Expiry", 3600, 900)
    alarms = {spec.alarm for spec in alarm_rules.job_alarms(watched, alarm_rules.settings({}))}
    assert {"heartbeat", "backlog"} <= alarms and "ttl-disabled" not in alarms


def test_an_unregistered_kind_is_refused_by_the_parser_naming_the_field():
    with pytest.raises(ValueError, match="kind: must be one of ttl-monitor, sweep"):
        parse_job({"kind": "toy-count", "job_name": "toy", "table_name": "t", "key_attributes": ["id"]})


def test_a_kind_is_plain_data():
    assert all(dataclasses.is_dataclass(registered) for registered in kinds.REGISTERED)
