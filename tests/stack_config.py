"""Stack configuration as the Pulumi CLI hands it to the program: Pulumi.yaml's defaults,
overridden by Pulumi.<stack>.yaml, every value a string (objects and lists as JSON)."""

import json
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _as_config_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def declared_settings() -> dict[str, dict[str, Any]]:
    """The `config:` block of Pulumi.yaml."""
    return yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]


def stack_config(stack: str, drop: tuple[str, ...] = (), **overrides: Any) -> dict[str, str]:
    """Config for ``stack`` as the files on disk give it; ``drop`` removes keys, ``overrides`` sets
    project keys as `pulumi config set` would. Nothing else is added: a value the files lack stays lacking."""
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["name"]
    values = {f"{project}:{key}": spec["default"] for key, spec in declared_settings().items() if "default" in spec}
    stack_file = ROOT / f"Pulumi.{stack}.yaml"
    values.update(yaml.safe_load(stack_file.read_text()).get("config") or {})
    values.update({f"{project}:{key}": value for key, value in overrides.items()})
    for key in drop:
        values.pop(f"{project}:{key}", None)
    return {key: _as_config_string(value) for key, value in values.items()}
