"""The pause switch (issue 21) under Pulumi's mocks: ScheduledSweeper's `paused` disables its schedule,
TtlStreamCascade's its stream mapping (with a warning: the stream keeps records 24 hours), nothing else
changes (same children, same URNs), a wrong type is refused by name before anything registers, and the
stack's `expiry:paused` pauses every sweeper and cascade."""

from typing import Any

import pulumi
import pytest
from stack_config import stack_config
from test_scheduled_sweeper import build as build_sweeper
from test_scheduled_sweeper import sweeper_args
from test_stack_program import run_program
from test_stream_cascade_component import MAPPING
from test_stream_cascade_component import build as build_cascade

SCHEDULE = "aws:scheduler/schedule:Schedule"


def snapshot(harness) -> dict[str, dict[str, Any]]:
    """Every registered resource's inputs by URN (an archive by its path: archives compare by identity)."""
    return {
        r.urn: {k: ("archive", v.path) if isinstance(v, pulumi.FileArchive) else v for k, v in r.inputs.items()}
        for r in harness.resources
    }


def test_a_paused_sweeper_disables_its_schedule_and_changes_nothing_else(pulumi_mocks):
    build_sweeper(pulumi_mocks, sweeper_args())
    running = snapshot(pulumi_mocks)
    assert pulumi_mocks.one(SCHEDULE).inputs["state"] == "ENABLED"
    pulumi_mocks.monitor.registered.clear()
    build_sweeper(pulumi_mocks, sweeper_args(paused=True))
    paused = snapshot(pulumi_mocks)
    assert pulumi_mocks.one(SCHEDULE).inputs["state"] == "DISABLED"
    assert set(paused) == set(running)  # same URNs: resuming is an update in place
    changed = {urn for urn in running if running[urn] != paused[urn]}
    assert changed == {pulumi_mocks.one(SCHEDULE).urn}
    schedule = pulumi_mocks.one(SCHEDULE).urn
    assert {k: v for k, v in paused[schedule].items() if k != "state"} == {
        k: v for k, v in running[schedule].items() if k != "state"
    }


def test_a_paused_cascade_disables_its_mapping_and_warns_of_the_stream_s_24_hours(pulumi_mocks, monkeypatch):
    warnings: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *_, **__: warnings.append(message))
    build_cascade(pulumi_mocks)
    running = snapshot(pulumi_mocks)
    assert pulumi_mocks.one(MAPPING).inputs["enabled"] is True
    assert not [w for w in warnings if "paused" in w]
    pulumi_mocks.monitor.registered.clear()
    build_cascade(pulumi_mocks, paused=True)
    paused = snapshot(pulumi_mocks)
    assert pulumi_mocks.one(MAPPING).inputs["enabled"] is False
    assert set(paused) == set(running)
    assert {urn for urn in running if running[urn] != paused[urn]} == {pulumi_mocks.one(MAPPING).urn}
    (warning,) = [w for w in warnings if "paused" in w]
    assert warning.startswith("TtlStreamCascade cascade: paused: ") and "24 hours" in warning


@pytest.mark.parametrize("value", ["true", 1, None])
def test_a_paused_that_is_not_a_boolean_is_refused_by_name_before_anything_registers(pulumi_mocks, value):
    with pytest.raises(ValueError, match=rf"^ScheduledSweeper: paused: must be true or false, got {value!r}"):
        build_sweeper(pulumi_mocks, sweeper_args(paused=value))
    assert pulumi_mocks.resources == []
    with pytest.raises(ValueError, match=rf"^TtlStreamCascade: paused: must be true or false, got {value!r}"):
        build_cascade(pulumi_mocks, paused=value)
    assert not [r for r in pulumi_mocks.resources if "TtlStreamCascade" in r.urn]  # the test's table, nothing else


def test_the_stack_s_paused_pauses_every_sweeper_and_cascade(pulumi_mocks):
    run_program(pulumi_mocks, stack_config("dev"))
    running = snapshot(pulumi_mocks)
    assert {r.inputs["state"] for r in pulumi_mocks.of_type(SCHEDULE)} == {"ENABLED"}
    assert {r.inputs["enabled"] for r in pulumi_mocks.of_type(MAPPING)} == {True}
    pulumi_mocks.monitor.registered.clear()
    run_program(pulumi_mocks, stack_config("dev", paused=True))
    schedules, mappings = pulumi_mocks.of_type(SCHEDULE), pulumi_mocks.of_type(MAPPING)
    assert len(schedules) == 3 and {r.inputs["state"] for r in schedules} == {"DISABLED"}
    assert len(mappings) == 1 and mappings[0].inputs["enabled"] is False
    # The same resources, less the heartbeat alarms: a paused job does not run, and would page all pause long.
    heartbeats = {urn for urn in running if urn.endswith("-heartbeat")}
    assert heartbeats and set(snapshot(pulumi_mocks)) == set(running) - heartbeats
