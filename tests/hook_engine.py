"""The engine's side of resource hooks, for the mocks: hooks a program registers are called back over
gRPC, as pulumi/pulumi's deployment does for an update step (RunHooks with the resource's new inputs
and its deployed inputs and outputs, skipping hooks without on_dry_run in a preview, a before-hook's
error failing the step). The calls happen in SignalAndWaitForShutdown, when the program has
registered everything and its callback server is still serving."""

from dataclasses import dataclass, field
from typing import Any

from fake_engine import Hook, call_hook
from google.protobuf import struct_pb2
from pulumi.runtime.proto import resource_pb2
from pulumi_harness import RecordingMocks, RecordingMonitor


@dataclass
class Step:
    """One resource the program registered, as the engine keeps it: its state after the run."""

    urn: str
    type: str
    name: str
    inputs: struct_pb2.Struct
    outputs: struct_pb2.Struct
    before_update: list[str]


@dataclass
class Outcome:
    """What the engine did with the program's update steps."""

    failures: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    hooks_called: list[str] = field(default_factory=list)


def copy(struct: struct_pb2.Struct) -> struct_pb2.Struct:
    copied = struct_pb2.Struct()
    copied.CopyFrom(struct)
    return copied


class HookEngine(RecordingMonitor):
    """A mock monitor that keeps registrations as an engine would and runs `before_update` hooks
    against the state a previous run left (``deployed``, its steps by resource name)."""

    def __init__(self, preview: bool, deployed: dict[str, Step] | None = None, hooks_supported: bool = True) -> None:
        super().__init__(RecordingMocks())
        self.preview = preview
        self.deployed = deployed or {}
        self.hooks_supported = hooks_supported
        self.hooks: dict[str, Hook] = {}
        self.steps: list[Step] = []
        self.outcome = Outcome()

    def GetDeploymentInfo(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        info = super().GetDeploymentInfo(request)
        if not self.hooks_supported:
            kept = [f for f in info.supportedFeatures if f != resource_pb2.RESOURCE_MONITOR_FEATURE_RESOURCE_HOOKS]
            del info.supportedFeatures[:]
            info.supportedFeatures.extend(kept)
        return info

    def RegisterResourceHook(self, request: Any) -> Any:  # noqa: N802
        assert request.name not in self.hooks, f"resource hook already registered for name {request.name!r}"
        self.hooks[request.name] = Hook(
            request.name, request.callback.token, request.callback.target, request.on_dry_run
        )
        return super().RegisterResourceHook(request)

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802
        response = super().RegisterResource(request)
        if request.custom:
            step = Step(
                response.urn,
                request.type,
                request.name,
                copy(request.object),
                copy(response.object),
                list(request.hooks.before_update),
            )
            self.steps.append(step)
        return response

    def SignalAndWaitForShutdown(self, request: Any) -> Any:  # noqa: N802
        for step in self.steps:
            old = self.deployed.get(step.name)
            if old is None or old.inputs == step.inputs:
                continue
            if self._run_before_update(step, old):
                self.outcome.updated.append(step.name)
        return super().SignalAndWaitForShutdown(request)

    def _run_before_update(self, step: Step, old: Step) -> bool:
        for name in step.before_update:
            hook = self.hooks[name]
            if self.preview and not hook.on_dry_run:
                continue
            self.outcome.hooks_called.append(name)
            request = resource_pb2.ResourceHookRequest(
                urn=step.urn,
                id=f"{step.name}-id",
                name=step.name,
                type=step.type,
                new_inputs=step.inputs,
                old_inputs=old.inputs,
                old_outputs=old.outputs,
            )
            error = call_hook(hook, request)
            if error:
                self.outcome.failures.append(f"hook {name!r} failed: {error}")
                return False
        return True

    def state(self) -> dict[str, Step]:
        """The resources as this run left them, to deploy as the next run's state."""
        return {step.name: step for step in self.steps}
