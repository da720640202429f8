"""Escape hatches: a transform per child, as SST v3's `transform` and pulumi-awsx's `args` offer, so a
user who needs a permission boundary on a role, a KMS key on a log group or a tag on a schedule does
not fork the component.

Each component declares its children once (``CHILDREN``: key -> the child's resource type and the
logical name it gets after the component's name) and passes its ``transforms`` argument here before
registering itself. One Pulumi `transformations` entry on the component's options then hands each
direct child, matched by (type token, logical name), to the user's transform: a callable taking the
child's arguments (a dict with the snake_case keys the resource takes, changed in place) and its
ResourceOptions, returning options to merge over the child's (or None).

Fail closed. Before anything registers: an unknown key, a child this configuration does not create
and a value that is not callable are refused, naming the component, ``transforms.<key>`` and what is
allowed. While the children register: a transform that changes what the component's rails stand on
(a child's ``protected`` arguments: the function's job settings, the role policy's statements, ...),
adds an argument the resource does not take, re-parents the child or drops an option the component
set, is refused; and then nothing of the component registers at all (its registration waits on a gate
that fails with the same error, and every child waits on the component)."""

import asyncio
import copy
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime.settings import _get_rpc_manager
from pulumi.type_token import get_type_token

from expiry.components import validation as v

ChildTransform = Callable[[dict[str, Any], pulumi.ResourceOptions], pulumi.ResourceOptions | None]
"""A child's transform: called with the child's arguments (snake_case keys; change them in place) and
a copy of its ResourceOptions (change it in place, or return options to merge over the child's)."""

HOOK_STAGES = (
    "before_create",
    "after_create",
    "before_update",
    "after_update",
    "before_delete",
    "after_delete",
    "on_error",
)
_REFUSALS: set[asyncio.Future[Any]] = set()  # the refusals' RPCs, kept from the garbage collector
ALL = "*"
"""As a child's ``protected``: every argument (the transform may only add options)."""

# Why a transform may not change an argument, by argument: the rails stand on these.
RAILS = {
    "environment": "it holds the job's settings (EXPIRY_JOB), which the component validated; change the job "
    "through the component's args",
    "code": "it is the bundle of expiry.runtime the component built and tested; change the job through its args",
    "handler": "it is the job's entry point; change the job through the component's args",
    "policy": "it is the least-privilege policy derived from the job; change the job through the component's "
    "args (a permissions boundary or other policies go on the role)",
    "role": "it ties the function and its least-privilege policy to the role the component made; bring your "
    "own role with existing_role_name",
    "schedule_expression": "the component checked it and derives the job's interval (alarms, budget window) "
    "from it; change it through its args",
    "schedule_expression_timezone": "the component checked it with the schedule; change it through its args",
    "target": "it invokes the job's function with the job's payload; change the job through the component's args",
    "ttl": "the TTL attribute is the table's contract with its sweepers and is guarded against one-step "
    "renames; change it through the component's args",
    "hash_key": "the key attributes are reported in the table's target, which sweepers rely on",
    "range_key": "the key attributes are reported in the table's target, which sweepers rely on",
    "stream_enabled": "the stream is reported in the table's target, which a TtlStreamCascade relies on",
    "stream_view_type": "the stream is reported in the table's target, which a TtlStreamCascade relies on",
    "filter_criteria": "it limits the cascade to TTL's own deletions",
    "input": "it is the cleanup the component validated; change it through the component's args",
    "definition": "it is the fan-out the component derived from the job (every shard, its payload, its limits); "
    "change it through fan_out",
    "role_arn": "it ties the state machine to the least-privilege role the component made",
}


def rails(*names: str) -> dict[str, str]:
    """The ``protected`` of a child: these arguments, each with why (RAILS)."""
    return {name: RAILS[name] for name in names}


@dataclass(frozen=True)
class Child:
    """One child (or family of children) of a component, as a transform key names it."""

    resource: type[pulumi.Resource] | str
    """The resource class (whose type token is read) or the type token itself."""
    suffix: str
    """The logical name after the component's name (``-role``); ending in ``*``, every child of this
    type whose name starts so (``-email-*``: one subscription per address); ``*`` alone, every child of
    this type, whatever its name."""
    protected: Mapping[str, str] = field(default_factory=dict)
    """Arguments a transform must not change -> why (the error says it); ``{ALL: why}`` for all."""

    @property
    def token(self) -> str:
        if isinstance(self.resource, str):
            return self.resource
        token = get_type_token(self.resource)
        if token is None:
            raise TypeError(f"{self.resource.__name__} has no Pulumi type token")
        return token

    def matches(self, component_name: str, type_: str, name: str) -> bool:
        if type_ != self.token:
            return False
        if self.suffix == "*":
            return True
        if self.suffix.endswith("*"):
            return name.startswith(component_name + self.suffix[:-1])
        return name == component_name + self.suffix


def with_transforms(
    component: str,
    name: str,
    children: Mapping[str, Child],
    transforms: Mapping[str, ChildTransform] | None,
    opts: pulumi.ResourceOptions | None,
    absent: Mapping[str, str] | None = None,
) -> pulumi.ResourceOptions | None:
    """The component's options with its children's transforms in them, checked first: refused (before
    anything registers) when a key is not one of ``children``, names a child this configuration does
    not create (``absent``: key -> why, e.g. a conflict with another argument) or is not callable.
    Without transforms the options are returned unchanged."""
    checked = check_transforms(component, children, transforms, absent or {})
    if not checked:
        return opts
    hatch = _Hatch(component, name, children, checked)
    return pulumi.ResourceOptions.merge(
        opts, pulumi.ResourceOptions(transformations=[hatch.transformation], depends_on=hatch.gate())
    )


def check_transforms(
    component: str,
    children: Mapping[str, Child],
    transforms: Mapping[str, ChildTransform] | None,
    absent: Mapping[str, str],
) -> dict[str, ChildTransform]:
    """The transforms, each key a child this configuration creates and each value callable; the first
    bad key (in the mapping's order) is refused, naming it."""
    if transforms is None:
        return {}
    if not isinstance(transforms, Mapping):
        v.fail(
            component,
            "transforms",
            f"must be a mapping of child name to transform, got {type(transforms).__name__}",
        )
    for key, transform in transforms.items():
        if not isinstance(key, str) or key not in children:
            v.fail(
                component,
                f"transforms.{key}",
                f"unknown child; the children of a {component} are {', '.join(children)}",
            )
        if key in absent:
            v.fail(component, f"transforms.{key}", f"this {component} creates no {key}: {absent[key]}")
        if not callable(transform):
            v.fail(
                component,
                f"transforms.{key}",
                f"must be callable (args, opts) -> ResourceOptions | None, got {type(transform).__name__}",
            )
    return dict(transforms)


class _Hatch:
    """The transformation of one component instance, and the gate its registration waits on."""

    def __init__(
        self, component: str, name: str, children: Mapping[str, Child], transforms: dict[str, ChildTransform]
    ) -> None:
        self.component = component
        self.name = name
        self.children = children
        self.transforms = transforms
        self.owner: pulumi.Resource | None = None
        self.error: BaseException | None = None

    def gate(self) -> pulumi.Output[list[pulumi.Resource]]:
        """No dependencies at all, once the constructor has finished (it runs without yielding to the
        event loop, so it has by the time this is awaited); its error, if a transform was refused."""
        loop = asyncio.get_event_loop()
        known, secret = loop.create_future(), loop.create_future()
        known.set_result(True)
        secret.set_result(False)
        return pulumi.Output(set(), asyncio.ensure_future(self._wait()), known, secret)

    async def _wait(self) -> list[pulumi.Resource]:
        if self.error is not None:
            raise self.error
        return []

    def transformation(self, args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult | None:
        if self.owner is None and args.type_ == f"expiry:index:{self.component}" and args.name == self.name:
            self.owner = args.resource  # the component itself registers first
            return None
        if self.owner is None or args.opts.parent is not self.owner:
            return None  # grandchildren, or another component's: not ours to transform
        key = next(
            (key for key, child in self.children.items() if child.matches(self.name, args.type_, args.name)), None
        )
        if key is None or key not in self.transforms:
            return None
        try:
            return self._apply(key, args)
        except Exception as error:
            self.error = error
            _report(error)
            raise

    def _apply(self, key: str, args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult:
        field_name = f"transforms.{key}"
        original = dict(args.props)
        props = _copy(original)
        given = _copy_options(args.opts)
        returned = self.transforms[key](props, given)
        if returned is not None and not isinstance(returned, pulumi.ResourceOptions):
            v.fail(self.component, field_name, f"must return ResourceOptions or None, got {type(returned).__name__}")
        added = sorted(set(props) - set(original))
        if added:
            close = difflib.get_close_matches(added[0], list(original), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            v.fail(self.component, field_name, f"{added[0]!r} is not an argument of {args.type_}{hint}")
        protected = self.children[key].protected
        for prop in sorted(original) if ALL in protected else protected:
            if _fingerprint(props.get(prop)) != _fingerprint(original.get(prop)):
                why = protected.get(prop) or protected[ALL]
                v.fail(self.component, field_name, f"changed {prop} of {args.name}: {why}")
        opts = given if returned is None else pulumi.ResourceOptions.merge(args.opts, returned)
        self._check_options(field_name, args.opts, opts)
        return pulumi.ResourceTransformationResult(props, opts)

    def _check_options(self, field_name: str, before: pulumi.ResourceOptions, after: pulumi.ResourceOptions) -> None:
        """The child keeps its parent (its URN) and every option the component gave it."""
        if after.parent is not before.parent:
            v.fail(self.component, field_name, "must not change the child's parent (it would change its URN)")
        for option in ("depends_on", "additional_secret_outputs", "ignore_changes"):
            old, new = getattr(before, option), getattr(after, option)
            if isinstance(old, pulumi.Output) or isinstance(new, pulumi.Output):
                continue  # merged with an Output: kept by construction
            if not all(any(item is kept for kept in _listed(new)) for item in _listed(old)):
                v.fail(self.component, field_name, f"must not drop the child's {option} (the component set them)")
        for stage in HOOK_STAGES:
            old, new = (_listed(getattr(hooks, stage, None)) for hooks in (before.hooks, after.hooks))
            if not all(any(hook is kept for kept in new) for hook in old):
                v.fail(self.component, field_name, f"must not drop the child's {stage} hooks (the component set them)")


def _report(error: Exception) -> None:
    """Make ``error`` itself what the program fails with. The SDK waits for every registration before
    it re-raises the program's error, and raises the error of the last one started instead: here a
    child's, which wraps the gate's error in "While processing resource ..." lines. So the refusal is
    also the last RPC started (the constructor stops at it), and surfaces as it is."""

    async def refused() -> None:
        raise error

    task = asyncio.ensure_future(_get_rpc_manager().do_rpc("refused child transform", refused)())
    _REFUSALS.add(task)
    task.add_done_callback(_REFUSALS.discard)


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _copy(value: Any) -> Any:
    """A copy of a child's arguments deep enough that a transform changing them in place changes
    neither a sibling's (children share e.g. the tags dict) nor the caller's; Outputs, resources,
    assets and archives are shared (they are not changed in place)."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_copy(item) for item in value)
    if _is_args(value):
        clone = copy.copy(value)
        clone.__dict__.update({key: _copy(item) for key, item in vars(value).items()})
        return clone
    return value


def _is_args(value: Any) -> bool:
    """An input type of a provider SDK (FunctionEnvironmentArgs, ...)."""
    return type(value).__name__.endswith("Args") and hasattr(value, "__dict__")


def _copy_options(opts: pulumi.ResourceOptions) -> pulumi.ResourceOptions:
    clone = copy.copy(opts)
    for option, value in vars(opts).items():
        if isinstance(value, list):
            setattr(clone, option, list(value))
    return clone


def _fingerprint(value: Any, depth: int = 0) -> Any:
    """What a transform could have changed: plain values by value, containers and input types by their
    contents, Outputs and other objects by identity."""
    if depth > 20:
        return ("deep", id(value))
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return ("dict", tuple(sorted((repr(k), _fingerprint(item, depth + 1)) for k, item in value.items())))
    if isinstance(value, list | tuple):
        return ("list", tuple(_fingerprint(item, depth + 1) for item in value))
    if _is_args(value):
        return (type(value).__name__, _fingerprint(vars(value), depth + 1))
    return ("object", id(value))
