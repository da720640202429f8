"""`expiry pause` and `expiry resume` (issue 21): stop and restart a deployed job without deleting anything.

A sweeper's Lambda runs on an EventBridge Scheduler schedule: the CLI finds it as the schedule whose target is
the function (ListSchedules over every group, which lists each schedule's target ARN; schedules take no tags,
so the target is the one link that holds whatever the names and groups) and sets its State with
UpdateSchedule, which replaces the whole definition: every field GetSchedule returned that UpdateSchedule
takes is passed back, so only the state changes. A stream cascade's Lambda runs on its table's stream: the
CLI sets Enabled on each of its stream event source mappings (ListEventSourceMappings FunctionName=...).

Pulumi does not know of either change: a refresh (`pulumi up --refresh`) or the next update of the schedule or
mapping sets it back to the stack's `paused` setting. Lasting pauses belong in the stack config.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from expiry.runtime import kinds
from expiry.runtime.cli_deployed import DENIED, job_text
from expiry.runtime.jobs.config import loads_object

PAUSED_SCHEDULE, RUNNING_SCHEDULE = "DISABLED", "ENABLED"
PAUSED_MAPPING = ("Disabled", "Disabling")
DRIFT = (
    "Pulumi does not know of this change: `pulumi up --refresh`, or the next update of the {what}, sets it back "
    "to the stack's setting (expiry:paused, or the component's paused arg); for a lasting pause set that instead"
)


class NotPausableError(Exception):
    """The function has no schedule or stream mapping to pause (or is no Expiry job, or does not exist)."""


class PauseDeniedError(Exception):
    """An AWS call pause, resume or status needs was denied: the message names the permission."""


@dataclass(frozen=True)
class Switch:
    """A schedule or event source mapping that starts the function's runs."""

    kind: str  # schedule or event_source_mapping
    name: str  # group/name, or the mapping's UUID
    state: str  # as AWS reports it
    source: str = ""  # the mapping's event source

    @property
    def paused(self) -> bool:
        return self.state == PAUSED_SCHEDULE if self.kind == "schedule" else self.state in PAUSED_MAPPING

    def shown(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state} | ({"source": self.source} if self.source else {})


def _call(permission: str, call: Callable[..., Any], **kwargs: Any) -> Any:
    """``call(**kwargs)``; a denial is a PauseDeniedError naming ``permission``."""
    try:
        return call(**kwargs)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code")
        if code in DENIED:
            raise PauseDeniedError(f"{permission} was denied ({code}): pause and resume need it") from error
        raise


def _function(lambda_client: Any, function: str) -> tuple[str, str]:
    """The function's ARN and its job's kind, from GetFunctionConfiguration."""
    try:
        configuration = _call(
            "lambda:GetFunctionConfiguration", lambda_client.get_function_configuration, FunctionName=function
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            raise NotPausableError(f"--function {function}: no such function") from error
        raise
    text = job_text(configuration)
    if not text:
        raise NotPausableError(f"--function {function}: has no EXPIRY_JOB in its environment: not an Expiry job")
    raw = loads_object(text, f"--function {function}")
    kind = raw.get("kind") if isinstance(raw, dict) else None
    return configuration["FunctionArn"], str(kind)


def _targets(arn: str, function_arn: str) -> bool:
    """Whether a schedule's target ``arn`` is the function (or one of its versions or aliases)."""
    return arn == function_arn or arn.startswith(f"{function_arn}:")


def _schedules(scheduler: Any, function_arn: str) -> Iterator[dict[str, Any]]:
    """The full definitions (GetSchedule) of the schedules, in any group, whose target is the function."""
    pages = _call("scheduler:ListSchedules", lambda: list(scheduler.get_paginator("list_schedules").paginate()))
    for page in pages:
        for summary in page.get("Schedules", []):
            if _targets((summary.get("Target") or {}).get("Arn", ""), function_arn):
                yield _call(
                    "scheduler:GetSchedule",
                    scheduler.get_schedule,
                    Name=summary["Name"],
                    GroupName=summary.get("GroupName") or "default",
                )


def _mappings(lambda_client: Any, function: str) -> list[dict[str, Any]]:
    """The function's event source mappings on DynamoDB streams."""
    pages = _call(
        "lambda:ListEventSourceMappings",
        lambda: list(lambda_client.get_paginator("list_event_source_mappings").paginate(FunctionName=function)),
    )
    return [
        m for page in pages for m in page.get("EventSourceMappings", []) if ":dynamodb:" in m.get("EventSourceArn", "")
    ]


def _schedule_switch(schedule: dict[str, Any]) -> Switch:
    return Switch("schedule", f"{schedule.get('GroupName') or 'default'}/{schedule['Name']}", schedule["State"])


def _mapping_switch(mapping: dict[str, Any]) -> Switch:
    return Switch("event_source_mapping", mapping["UUID"], mapping.get("State", ""), mapping.get("EventSourceArn", ""))


def switches(clients: Callable[[str], Any], function: str) -> list[Switch]:
    """What starts the runs of ``function``: its schedules (a sweeper) or stream mappings (a cascade)."""
    function_arn, kind = _function(clients("lambda"), function)
    if kind in kinds.names(scheduled=False):  # invoked by its stream mapping, not a schedule
        found = [_mapping_switch(m) for m in _mappings(clients("lambda"), function)]
    else:
        found = [_schedule_switch(s) for s in _schedules(clients("scheduler"), function_arn)]
    if not found:
        what = "no event source mapping on a DynamoDB stream" if kind in kinds.names(scheduled=False) else "no schedule"
        raise NotPausableError(f"--function {function}: {what} invokes it (a {kind} job): nothing to pause or resume")
    return found


def update_input(schedule: dict[str, Any], accepted: list[str], state: str) -> dict[str, Any]:
    """UpdateSchedule's input: every field of ``schedule`` (GetSchedule's answer) that UpdateSchedule
    takes (``accepted``), as returned, with ``state``. Fields left out would be reset, not kept."""
    given = {key: value for key, value in schedule.items() if key in accepted and value is not None}
    return given | {"State": state}


def set_paused(clients: Callable[[str], Any], function: str, paused: bool) -> dict[str, Any]:
    """Pause (or resume) what starts the runs of ``function``; what changed and what already was so."""
    function_arn, kind = _function(clients("lambda"), function)
    changed: list[dict[str, Any]] = []
    unchanged: list[dict[str, Any]] = []
    if kind in kinds.names(scheduled=False):  # invoked by its stream mapping, not a schedule
        lambda_client = clients("lambda")
        mappings = _mappings(lambda_client, function)
        for mapping in mappings:
            before = _mapping_switch(mapping)
            if before.paused == paused:
                unchanged.append(before.shown())
                continue
            after = _call(
                "lambda:UpdateEventSourceMapping",
                lambda_client.update_event_source_mapping,
                UUID=mapping["UUID"],
                Enabled=not paused,
            )
            changed.append(before.shown() | {"state": f"{before.state} -> {after.get('State', '?')}"})
        what, found = "event_source_mapping", bool(mappings)
    else:
        scheduler = clients("scheduler")
        accepted = list(scheduler.meta.service_model.operation_model("UpdateSchedule").input_shape.members)
        schedules = list(_schedules(scheduler, function_arn))
        state = PAUSED_SCHEDULE if paused else RUNNING_SCHEDULE
        for schedule in schedules:
            before = _schedule_switch(schedule)
            if schedule["State"] == state:
                unchanged.append(before.shown())
                continue
            _call("scheduler:UpdateSchedule", scheduler.update_schedule, **update_input(schedule, accepted, state))
            changed.append(before.shown() | {"state": f"{before.state} -> {state}"})
        what, found = "schedule", bool(schedules)
    if not found:
        raise NotPausableError(
            f"--function {function}: no {'event source mapping on a DynamoDB stream' if what != 'schedule' else what}"
            f" invokes it (a {kind} job): nothing to {'pause' if paused else 'resume'}"
        )
    return {
        "function": function,
        "paused": "yes" if paused else "no",
        f"{what}s_changed": changed,
        f"{what}s_unchanged": unchanged,
    }


def drift_warning(result: dict[str, Any]) -> str | None:
    """The warning a change by pause or resume calls for (none when nothing changed)."""
    for what in ("schedule", "event_source_mapping"):
        if result.get(f"{what}s_changed"):
            return DRIFT.format(what=what.replace("_", " "))
    return None


def status(clients: Callable[[str], Any], function: str) -> dict[str, Any]:
    """`paused: yes/no` of the function's job, and its schedules or mappings, for `expiry status --function`."""
    found = switches(clients, function)
    paused = {s.paused for s in found}
    return {
        "paused": "partly" if len(paused) > 1 else "yes" if paused == {True} else "no",
        f"{found[0].kind}s": [s.shown() for s in found],
    }
