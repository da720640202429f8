"""The Pulumi engine's config rules, applied to Pulumi.yaml and every Pulumi.<stack>.yaml as they are on
disk (nothing injected): what `pulumi up` checks before the program runs
(pulumi/pulumi sdk/go/common/workspace/config.go, ValidateStackConfigAndApplyProjectConfig).

1. A key the project declares in its own namespace, with no default (or value), that the stack does
   not set: "Stack '<stack>' is missing configuration value '<key>'".
2. A stack value of a declared key must match its declared type (string, integer, boolean, array
   with typed items).
3. A key declared secret must be stored encrypted (`secure:`) in the stack file."""

from pathlib import Path
from typing import Any

import pytest
import yaml
from stack_config import ROOT

STACKS = sorted(path.name.split(".")[1] for path in ROOT.glob("Pulumi.*.yaml"))


def type_matches(declared: dict[str, Any], value: Any) -> bool:
    kind = declared["type"]
    if kind == "array":
        items = declared.get("items") or {}
        return (
            isinstance(value, list) and all(type_matches(items, v) for v in value) if items else isinstance(value, list)
        )
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }
    return checks[kind](value)


def engine_errors(project_file: Path, stack_file: Path) -> list[str]:
    """The errors the engine would report for this pair of files (an empty list: it lets `up` run)."""
    project = yaml.safe_load(project_file.read_text())
    stack = stack_file.name.split(".")[1]
    values = yaml.safe_load(stack_file.read_text()).get("config") or {}
    name = project["name"]
    errors = []
    for key, declared in (project.get("config") or {}).items():
        full = key if ":" in key else f"{name}:{key}"
        if full not in values:
            if "default" not in declared and "value" not in declared and full.startswith(f"{name}:"):
                errors.append(f"Stack '{stack}' is missing configuration value '{key}'")
            continue
        value = values[full]
        if declared.get("secret") and not (isinstance(value, dict) and "secure" in value):
            errors.append(f"Stack '{stack}' with configuration key '{key}' must be encrypted as it's secret")
        elif "type" in declared and not isinstance(value, dict) and not type_matches(declared, value):
            errors.append(f"Stack '{stack}' with configuration key '{key}' must be of type '{declared['type']}'")
    return errors


def test_there_are_stacks_to_check():
    assert {"dev", "prod"} <= set(STACKS)


@pytest.mark.parametrize("stack", STACKS)
def test_every_shipped_stack_passes_the_engine_rules(stack):
    assert engine_errors(ROOT / "Pulumi.yaml", ROOT / f"Pulumi.{stack}.yaml") == []


def test_the_rules_catch_what_the_engine_refuses(tmp_path):
    """The checker itself: each rule fires on a file that breaks it."""
    (tmp_path / "Pulumi.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "expiry",
                "config": {
                    "password": {"type": "string", "secret": True},
                    "shards": {"type": "integer", "default": 0},
                    "tags": {"type": "array", "items": {"type": "string"}, "default": []},
                    "token": {"type": "string", "secret": True, "default": ""},
                },
            }
        )
    )
    (tmp_path / "Pulumi.bad.yaml").write_text(
        yaml.safe_dump({"config": {"expiry:shards": "ten", "expiry:tags": [1], "expiry:token": "plain"}})
    )
    assert engine_errors(tmp_path / "Pulumi.yaml", tmp_path / "Pulumi.bad.yaml") == [
        "Stack 'bad' is missing configuration value 'password'",
        "Stack 'bad' with configuration key 'shards' must be of type 'integer'",
        "Stack 'bad' with configuration key 'tags' must be of type 'array'",
        "Stack 'bad' with configuration key 'token' must be encrypted as it's secret",
    ]
