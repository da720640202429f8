"""Fan-out under IAM as AWS enforces it (issue 21): with the stack's expiry:fanOut on, the upload
sweeper's and the ActingWeb job's registered state machines are interpreted (tests/test_fan_out.py's
interpreter), and each child of their Map runs from the function's built archive, with the payload the
definition builds, under a session of a role holding exactly the policy the component generated,
against moto_server with IAM enforced (tests/iam_aws.py), on the seed systems' layouts
(tests/test_iam_enforced.py's Seeds). A call the policy does not allow fails the child; a granted
action no child calls fails the test."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import test_iam_enforced
from iam_aws import IamServer, denied, deploy_stack, without_actions
from pulumi_harness import ACCOUNT, REGION
from test_fan_out import MACHINE, run_definition
from test_iam_enforced import (
    CONFIGURATIONS,
    SERVICE_ACTIONS,
    SYSTEM,
    TOKEN_BUCKETS,
    UNUSED,
    Deployment,
    failures,
    ids,
    prepare,
)
from upload_system import Invocation

from stack.systems import ACTINGWEB_REFERENCES

iam_server, server = test_iam_enforced.iam_server, test_iam_enforced.server  # its moto_server's fixtures

SWEEPER, ACTINGWEB = "upload-sweeper", "attribute-index-cleanup"
JOBS = (SWEEPER, ACTINGWEB)
# The sweeper deletes expired sessions itself over its 4 expiry-index shards; both jobs fan out.
SETTINGS = {**CONFIGURATIONS["expiry-index"], "fanOut": True}
SOURCE = {"source": "expiry-schedule"}
UNITS = {SWEEPER: SETTINGS["expiryIndexShards"], ACTINGWEB: len(ACTINGWEB_REFERENCES["indexes"])}


class ChildFailedError(Exception):
    """A child of the Map failed: with no failure tolerated, so does the execution."""

    def __init__(self, run: Invocation) -> None:
        super().__init__(failures(run))
        self.run = run


def definitions(harness: Any) -> dict[str, dict[str, Any]]:
    """Each fanned-out job's registered state machine definition, by job."""
    machines = {m.name.removesuffix("-fan-out"): json.loads(m.inputs["definition"]) for m in harness.of_type(MACHINE)}
    assert set(machines) == set(JOBS), sorted(machines)
    return machines


Child = tuple[str, dict[str, Any], Invocation]


def children(deployment: Deployment, runs: list[Child]) -> Callable[[str, dict[str, Any]], dict[str, Any]]:
    """The Map's Lambda task: the function its FunctionName names, run from its archive with the
    payload the Map built; each child's job, payload and run kept in ``runs``."""

    def invoke(function_arn: str, payload: dict[str, Any]) -> dict[str, Any]:
        name = function_arn.rsplit(":", 1)[1].split("/")[0].removesuffix("-function")  # the mocks' ARN
        run = deployment.run(name, payload)
        runs.append((name, payload, run))
        if run.returncode:
            raise ChildFailedError(run)
        return dict(json.loads(run.stdout.split("RESULT ", 1)[1].splitlines()[0]))

    return invoke


def deployed(harness: Any, tmp_path: Path, monkeypatch: Any, moto: IamServer, without: str | None = None) -> Deployment:
    """The stack with fan-out, seeded; each function bound to its generated policy, but ``without``'s
    lacking the ledger's dynamodb:UpdateItem (the breaker's reservation)."""
    stack = deploy_stack(harness, tmp_path, monkeypatch, **SETTINGS)
    policies = None
    if without is not None:
        function = stack.functions[without]
        ledger = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{function.settings['budget_table_name']}"
        policies = {without: without_actions(function, {"dynamodb:UpdateItem"}, on=ledger)}
        assert policies[without] != function.policies
    return prepare(stack, tmp_path, moto, policies)


def attributes(deployment: Deployment) -> set[tuple[str, str]]:
    table = json.loads(deployment.stack.functions[ACTINGWEB].job)["table_name"]
    pages = deployment.world.dynamodb.get_paginator("scan").paginate(TableName=table)
    return {(item["id"]["S"], item["bucket_name"]["S"]) for page in pages for item in page["Items"]}


def test_every_child_runs_under_exactly_its_generated_policy(pulumi_mocks, tmp_path, monkeypatch, server):
    deployment = deployed(pulumi_mocks, tmp_path, monkeypatch, server)
    machines = definitions(pulumi_mocks)
    world, made = deployment.world, deployment.made
    entries = attributes(deployment)
    runs: list[Child] = []
    results = {job: run_definition(machines[job], {**SOURCE, "job": job}, children(deployment, runs)) for job in JOBS}

    for job, key in ((SWEEPER, "shards"), (ACTINGWEB, "indexes")):
        payloads = [payload for name, payload, _ in runs if name == job]
        assert payloads == [{key: [k], **SOURCE, "job": job, "dryRun": False} for k in range(UNITS[job])]
        assert results[job][key] == list(range(UNITS[job])) and len(results[job]["children"]) == UNITS[job]
        assert all(child["dry_run"] is False for child in results[job]["children"])
    for name, _, run in runs:
        assert failures(run) == [] and "AccessDenied" not in run.stdout + run.stderr, f"{name}: {failures(run)}"
    for job in JOBS:
        function = deployment.stack.functions[job]
        assert denied(server, function) == [], job
        granted = {a for s in function.statements() for a in s["Action"]}
        used = {d["action"] for d in server.decisions(function.role) if d["allowed"]}
        assert granted - used - SERVICE_ACTIONS == UNUSED, f"{job}: granted, called by no child"

    # The sweeper's children: every expired session handled, live and finished data kept.
    counts = [child["counts"] for child in results[SWEEPER]["children"]]
    objects, items = world.objects(), world.items()
    assert not made["expired"] & objects and sum(c.get("objects_deleted", 0) for c in counts) == len(made["expired"])
    assert sum(c.get("uploads_aborted", 0) for c in counts) == len(made["stuck"])
    assert not ids(made["expired"] | made["missing"] | made["stuck"]) & set(items)
    assert {items[i]["status"]["S"] for i in ids(made["partial"])} == {"partial"}  # kept for a person
    assert not made["orphans"] & objects and made["expired_finished"] <= world.marked()  # kept, marked
    kept = made["live"] | made["live_uploads"] | made["finished"]
    assert kept | made["expired_finished"] <= objects and ids(kept) <= set(items)
    assert len(world.uploads()) == len(made["live_uploads"]) + len(made["partial"])
    # The ActingWeb job's children: every orphaned entry gone, nothing else.
    orphans = {(SYSTEM, f"{index}:gone{i}") for i, index in enumerate(TOKEN_BUCKETS)}
    assert entries - attributes(deployment) == orphans
    assert sum(child["counts"].get("orphans_deleted", 0) for child in results[ACTINGWEB]["children"]) == len(orphans)


def deletable(deployment: Deployment) -> tuple[Any, ...]:
    """What a deletion would change: the sessions, objects and uploads, the ActingWeb entries."""
    world = deployment.world
    return set(world.items()), world.objects(), world.uploads(), attributes(deployment)


def test_a_dry_run_execution_reaches_every_child_and_deletes_nothing(pulumi_mocks, tmp_path, monkeypatch, server):
    deployment = deployed(pulumi_mocks, tmp_path, monkeypatch, server)
    machines = definitions(pulumi_mocks)
    before = deletable(deployment)
    runs: list[Child] = []
    for job in JOBS:
        result = run_definition(machines[job], {**SOURCE, "job": job, "dryRun": True}, children(deployment, runs))
        assert len(result["children"]) == UNITS[job] and all(child["dry_run"] is True for child in result["children"])
    assert [payload["dryRun"] for _, payload, _ in runs] == [True] * sum(UNITS.values())
    assert all(failures(run) == [] for _, _, run in runs)
    assert all(denied(server, deployment.stack.functions[job]) == [] for job in JOBS)
    assert deletable(deployment) == before


@pytest.mark.parametrize("job", JOBS)
def test_without_the_ledgers_update_a_child_fails_and_deletes_nothing(pulumi_mocks, tmp_path, monkeypatch, server, job):
    """The harness can fail: a role without the breaker's reservation on the shared ledger is refused
    it; the child that would delete fails (and with it the execution) before deleting anything."""
    deployment = deployed(pulumi_mocks, tmp_path, monkeypatch, server, without=job)
    definition = definitions(pulumi_mocks)[job]
    before = deletable(deployment)
    runs: list[Child] = []
    with pytest.raises(ChildFailedError) as failed:
        run_definition(definition, {**SOURCE, "job": job}, children(deployment, runs))
    function = deployment.stack.functions[job]
    ledger = function.settings["budget_table_name"]
    refused = {(d["action"], d["resource"]) for d in denied(server, function)}
    assert refused == {("dynamodb:UpdateItem", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{ledger}")}
    assert "AccessDenied" in failed.value.run.stdout + failed.value.run.stderr
    assert runs[-1][2] is failed.value.run and all(run.returncode == 0 for _, _, run in runs[:-1])
    assert deletable(deployment) == before  # the ledger allowed no deletion: none was made
