"""Pulumi mocks that record every registered resource and resolve dependent Outputs."""

import asyncio
import base64
import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import dill
import pulumi
from pulumi.dynamic import Config, ConfigureRequest, ResourceProvider
from pulumi.runtime import rpc, settings
from pulumi.runtime._serialization import _deserialize
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

T = TypeVar("T")
ACCOUNT = "123456789012"
REGION = "us-east-1"


@dataclass
class Registered:
    """One resource as the engine would have received it."""

    type: str
    name: str
    inputs: dict[str, Any]
    parent: str | None
    urn: str
    additional_secret_outputs: tuple[str, ...] = ()


def _drain_failed_program() -> None:
    """Leave nothing of a failed program behind for the next test, or for the output after the summary.

    The root stack resource outlives ``set_mocks`` and carries the failed registrations: the next
    program's resources, its children, would fail with this program's error. So the next ``set_mocks``
    gets a fresh root. Registrations still running finish here, and the futures whose exceptions nobody
    read are collected now (asyncio reports them inside this test) instead of after the run's summary.
    """
    settings.ROOT.set(None)
    loop = asyncio.get_event_loop()
    while pending := [task for task in asyncio.all_tasks(loop) if not task.done()]:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    # Outputs that failed stay in the SDK's set "to pick up at program exit"; a program that failed while
    # its RPCs finished (a component refusing a child transform fails its registration) never picked them up.
    with settings.SETTINGS.lock:
        for output in settings.SETTINGS.outputs:
            if output.done() and not output.cancelled():
                output.exception()  # read: asyncio reports no "exception never retrieved" for it later
        settings.SETTINGS.outputs.clear()
    settings.SETTINGS.rpc_manager.clear()
    gc.collect()


class RecordingMocks(pulumi.runtime.Mocks):
    """Returns inputs as outputs plus the computed id, arn, name and stream_arn."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        service = args.typ.split(":")[1].split("/")[0] if ":" in args.typ else "mock"
        state.setdefault("name", f"{args.name}-physical")
        state.setdefault("arn", f"arn:aws:{service}:{REGION}:{ACCOUNT}:{args.name}/{state['name']}")
        if args.typ == "aws:s3/bucket:Bucket":
            state.setdefault("bucket", f"{args.name}-physical")
        if args.typ == "aws:rds/instance:Instance":
            state.setdefault("address", f"{args.name}.abc123.{REGION}.rds.amazonaws.com")
        if state.get("streamEnabled"):
            state["streamArn"] = f"{state['arn']}/stream/2026-01-01T00:00:00.000"
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        if args.token == "aws:index/getRegion:getRegion":
            return {"name": REGION, "region": REGION, "id": REGION}
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:user/test", "userId": "test", "id": ACCOUNT}
        raise NotImplementedError(f"no mock for the call {args.token}")


class RecordingMonitor(MockMonitor):
    """A mock monitor that also keeps each registration's inputs and parent."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.registered: list[Registered] = []

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            inputs = rpc.deserialize_properties(request.object)
            self.registered.append(
                Registered(
                    request.type,
                    request.name,
                    inputs,
                    request.parent or None,
                    response.urn,
                    tuple(request.additionalSecretOutputs),
                )
            )
        return response


class Harness:
    """Runs Pulumi programs under the mocks and answers questions about what they registered."""

    def __init__(self, monitor: RecordingMonitor) -> None:
        self.monitor = monitor

    @property
    def resources(self) -> list[Registered]:
        return list(self.monitor.registered)

    def run(self, build: Callable[[], T]) -> T:
        """Run ``build`` as a Pulumi program and wait for every registration and Output."""
        result: dict[str, T] = {}

        def program() -> None:
            result["value"] = build()

        try:
            _sync_await(run_pulumi_func(program))
        except BaseException:
            _drain_failed_program()
            raise
        return result["value"]

    def value(self, output: Any) -> Any:
        """The resolved value of an Output (after :meth:`run`)."""
        return _sync_await(pulumi.Output.from_input(output).future())

    def stack_outputs(self) -> dict[str, Any]:
        """What the program exported with pulumi.export, resolved."""
        root = pulumi.runtime.settings.get_root_resource()
        return {name: self.value(value) for name, value in dict(root.outputs).items()}

    def of_type(self, type_token: str) -> list[Registered]:
        return [r for r in self.monitor.registered if r.type == type_token]

    def one(self, type_token: str, name: str | None = None) -> Registered:
        found = [r for r in self.of_type(type_token) if name is None or r.name == name]
        assert len(found) == 1, f"expected one {type_token} {name or ''}, found {[r.name for r in found]}"
        return found[0]

    def urn_of(self, type_token: str, name: str) -> str:
        return self.one(type_token, name).urn


SECRET_SIG = (rpc._special_sig_key, rpc._special_secret_sig)


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SECRET_SIG[0]) == SECRET_SIG[1]


def plain_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """Inputs as the engine hands them to a provider that does not accept secrets: unwrapped."""
    return {key: value["value"] if is_secret(value) else value for key, value in inputs.items()}


def engine_provider(inputs: dict[str, Any]) -> ResourceProvider:
    """The dynamic provider pickled into ``inputs``, loaded as pulumi.dynamic's get_provider does."""
    text = plain_inputs(inputs)["__provider"]
    provider = _deserialize(lambda: dill.loads(base64.b64decode(text)))
    provider.configure(ConfigureRequest(config=Config(raw_config={}, project_name="expiry")))
    return provider
