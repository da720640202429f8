"""A fake Pulumi engine and resource monitor over gRPC, and a client for a provider plugin: enough to
start the expiry plugin as the engine does, read its schema and Construct components through it with
inputs on the wire as another language's SDK sends them."""

import json
import subprocess
import sys
import threading
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime import rpc
from pulumi.runtime.proto import (
    callback_pb2,
    callback_pb2_grpc,
    engine_pb2,
    engine_pb2_grpc,
    provider_pb2,
    provider_pb2_grpc,
    resource_pb2,
    resource_pb2_grpc,
)

ACCOUNT = "123456789012"
PROJECT, STACK = "polyglot", "dev"
INVOKES = {
    "aws:index/getCallerIdentity:getCallerIdentity": {
        "accountId": ACCOUNT,
        "arn": f"arn:aws:iam::{ACCOUNT}:user/t",
        "userId": "t",
        "id": ACCOUNT,
    },
    "aws:index/getRegion:getRegion": {"name": "us-east-1", "region": "us-east-1", "id": "us-east-1"},
}
FEATURES = [
    resource_pb2.RESOURCE_MONITOR_FEATURE_SECRETS,
    resource_pb2.RESOURCE_MONITOR_FEATURE_RESOURCE_REFERENCES,
    resource_pb2.RESOURCE_MONITOR_FEATURE_OUTPUT_VALUES,
    resource_pb2.RESOURCE_MONITOR_FEATURE_DELETED_WITH,
    resource_pb2.RESOURCE_MONITOR_FEATURE_ALIAS_SPECS,
]


def unknown(*dependencies: str) -> dict[str, Any]:
    """An output value whose value is not known yet (a preview), as SDKs send it."""
    return {rpc._special_sig_key: rpc._special_output_value_sig, "dependencies": list(dependencies)}


def output(value: Any, *dependencies: str) -> dict[str, Any]:
    """A known output value with dependencies: another resource's output passed on."""
    return {rpc._special_sig_key: rpc._special_output_value_sig, "value": value, "dependencies": list(dependencies)}


def secret(value: Any) -> dict[str, Any]:
    return {rpc._special_sig_key: rpc._special_secret_sig, "value": value}


def to_struct(values: dict[str, Any]) -> struct_pb2.Struct:
    """A Struct as it travels: every number a double (10 arrives as 10.0)."""
    message = struct_pb2.Struct()
    message.update(values)
    return message


@dataclass
class Registration:
    type: str
    name: str
    parent: str
    custom: bool
    inputs: dict[str, Any]
    wire_inputs: struct_pb2.Struct = field(default_factory=struct_pb2.Struct)
    before_update: list[str] = field(default_factory=list)


@dataclass
class Hook:
    """A resource hook as a program registered it: where the engine calls it back."""

    name: str
    token: str
    target: str
    on_dry_run: bool


def call_hook(hook: Hook, request: resource_pb2.ResourceHookRequest) -> str:
    """Invoke a hook through its program's callback server, as the engine does; its error, or ""."""
    with grpc.insecure_channel(hook.target) as channel:
        reply = callback_pb2_grpc.CallbacksStub(channel).Invoke(
            callback_pb2.CallbackInvokeRequest(token=hook.token, request=request.SerializeToString()), timeout=30
        )
    return resource_pb2.ResourceHookResponse.FromString(reply.response).error


@dataclass
class FakeMonitor(resource_pb2_grpc.ResourceMonitorServicer, engine_pb2_grpc.EngineServicer):
    """Records registrations, echoes inputs as outputs (an id and arn added), answers getCallerIdentity."""

    preview: bool = False
    hooks_supported: bool = False
    registered: list[Registration] = field(default_factory=list)
    hooks: dict[str, Hook] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def GetDeploymentInfo(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC method names)
        features = FEATURES + [resource_pb2.RESOURCE_MONITOR_FEATURE_RESOURCE_HOOKS] * self.hooks_supported
        return resource_pb2.DeploymentInfo(
            project=PROJECT, stack=STACK, dryRun=self.preview, parallel=4, supportedFeatures=features
        )

    def RegisterResourceHook(self, request: Any, context: Any) -> Any:  # noqa: N802
        with self.lock:
            if request.name in self.hooks:  # as the engine refuses it (pkg/resource/deploy/resource_hooks.go)
                context.abort(
                    grpc.StatusCode.ALREADY_EXISTS, f"resource hook already registered for name {request.name!r}"
                )
            self.hooks[request.name] = Hook(
                request.name, request.callback.token, request.callback.target, request.on_dry_run
            )
        return empty_pb2.Empty()

    def RegisterResource(self, request: Any, context: Any) -> Any:  # noqa: N802
        inputs = json.loads(json.dumps(rpc.deserialize_properties(request.object, keep_unknowns=True), default=str))
        with self.lock:
            self.registered.append(
                Registration(
                    request.type,
                    request.name,
                    request.parent,
                    request.custom,
                    inputs,
                    request.object,
                    list(request.hooks.before_update),
                )
            )
        urn = f"urn:pulumi:{STACK}::{PROJECT}::{request.type}::{request.name}"
        outputs = struct_pb2.Struct()
        outputs.update(request.object)
        if request.custom and not self.preview:
            outputs.update({"arn": f"arn:aws:mock:us-east-1:{ACCOUNT}:{request.name}", "name": f"{request.name}-1"})
        return resource_pb2.RegisterResourceResponse(
            urn=urn, id="" if self.preview else f"{request.name}-id", object=outputs
        )

    def RegisterResourceOutputs(self, request: Any, context: Any) -> Any:  # noqa: N802
        return empty_pb2.Empty()

    def Invoke(self, request: Any, context: Any) -> Any:  # noqa: N802
        if request.tok not in INVOKES:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"no fake for {request.tok}")
        return provider_pb2.InvokeResponse(**{"return": to_struct(INVOKES[request.tok])})

    def Log(self, request: Any, context: Any) -> Any:  # noqa: N802
        with self.lock:
            self.logs.append(request.message)
        return empty_pb2.Empty()

    def GetRootResource(self, request: Any, context: Any) -> Any:  # noqa: N802
        return engine_pb2.GetRootResourceResponse(urn="")

    def SetRootResource(self, request: Any, context: Any) -> Any:  # noqa: N802
        return engine_pb2.SetRootResourceResponse()

    def of_type(self, type_token: str) -> list[Registration]:
        return [r for r in self.registered if r.type == type_token]


class Plugin:
    """The plugin folder run as the engine runs it (`python <folder> <engine address>`), with a fake
    engine and monitor it talks back to."""

    def __init__(self, folder: Path) -> None:
        self.monitor = FakeMonitor()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        resource_pb2_grpc.add_ResourceMonitorServicer_to_server(self.monitor, self.server)
        engine_pb2_grpc.add_EngineServicer_to_server(self.monitor, self.server)
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()
        self.process = subprocess.Popen(
            [sys.executable, str(folder), self.address], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        port = self.process.stdout.readline().strip()
        if not port.isdigit():
            self.process.kill()
            raise RuntimeError(f"the plugin did not start: {port!r} {self.process.communicate()[1]}")
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.provider = provider_pb2_grpc.ResourceProviderStub(self.channel)

    def schema(self) -> dict[str, Any]:
        return json.loads(self.provider.GetSchema(provider_pb2.GetSchemaRequest(version=0)).schema)

    def construct(
        self, type_name: str, name: str, inputs: dict[str, Any], dependencies: dict[str, list[str]] | None = None
    ) -> dict[str, Any]:
        """Construct a component; its state as the calling SDK would deserialize it."""
        request = provider_pb2.ConstructRequest(
            project=PROJECT,
            stack=STACK,
            dryRun=self.monitor.preview,
            parallel=4,
            monitorEndpoint=self.address,
            type=f"expiry:index:{type_name}",
            name=name,
            inputs=to_struct(inputs),
            inputDependencies={
                key: provider_pb2.ConstructRequest.PropertyDependencies(urns=urns)
                for key, urns in (dependencies or {}).items()
            },
        )
        response = self.provider.Construct(request, timeout=120)
        return {"urn": response.urn, **rpc.deserialize_properties(response.state, keep_unknowns=True)}

    def stop(self) -> None:
        self.channel.close()
        self.process.kill()
        self.process.communicate()
        self.server.stop(None)
