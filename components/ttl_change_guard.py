"""Refuse, at preview, a TTL change that DynamoDB would refuse in one step.

DynamoDB keeps TTL on one attribute, refuses to enable it on another while it is on, and takes one
TTL change per table per hour. A TtlTable cannot see the deployed table, so it binds a
`before_update` resource hook to it: the engine calls the hook with the deployed and the new inputs,
in previews too, and a refusal stops the update before anything reaches AWS."""

from collections.abc import Mapping
from typing import Any

import pulumi
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.settings import monitor_supports_feature

HOOK_SUFFIX = "ttl-change-guard"
MIN_CLI = "3.182.0"


def ttl_change_refusal(component: str, old: Any, new: Any) -> str | None:
    """Why going from the deployed TTL spec `old` to `new` (a table's `ttl` input, as the engine
    stores it) cannot be done in one update, or None when it can or cannot be judged."""
    old_attribute, old_enabled = _ttl_spec(old)
    new_attribute, new_enabled = _ttl_spec(new)
    if not old_enabled or old_attribute is None or new_attribute is None or new_attribute == old_attribute:
        return None
    first_step = f"deploy ttl_enabled: false with ttl_attribute {old_attribute!r} first"
    second_step = f"then ttl_attribute {new_attribute!r} with TTL on, at least an hour later"
    if new_enabled:
        reason = (
            f"TTL is on for {old_attribute!r}; DynamoDB refuses to move it to {new_attribute!r} while it is on, "
            "and takes one TTL change per table per hour"
        )
    else:
        reason = f"TTL is on for {old_attribute!r}; turning it off must name that attribute, not {new_attribute!r}"
    return (
        f"{component}: ttl_attribute: {reason}. The table is unchanged: {first_step}, {second_step} "
        "(README; if TTL was changed outside Pulumi, run pulumi refresh first)."
    )


def ttl_change_hooks(component: str, name: str, parent: pulumi.Resource | None) -> pulumi.ResourceHookBinding | None:
    """The hook binding that guards a TtlTable's TTL changes, or None (with a warning) when the
    Pulumi CLI running the program has no resource hooks."""
    if not monitor_supports_feature(resource_pb2.RESOURCE_MONITOR_FEATURE_RESOURCE_HOOKS):
        pulumi.log.warn(
            f"{component} {name}: this Pulumi CLI runs no resource hooks ({MIN_CLI} or later does), so a "
            "one-step ttl_attribute rename is not refused at preview; AWS refuses it during the update."
        )
        return None

    def refuse_one_step_ttl_rename(args: pulumi.ResourceHookArgs) -> None:
        # The deployed outputs first: `pulumi refresh` brings them in line with a change made outside Pulumi.
        deployed = (args.old_outputs or {}).get("ttl") or (args.old_inputs or {}).get("ttl")
        refusal = ttl_change_refusal(f"{component} {name}", deployed, (args.new_inputs or {}).get("ttl"))
        if refusal is not None:
            raise ValueError(refusal)

    hook = pulumi.ResourceHook(
        hook_name(name, parent), refuse_one_step_ttl_rename, pulumi.ResourceHookOptions(on_dry_run=True)
    )
    return pulumi.ResourceHookBinding(before_update=[hook])


def hook_name(name: str, parent: pulumi.Resource | None) -> str:
    """The guard's name, unique in a deployment as hook names must be: two TtlTables of one name have
    parents of different types (their URNs would clash otherwise), so the parent's type and name
    are part of it when the parent is known here."""
    if parent is None or not parent.pulumi_resource_type:
        return f"{name}-{HOOK_SUFFIX}"
    return f"{parent.pulumi_resource_type}::{parent.pulumi_resource_name}::{name}-{HOOK_SUFFIX}"


def _ttl_spec(value: Any) -> tuple[str | None, bool]:
    """(attribute, enabled) of a `ttl` input; an attribute that is not a plain string is unknown.
    A missing `enabled` is false, the provider's default."""
    if not isinstance(value, Mapping):
        return None, False
    attribute = value.get("attributeName")
    enabled = value.get("enabled")
    return (attribute if isinstance(attribute, str) and attribute else None), enabled is True
