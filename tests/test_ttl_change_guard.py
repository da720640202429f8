"""TtlTable refuses at preview a TTL change DynamoDB would refuse in one step, through a resource hook
the engine calls with the deployed and the new inputs (tests/hook_engine.py plays the engine)."""

import logging
import runpy

import pulumi
import pytest
from docs_pages import all_text
from hook_engine import HookEngine
from pulumi_harness import Harness
from stack_config import ROOT, stack_config

from expiry.components.ttl_change_guard import ttl_change_refusal
from expiry.components.ttl_table import TtlTable

TABLE = "uploads-table"


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def run(build, preview: bool, deployed=None, hooks_supported: bool = True, config=None) -> tuple[HookEngine, Warnings]:
    """One `pulumi preview` or `pulumi up` of ``build`` against the state ``deployed`` left."""
    warnings = Warnings()
    logger = logging.getLogger(f"ttl-guard-{id(warnings)}")
    logger.addHandler(warnings)
    engine = HookEngine(preview, deployed, hooks_supported)
    pulumi.runtime.set_all_config(config or {})
    pulumi.runtime.set_mocks(
        engine.mocks, project="expiry", stack="test", preview=preview, monitor=engine, logger=logger
    )
    Harness(engine).run(build)
    return engine, warnings


def uploads_table(**ttl):
    return lambda: TtlTable("uploads", {"hash_key": "uploadSessionId", **ttl})


def deployed_with(**ttl):
    """The state after a `pulumi up` with these TTL settings."""
    engine, _ = run(uploads_table(**ttl), preview=False)
    assert engine.outcome.failures == []
    return engine.state()


@pytest.mark.parametrize("preview", [True, False])
def test_a_one_step_rename_is_refused_before_it_reaches_aws(preview):
    engine, _ = run(uploads_table(ttl_attribute="expiresAt"), preview, deployed_with(ttl_attribute="expires_at"))

    assert engine.outcome.updated == []
    [failure] = engine.outcome.failures
    assert "TtlTable uploads: ttl_attribute:" in failure
    assert "'expires_at'" in failure and "'expiresAt'" in failure
    assert "ttl_enabled: false with ttl_attribute 'expires_at' first" in failure
    assert "an hour later" in failure


def test_the_two_step_rename_passes():
    step_one, _ = run(
        uploads_table(ttl_attribute="expires_at", ttl_enabled=False),
        preview=False,
        deployed=deployed_with(ttl_attribute="expires_at"),
    )
    assert step_one.outcome.failures == [] and step_one.outcome.updated == [TABLE]

    step_two, _ = run(uploads_table(ttl_attribute="expiresAt"), preview=False, deployed=step_one.state())
    assert step_two.outcome.failures == [] and step_two.outcome.updated == [TABLE]
    assert step_two.outcome.hooks_called == ["uploads-ttl-change-guard"]


def test_turning_ttl_off_under_another_name_is_refused():
    engine, _ = run(
        uploads_table(ttl_attribute="expiresAt", ttl_enabled=False),
        preview=True,
        deployed=deployed_with(ttl_attribute="expires_at"),
    )

    [failure] = engine.outcome.failures
    assert "turning it off must name that attribute, not 'expiresAt'" in failure


def test_other_changes_pass_the_guard():
    engine, _ = run(
        lambda: TtlTable("uploads", {"hash_key": "uploadSessionId", "tags": {"team": "media"}}),
        preview=True,
        deployed=deployed_with(),
    )

    assert engine.outcome.hooks_called == ["uploads-ttl-change-guard"]
    assert engine.outcome.failures == [] and engine.outcome.updated == [TABLE]


def test_the_guard_runs_in_previews_and_only_on_the_table():
    engine, _ = run(uploads_table(), preview=True)

    assert list(engine.hooks) == ["uploads-ttl-change-guard"]
    assert engine.hooks["uploads-ttl-change-guard"].on_dry_run
    bound = {step.name: step.before_update for step in engine.steps if step.before_update}
    assert bound == {TABLE: ["uploads-ttl-change-guard"]}


def test_a_cli_without_resource_hooks_gets_the_table_and_a_warning():
    engine, warnings = run(
        uploads_table(ttl_attribute="expiresAt"),
        preview=True,
        deployed=deployed_with(ttl_attribute="expires_at"),
        hooks_supported=False,
    )

    assert engine.hooks == {} and all(step.before_update == [] for step in engine.steps)
    assert engine.outcome.updated == [TABLE]
    [warning] = [m for m in warnings.messages if "ttl_attribute" in m]
    assert "TtlTable uploads" in warning and "3.182.0" in warning and "not refused at preview" in warning


def test_a_refreshed_state_is_judged_by_the_deployed_outputs():
    """TTL turned off outside Pulumi, then `pulumi refresh`: the outputs say off, the inputs still
    say on; enabling the new attribute is one step, and is let through."""
    deployed = deployed_with(ttl_attribute="expires_at")
    deployed[TABLE].outputs["ttl"] = {"attributeName": "expires_at", "enabled": False}

    engine, _ = run(uploads_table(ttl_attribute="expiresAt"), preview=True, deployed=deployed)

    assert engine.outcome.failures == [] and engine.outcome.updated == [TABLE]


class Service(pulumi.ComponentResource):
    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"acme:index:{kind}", name)
        self.table = TtlTable("sessions", {"hash_key": "id"}, pulumi.ResourceOptions(parent=self))


def test_tables_of_one_name_under_parents_of_different_types_have_their_own_guard():
    engine, _ = run(lambda: (Service("Billing", "billing"), Service("Search", "search")), preview=True)

    assert sorted(engine.hooks) == [
        "acme:index:Billing::billing::sessions-ttl-change-guard",
        "acme:index:Search::search::sessions-ttl-change-guard",
    ]
    assert sorted(name for step in engine.steps for name in step.before_update) == sorted(engine.hooks)


def test_the_stack_refuses_a_one_step_change_of_the_upload_ttl_attribute(monkeypatch, tmp_path):
    monkeypatch.setenv("EXPIRY_BUILD_DIR", str(tmp_path))

    def program():
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")

    up, _ = run(program, preview=False, config=stack_config("dev"))
    # Every TtlTable's table (`<name>-table`); the breaker's ledger is a plain table Expiry keys itself.
    tables = [s.name for s in up.steps if s.type == "aws:dynamodb/table:Table" and s.name.endswith("-table")]
    assert len(tables) >= 4 and sorted(up.hooks) == sorted(
        f"{t.removesuffix('-table')}-ttl-change-guard" for t in tables
    )
    renamed, _ = run(
        program, preview=True, deployed=up.state(), config=stack_config("dev", uploadsTtlAttribute="expiresAt")
    )

    [failure] = renamed.outcome.failures
    assert "ttl_attribute:" in failure and "'ttl'" in failure and "'expiresAt'" in failure
    assert not any(name.endswith("-table") for name in renamed.outcome.updated)
    readme = " ".join(all_text().split())  # README.md and docs/*.md
    assert failure.split(" failed: ", 1)[1] in readme, "README shows the message a user gets"


@pytest.mark.parametrize(
    ("old", "new", "refused"),
    [
        ({"attributeName": "a", "enabled": True}, {"attributeName": "b", "enabled": True}, True),
        ({"attributeName": "a", "enabled": True}, {"attributeName": "b", "enabled": False}, True),
        ({"attributeName": "a", "enabled": True}, {"attributeName": "a", "enabled": False}, False),
        ({"attributeName": "a", "enabled": False}, {"attributeName": "b", "enabled": True}, False),
        ({"attributeName": "a"}, {"attributeName": "b", "enabled": True}, False),
        ({"attributeName": "a", "enabled": True}, {"attributeName": "a", "enabled": True}, False),
        (None, {"attributeName": "b", "enabled": True}, False),
        ({"attributeName": "a", "enabled": True}, None, False),
        ({"attributeName": "a", "enabled": True}, {"attributeName": object(), "enabled": True}, False),
    ],
)
def test_what_is_refused(old, new, refused):
    assert (ttl_change_refusal("TtlTable t", old, new) is not None) is refused
