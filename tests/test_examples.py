"""The example programs in examples/ (TypeScript and YAML) against the schema the plugin serves: every
resource type it offers, every property name it takes, each value of the property's type, the required
inputs given; then the YAML program's resources constructed through the plugin in order, outputs passed
on as SDKs pass them. The TypeScript program is read by a small parser of the object literals it is
written in (no TypeScript compiler is needed); anything else in a constructor's arguments fails it."""

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_engine import Plugin, output

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PACKAGE = "expiry"


@dataclass(frozen=True)
class Ref:
    """Another resource's output property: `${sessions.target}` in YAML, `sessions.target` in TypeScript."""

    resource: str
    prop: str


@pytest.fixture(scope="module")
def plugin() -> Iterator[Plugin]:
    started = Plugin(ROOT / "provider")
    yield started
    started.stop()


# --- TypeScript: `const name = new expiry.Type("name", { ... });` with object literals of literals and refs

TOKEN = re.compile(
    r"""\s*(?:(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(?P<number>-?\d+(?:\.\d+)?)"""
    r"""|(?P<name>[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*)|(?P<punct>[{}\[\]:,]))"""
)
CONSTRUCTION = re.compile(r"const\s+(\w+)\s*=\s*new\s+expiry\.(\w+)\(\s*(\"[^\"]*\"|'[^']*')\s*,\s*")


def _strip_comments(source: str) -> str:
    source = re.sub(r"/\*.*?\*/", "", source, flags=re.S)
    return re.sub(r"(?m)//.*$", "", source)


class _Literal:
    def __init__(self, source: str, position: int) -> None:
        self.source, self.position = source, position

    def token(self) -> tuple[str, str]:
        match = TOKEN.match(self.source, self.position)
        if not match:
            raise AssertionError(f"cannot read TypeScript at {self.source[self.position : self.position + 40]!r}")
        self.position = match.end()
        kind = match.lastgroup or ""
        return kind, match.group(kind)

    def value(self) -> Any:
        kind, text = self.token()
        if kind == "string":
            return text[1:-1]
        if kind == "number":
            return float(text) if "." in text else int(text)
        if kind == "name":
            if text in ("true", "false"):
                return text == "true"
            resource, _, prop = text.partition(".")
            assert prop and "." not in prop, f"only `resource.output` may be referenced, got {text!r}"
            return Ref(resource, prop)
        if text == "{":
            found: dict[str, Any] = {}
            while True:
                kind, key = self.token()
                if key == "}":
                    return found
                assert kind in ("name", "string"), f"object key expected, got {key!r}"
                key = key.strip("\"'")
                assert key not in found, f"key {key!r} given twice"
                assert self.token()[1] == ":", f"':' expected after {key!r}"
                found[key] = self.value()
                separator = self.token()[1]
                if separator == "}":
                    return found
                assert separator == ",", f"',' or '}}' expected after {key!r}"
        if text == "[":
            items: list[Any] = []
            while True:
                if TOKEN.match(self.source, self.position) and self.source[self.position :].lstrip().startswith("]"):
                    self.token()
                    return items
                items.append(self.value())
                separator = self.token()[1]
                if separator == "]":
                    return items
                assert separator == ",", "',' or ']' expected in an array"
        raise AssertionError(f"unexpected {text!r}")


def typescript_resources(path: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """variable -> (component, args) of every `new expiry.X(...)` in the program."""
    source = _strip_comments(path.read_text())
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for match in CONSTRUCTION.finditer(source):
        variable, component, _name = match.groups()
        literal = _Literal(source, match.end())
        args = literal.value()
        assert isinstance(args, dict), f"{variable}: the args must be an object literal"
        assert re.match(r"\s*\);", source[literal.position :]), f"{variable}: only (name, args) are read"
        assert _name.strip("\"'") == variable, f"{variable}: named {_name} (the YAML example names it {variable})"
        found[variable] = (component, args)
    assert len(found) == source.count("new expiry."), "a construction the reader does not understand"
    return found


# --- YAML


def yaml_value(value: Any) -> Any:
    if isinstance(value, str) and (match := re.fullmatch(r"\$\{(\w+)\.(\w+)\}", value)):
        return Ref(match[1], match[2])
    assert not (isinstance(value, str) and "${" in value), f"only whole `${{resource.output}}` values: {value!r}"
    if isinstance(value, dict):
        return {key: yaml_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [yaml_value(item) for item in value]
    return value


def yaml_resources(path: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    program = yaml.safe_load(path.read_text())
    found = {}
    for name, resource in program["resources"].items():
        package, *rest = resource["type"].split(":")
        assert package == PACKAGE, f"{name}: only the plugin's resources, got {resource['type']}"
        assert rest[:-1] in ([], ["index"]), resource["type"]
        found[name] = (rest[-1], yaml_value(resource.get("properties", {})))
    for value in program.get("outputs", {}).values():
        ref = yaml_value(value)
        assert isinstance(ref, Ref) and ref.resource in found, value
    return found


# --- checking against the schema


def check(schema: dict[str, Any], resources: dict[str, tuple[str, dict[str, Any]]]) -> list[str]:
    """What in the programs' resources the schema does not allow, as readable lines (none: it fits)."""
    problems: list[str] = []
    tokens = {token.split(":")[-1]: spec for token, spec in schema["resources"].items()}

    def types_of(spec: dict[str, Any]) -> str:
        return spec.get("$ref") or spec["type"]

    def value(where: str, spec: dict[str, Any], given: Any) -> None:
        if isinstance(given, Ref):
            if given.resource not in resources:
                problems.append(f"{where}: {given.resource} is not a resource of the program")
                return
            produced = tokens[resources[given.resource][0]].get("properties", {}).get(given.prop)
            if produced is None:
                problems.append(f"{where}: {resources[given.resource][0]} has no output {given.prop}")
            elif types_of(produced) != types_of(spec):
                problems.append(f"{where}: {given.resource}.{given.prop} is {types_of(produced)}, not {types_of(spec)}")
            return
        if "$ref" in spec:
            declared = schema["types"][spec["$ref"].removeprefix("#/types/")]
            if "enum" in declared:
                if given not in [entry["value"] for entry in declared["enum"]]:
                    problems.append(f"{where}: {given!r} is not one of the enum's values")
                return
            obj(where, declared.get("properties", {}), declared.get("required", []), given)
            return
        kind = spec["type"]
        expected = {"string": str, "boolean": bool, "number": (int, float), "integer": int, "array": list}
        if kind == "object":
            if not isinstance(given, dict):
                problems.append(f"{where}: an object expected, got {given!r}")
            else:
                for key, item in given.items():
                    value(f"{where}.{key}", spec.get("additionalProperties", {"type": "string"}), item)
            return
        if not isinstance(given, expected[kind]) or (kind in ("integer", "number") and isinstance(given, bool)):
            problems.append(f"{where}: {kind} expected, got {given!r}")
        elif kind == "array":
            for position, item in enumerate(given):
                value(f"{where}[{position}]", spec["items"], item)

    def obj(where: str, properties: dict[str, Any], required: list[str], given: Any) -> None:
        if isinstance(given, Ref) or not isinstance(given, dict):
            problems.append(f"{where}: an object expected, got {given!r}")
            return
        for name in required:
            if name not in given:
                problems.append(f"{where}: {name} is required")
        for name, item in given.items():
            if name not in properties:
                problems.append(f"{where}: no property {name}")
            else:
                value(f"{where}.{name}", properties[name], item)

    for variable, (component, args) in resources.items():
        if component not in tokens:
            problems.append(f"{variable}: the schema has no resource {component}")
            continue
        spec = tokens[component]
        obj(variable, spec["inputProperties"], spec.get("requiredInputs", []), args)
    return problems


def test_the_typescript_example_fits_the_served_schema(plugin: Plugin):
    resources = typescript_resources(EXAMPLES / "typescript" / "index.ts")
    assert {component for component, _ in resources.values()} == {"TtlTable", "ScheduledSweeper"}
    assert resources["sweeper"][1]["table"] == Ref("sessions", "target")
    assert check(plugin.schema(), resources) == []
    source = (EXAMPLES / "typescript" / "index.ts").read_text()
    for exported in re.findall(r"export const \w+ = (\w+)\.(\w+);", source):
        component = resources[exported[0]][0]
        assert exported[1] in plugin.schema()["resources"][f"expiry:index:{component}"]["properties"], exported


def test_the_yaml_example_fits_the_served_schema(plugin: Plugin):
    resources = yaml_resources(EXAMPLES / "yaml" / "Pulumi.yaml")
    assert {component for component, _ in resources.values()} == {"TtlTable", "ScheduledSweeper"}
    assert resources["sweeper"][1]["table"] == Ref("sessions", "target")
    assert check(plugin.schema(), resources) == []


def test_the_examples_are_the_same_program_and_name_the_plugin_in_this_repository():
    assert typescript_resources(EXAMPLES / "typescript" / "index.ts") == yaml_resources(
        EXAMPLES / "yaml" / "Pulumi.yaml"
    )
    for folder, runtime in (("typescript", {"name": "nodejs", "options": {"packagemanager": "npm"}}), ("yaml", "yaml")):
        project = yaml.safe_load((EXAMPLES / folder / "Pulumi.yaml").read_text())
        assert project["runtime"] == runtime
        assert (EXAMPLES / folder / project["packages"][PACKAGE] / "PulumiPlugin.yaml").is_file()


def test_the_checker_finds_what_the_schema_does_not_allow(plugin: Plugin):
    """The check itself: a misspelt property, a wrong type, an output of another type, a missing
    required input and an enum value the schema does not offer are each reported."""
    bad = {
        "sessions": ("TtlTable", {"hashKey": 1, "ttlAtribute": "x", "billingMode": "FREE"}),
        "sweeper": ("ScheduledSweeper", {"kind": "sweep", "table": Ref("sessions", "tableName")}),
        "other": ("Sweeper", {}),
    }
    assert check(plugin.schema(), bad) == [
        "sessions.hashKey: string expected, got 1",
        "sessions: no property ttlAtribute",
        "sessions.billingMode: 'FREE' is not one of the enum's values",
        "sweeper: schedule is required",
        "sweeper.table: sessions.tableName is string, not #/types/expiry:index:TableTarget",
        "other: the schema has no resource Sweeper",
    ]


def test_the_yaml_example_runs_through_the_plugin(plugin: Plugin):
    """Each resource constructed as the engine would, in order, a `${resource.output}` passed as the
    output value SDKs send; the sweeper's job reads the table the target names."""
    plugin.monitor.registered.clear()
    states: dict[str, dict[str, Any]] = {}

    def resolved(given: Any) -> Any:
        if isinstance(given, Ref):
            return output(states[given.resource][given.prop], states[given.resource]["urn"])
        if isinstance(given, dict):
            return {key: resolved(item) for key, item in given.items()}
        return [resolved(item) for item in given] if isinstance(given, list) else given

    for name, (component, args) in yaml_resources(EXAMPLES / "yaml" / "Pulumi.yaml").items():
        states[name] = plugin.construct(component, name, resolved(args))
    (function,) = plugin.monitor.of_type("aws:lambda/function:Function")
    job = function.inputs["environment"]["variables"]["EXPIRY_JOB"]
    assert f'"table_name":"{states["sessions"]["tableName"]}"' in job and '"expiry_index_name":"expiry-index"' in job


# --- TypeScript, compiled: declarations generated from the served schema, checked by the tsc that
# `make setup` installs into .tools/ (or EXPIRY_TSC=path/to/tsc).

PULUMI_STUB = """
export interface Output<T> { apply<U>(f: (t: T) => U): Output<U>; }
export type Input<T> = T | Promise<T> | Output<T>;
export declare class ComponentResource { protected constructor(); }
export interface ComponentResourceOptions { parent?: ComponentResource; }
"""


def declarations(schema: dict[str, Any]) -> str:
    """A declaration file for the schema as Pulumi's Node SDK generator shapes it: args interfaces with
    Input-wrapped (unless plain) and optional (unless required) properties, object types in an input
    and an output form, enums as unions of their values, outputs as Output<...>."""
    types = schema["types"]

    def ts(spec: dict[str, Any], side: str) -> str:
        if "$ref" in spec:
            token = spec["$ref"].removeprefix("#/types/")
            declared, name = types[token], token.split(":")[-1]
            if "enum" in declared:
                return " | ".join(f'"{entry["value"]}"' for entry in declared["enum"])
            return f"{name}{'Args' if side == 'input' else ''}"
        kind = spec["type"]
        if kind == "array":
            return f"{wrap(spec['items'], side)}[]"
        if kind == "object":
            return f"{{[key: string]: {wrap(spec.get('additionalProperties', {'type': 'string'}), side)}}}"
        return {"string": "string", "integer": "number", "number": "number", "boolean": "boolean"}[kind]

    def wrap(spec: dict[str, Any], side: str) -> str:
        inner = ts(spec, side)
        return inner if side == "output" or spec.get("plain") else f"pulumi.Input<{inner}>"

    def members(properties: dict[str, Any], required: list[str], side: str) -> str:
        return "".join(
            f"    {name}{'' if name in required else '?'}: {wrap(spec, side)};\n" for name, spec in properties.items()
        )

    text = 'import * as pulumi from "@pulumi/pulumi";\n'
    for token, declared in types.items():
        if "enum" in declared:
            continue
        name, properties, required = token.split(":")[-1], declared.get("properties", {}), declared.get("required", [])
        text += f"export interface {name}Args {{\n{members(properties, required, 'input')}}}\n"
        text += f"export interface {name} {{\n{members(properties, required, 'output')}}}\n"
    for token, resource in schema["resources"].items():
        name = token.split(":")[-1]
        outputs = "".join(
            f"    readonly {prop}: pulumi.Output<{ts(spec, 'output')}>;\n"
            for prop, spec in resource.get("properties", {}).items()
        )
        inputs = members(resource.get("inputProperties", {}), resource.get("requiredInputs", []), "input")
        text += (
            f"export declare class {name} extends pulumi.ComponentResource {{\n{outputs}"
            f"    constructor(name: string, args: {name}Args, opts?: pulumi.ComponentResourceOptions);\n}}\n"
            f"export interface {name}Args {{\n{inputs}}}\n"
        )
    return text


def tsc() -> str:
    compiler = os.environ.get("EXPIRY_TSC") or str(ROOT / ".tools" / "node_modules" / ".bin" / "tsc")
    assert Path(compiler).is_file(), f"no TypeScript compiler at {compiler}: run `make setup` (or set EXPIRY_TSC)"
    return compiler


def test_the_typescript_example_compiles_against_declarations_from_the_served_schema(plugin: Plugin, tmp_path: Path):
    for package, text in (("pulumi", PULUMI_STUB), ("expiry", declarations(plugin.schema()))):
        folder = tmp_path / "node_modules" / "@pulumi" / package
        folder.mkdir(parents=True)
        (folder / "index.d.ts").write_text(text)
    program = tmp_path / "index.ts"
    program.write_text((EXAMPLES / "typescript" / "index.ts").read_text())
    command = [tsc(), "--noEmit", "--strict", "--target", "es2020", "--moduleResolution", "node", str(program)]
    compiled = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    # The compiler catches what the schema forbids: a misspelt key in the table's place.
    program.write_text(program.read_text().replace("table: sessions.target", "tabel: sessions.target"))
    refused = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "tabel" in refused.stdout, refused.stdout
