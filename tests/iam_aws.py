"""The stack program's jobs, run from the archives their components build, each with the credentials
of a role holding exactly the policy its component generated, against a moto_server that enforces
IAM as AWS does (iam_moto.py).

The program runs under Pulumi's mocks; each function's role policy and EXPIRY_JOB are taken as
registered, with the mocks' made-up table ARNs replaced by the ARNs AWS gives tables
(``arn:aws:dynamodb:<region>:<account>:table/<name>``), which is what the engine would have passed."""

import json
import os
import runpy
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import requests
from aws import make_client
from pulumi_harness import ACCOUNT, REGION, plain_inputs
from stack_config import ROOT, stack_config
from tests_support import free_port
from upload_system import AHEAD, RUN_HANDLER, Invocation, create_table

IAM_MOTO = Path(__file__).with_name("iam_moto.py")
FUNCTION = "aws:lambda/function:Function"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
TABLE = "aws:dynamodb/table:Table"
SECRET = "aws:secretsmanager/secret:Secret"
SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"


class IamServer:
    """A moto_server process of its own (iam_moto.py); IAM is enforced only inside :meth:`enforced`."""

    def __init__(self, workdir: Path) -> None:
        self.decisions_path = workdir / "decisions.jsonl"
        self.decisions_path.touch()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = (workdir / "iam_moto.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, str(IAM_MOTO), str(port), str(self.decisions_path)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{self.url}/moto-api/data.json", timeout=2).raise_for_status()
                break
            except requests.RequestException:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"iam_moto did not start: {(workdir / 'iam_moto.log').read_text()}") from None
                time.sleep(0.1)

    def _auth(self, count: str) -> None:
        requests.post(f"{self.url}/moto-api/reset-auth", data=count.encode(), timeout=10).raise_for_status()

    def reset(self) -> None:
        """Every backend emptied, enforcement off, no decisions recorded."""
        self._auth("inf")
        requests.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()
        self.decisions_path.write_text("")

    @contextmanager
    def enforced(self) -> Iterator[None]:
        self._auth("0")
        try:
            yield
        finally:
            self._auth("inf")

    def decisions(self, role: str | None = None) -> list[dict[str, Any]]:
        """IAM's decisions so far, of ``role``'s sessions only when given."""
        lines = [json.loads(line) for line in self.decisions_path.read_text().splitlines() if line]
        return [d for d in lines if role is None or f":assumed-role/{role}/" in d["principal"]]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


@dataclass
class Function:
    """One job of the stack program as its component built it, ARNs as AWS gives them."""

    name: str
    handler: str
    archive: Path
    job: str
    policies: list[str]
    assume_role_policy: str
    managed_policies: list[str] = field(default_factory=list)
    """AWS managed policies attached to the role (not bound: moto does not load them)."""
    credentials: dict[str, str] = field(default_factory=dict)

    @property
    def settings(self) -> dict[str, Any]:
        return dict(json.loads(self.job))

    @property
    def kind(self) -> str:
        return str(self.settings["kind"])

    @property
    def role(self) -> str:
        return f"{self.name}-role"

    def statements(self) -> list[dict[str, Any]]:
        return [s for policy in self.policies for s in json.loads(policy)["Statement"]]


@dataclass
class Stack:
    functions: dict[str, Function]
    tables: dict[str, dict[str, Any]]
    """Each table's registered inputs, by physical name."""
    secrets: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Each secret's name (as the program prefixes it) -> its ARN under the mocks and its value."""

    def create_secrets(self, endpoint: str) -> None:
        """Each secret in Secrets Manager, its ARN in every function's job and policy."""
        secretsmanager = make_client("secretsmanager", endpoint)
        for name, (mocked, value) in self.secrets.items():
            real = secretsmanager.create_secret(Name=name, SecretString=value)["ARN"]
            for function in self.functions.values():
                function.job = function.job.replace(mocked, real)
                function.policies = [policy.replace(mocked, real) for policy in function.policies]


def table_arns(harness: Any) -> dict[str, str]:
    """The mocks' ARN of each table (``arn:aws:dynamodb:<region>:<account>:<resource>/<name>``) and
    the ARN AWS gives it."""
    return {
        f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:{r.name}/{physical_name(r)}": (
            f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{physical_name(r)}"
        )
        for r in harness.of_type(TABLE)
    }


def physical_name(table: Any) -> str:
    """The table's name, as given or as the mocks name it."""
    return str(table.inputs.get("name") or f"{table.name}-physical")


def as_aws_gives(text: str, arns: dict[str, str]) -> str:
    for mocked, real in arns.items():
        text = text.replace(mocked, real)
    return text


def deploy_stack(harness: Any, tmp_path: Path, monkeypatch: Any, stack: str = "dev", **overrides: Any) -> Stack:
    """Run __main__.py under the mocks with ``stack``'s config and ``overrides``; every function it
    registered, with its role's inline policies."""
    monkeypatch.setenv("EXPIRY_BUILD_DIR", str(tmp_path / "build"))
    pulumi.runtime.set_all_config(stack_config(stack, **overrides), secret_keys=["expiry:postgresPassword"])
    start = len(harness.resources)
    harness.run(lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__"))
    registered = harness.resources[start:]
    arns = table_arns(harness)
    roles = {r.name: r.inputs for r in registered if r.type == ROLE}
    functions = {}
    for fn in (r for r in registered if r.type == FUNCTION):
        role = fn.inputs["role"].rsplit(":", 1)[1].split("/")[0]  # the mocks' arn: ...:<role resource>/<name>
        policies = [
            as_aws_gives(p.inputs["policy"], arns)
            for p in registered
            if p.type == ROLE_POLICY and p.inputs["role"] == f"{role}-id"
        ]
        name = fn.name.removesuffix("-function")
        assert policies and role == f"{name}-role", (fn.name, role)
        functions[name] = Function(
            name=name,
            handler=fn.inputs["handler"],
            archive=Path(fn.inputs["code"].path),
            job=as_aws_gives(fn.inputs["environment"]["variables"]["EXPIRY_JOB"], arns),
            policies=policies,
            assume_role_policy=roles[role]["assumeRolePolicy"],
            managed_policies=[
                a.inputs["policyArn"]
                for a in registered
                if a.type == ATTACHMENT and a.inputs["role"] == f"{role}-physical"
            ],
        )
    for function in functions.values():
        for s in function.statements():
            for resource in s["Resource"]:
                assert not resource.startswith("arn:aws:dynamodb:") or ":table/" in resource, resource
    tables = {physical_name(r): {**r.inputs, "name": physical_name(r)} for r in registered if r.type == TABLE}
    secrets = {}
    for secret in (r for r in registered if r.type == SECRET):
        mocked = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:{secret.name}/{secret.name}-physical"
        (value,) = [
            plain_inputs(v.inputs)["secretString"]
            for v in registered
            if v.type == SECRET_VERSION and v.inputs["secretId"] == f"{secret.name}-id"
        ]
        secrets[f"{secret.inputs.get('namePrefix', '')}{secret.name}"] = (mocked, value)
    return Stack(functions, tables, secrets)


def create_tables(dynamodb: Any, stack: Stack) -> None:
    """Each table as the program declared it: keys, global indexes, stream, TTL."""
    for inputs in stack.tables.values():
        create_table(dynamodb, inputs)
        if inputs.get("ttl", {}).get("enabled"):
            dynamodb.update_time_to_live(
                TableName=inputs["name"],
                TimeToLiveSpecification={"Enabled": True, "AttributeName": inputs["ttl"]["attributeName"]},
            )


def bind_role(endpoint: str, function: Function, policies: list[str] | None = None) -> None:
    """A role holding ``policies`` (default: exactly the function's), and a session of it, whose
    credentials the function's runs use."""
    iam = make_client("iam", endpoint)
    iam.create_role(RoleName=function.role, AssumeRolePolicyDocument=function.assume_role_policy)
    for number, policy in enumerate(function.policies if policies is None else policies):
        iam.put_role_policy(
            RoleName=function.role, PolicyName=f"{function.name}-policy-{number}", PolicyDocument=policy
        )
    function.credentials = assume_role(endpoint, f"arn:aws:iam::{ACCOUNT}:role/{function.role}")


def assume_role(endpoint: str, role_arn: str) -> dict[str, str]:
    """Credentials of a session of ``role_arn``, as environment variables (Lambda's)."""
    credentials = make_client("sts", endpoint).assume_role(RoleArn=role_arn, RoleSessionName="lambda")["Credentials"]
    return {
        "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
        "AWS_SESSION_TOKEN": credentials["SessionToken"],
    }


def invoke(
    function: Function,
    tmp_path: Path,
    server: IamServer,
    payload: dict[str, Any] | None = None,
    region: str = REGION,
    environment: dict[str, str] | None = None,
) -> Invocation:
    """Invoke the function's handler from its archive, as Lambda would, with its role's credentials,
    IAM enforced; the clock AHEAD seconds in the future (upload_system.RUN_HANDLER). ``environment``
    (default: EXPIRY_JOB alone) is the function's environment as deployed, in ``region``."""
    assert function.credentials, f"bind_role first: {function.name}"
    unpacked = tmp_path / f"task-{function.archive.stem}"
    if not unpacked.exists():
        zipfile.ZipFile(function.archive).extractall(unpacked)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(unpacked),
        "PYTHONDONTWRITEBYTECODE": "1",
        **({"EXPIRY_JOB": function.job} if environment is None else environment),
        "AWS_ENDPOINT_URL": server.url,
        "AWS_DEFAULT_REGION": region,
        "AWS_EC2_METADATA_DISABLED": "true",
        "CLOCK_AHEAD": str(AHEAD),
        "LOSE_REPLIES": "[]",
        **function.credentials,
    }
    with server.enforced():
        done = subprocess.run(
            [sys.executable, "-c", RUN_HANDLER, str(unpacked), function.handler, json.dumps(payload or {})],
            cwd=unpacked,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    return Invocation(done.returncode, done.stdout, done.stderr)


def denied(server: IamServer, function: Function) -> list[dict[str, Any]]:
    """The calls of the function's runs that IAM refused, implicit checks included."""
    return [d for d in server.decisions(function.role) if not d["allowed"]]


def without_actions(function: Function, actions: set[str], on: str | None = None) -> list[str]:
    """The function's policies with ``actions`` taken out of every statement (of the statements
    granting them on resource ``on`` only, when given; emptied ones dropped)."""
    policies = []
    for policy in function.policies:
        document = json.loads(policy)
        kept = []
        for s in document["Statement"]:
            scoped = on is None or on in s["Resource"]
            remaining = [a for a in s["Action"] if not scoped or a not in actions]
            if remaining:
                kept.append({**s, "Action": remaining})
        policies.append(json.dumps({**document, "Statement": kept}))
    return policies
