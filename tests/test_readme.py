"""Every code block of the README works as written: Python blocks run under Pulumi's mocks (and moto, for
the blocks that call AWS), the YAML program matches the plugin's schema, shell blocks name commands that
exist (make targets, `expiry` subcommands and their options). Mermaid and plain listings are not
programs, nor is the excerpt of the purge's SQL: they are left out; the least-privilege SQL runs in
tests/test_readme_sql.py. The figures
below are checked too: the configuration table against Pulumi.yaml, the test count against pytest."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pulumi
import pytest
import yaml
from moto import mock_aws

from expiry import __version__
from expiry.components.provider_host import ExpiryProvider

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w*)\s*$")
EXTERNAL_COMMANDS = {"pip", "pulumi"}  # not on this machine's PATH (pulumi) or not ours to check (pip)


def all_blocks() -> list[tuple[str, int, str]]:
    """(language, line of the opening fence, code) of every fenced block."""
    found: list[tuple[str, int, str]] = []
    opened: tuple[str, int] | None = None
    lines: list[str] = []
    for number, line in enumerate((ROOT / "README.md").read_text().splitlines(), 1):
        fence = FENCE.match(line)
        if fence and opened is None:
            opened, lines = (fence.group(1), number), []
        elif line.strip() == "```" and opened is not None:
            found.append((opened[0], opened[1], "\n".join(lines) + "\n"))
            opened = None
        elif opened is not None:
            lines.append(line)
    assert opened is None, f"README.md:{opened[1]}: block never closed"
    return found


def blocks(language: str) -> list[tuple[int, str]]:
    return [(line, code) for found, line, code in all_blocks() if found == language]


def program_blocks() -> list[tuple[int, str]]:
    """The Python blocks that are programs; a unit-test file sets its own mocks (test_user_mocks.py runs it)."""
    return [(line, code) for line, code in blocks("python") if "pulumi.runtime.set_mocks" not in code]


def test_the_readme_has_the_blocks_this_test_reads():
    languages = {language for language, _, _ in all_blocks()}
    assert languages <= {"python", "sh", "yaml", "mermaid", "sql", ""}, languages
    assert len(blocks("python")) >= 8 and blocks("sh") and blocks("yaml")


@pytest.mark.parametrize(
    ("line", "code"), program_blocks(), ids=lambda value: f"line-{value}" if isinstance(value, int) else ""
)
def test_python_block_runs_as_written(pulumi_mocks, line, code):
    # The stack config the README has you set (`pulumi config set --secret dbPassword`).
    pulumi.runtime.set_config("expiry:dbPassword", "example-password")
    with mock_aws():
        pulumi_mocks.run(lambda: exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "readme"}))
    assert pulumi_mocks.resources or "pulumi" not in code, "a Pulumi example registered nothing"


@pytest.mark.parametrize(
    ("line", "code"), blocks("yaml"), ids=lambda value: f"line-{value}" if isinstance(value, int) else ""
)
def test_yaml_program_matches_the_plugin_schema(line, code):
    schema = json.loads(ExpiryProvider().schema or "{}")
    program = yaml.safe_load(code)
    declared = {name: spec["type"] for name, spec in program["resources"].items()}
    for name, spec in program["resources"].items():
        resource = schema["resources"][spec["type"]]
        given = set(spec.get("properties", {}))
        assert given <= set(resource["inputProperties"]), (name, given - set(resource["inputProperties"]))
        assert set(resource.get("requiredInputs", [])) <= given, (name, resource.get("requiredInputs"))
        for prop, value in spec.get("properties", {}).items():
            check_value(schema, resource["inputProperties"][prop], value, f"{name}.{prop}")
    for ref, prop in re.findall(r"\$\{([\w-]+)\.(\w+)\}", code):
        assert prop in schema["resources"][declared[ref]]["properties"], f"${{{ref}.{prop}}}"


def check_value(schema: dict, prop: dict, value: object, path: str) -> None:
    """A literal value fits its schema property: enum values allowed, nested objects' keys known."""
    if isinstance(value, str) and value.startswith("${"):
        return
    target = schema["types"].get(prop.get("$ref", "").removeprefix("#/types/"), {})
    if "enum" in target:
        assert value in [e["value"] for e in target["enum"]], (path, value)
    if prop.get("type") == "array" and isinstance(value, list):
        for i, item in enumerate(value):
            check_value(schema, prop["items"], item, f"{path}[{i}]")
    if target.get("type") == "object" and isinstance(value, dict):
        assert set(value) <= set(target["properties"]), (path, set(value) - set(target["properties"]))
        for key, item in value.items():
            check_value(schema, target["properties"][key], item, f"{path}.{key}")


def test_shell_blocks_name_commands_that_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = {t for rule in re.findall(r"^([\w-]+(?: [\w-]+)*):", makefile, re.M) for t in rule.split()}
    help_of: dict[str, str] = {}
    for _, code in blocks("sh"):
        for command in re.sub(r"\\\n\s*", " ", code).splitlines():
            words = [w for w in command.split("#")[0].split() if not re.match(r"^[A-Z_]+=", w)]
            if not words:
                continue
            if words[0] == "make":
                assert set(words[1:]) <= targets, command
            elif words[0] == "expiry":
                if words[1] not in help_of:
                    help_of[words[1]] = subprocess.run(
                        [sys.executable, "-m", "expiry", words[1], "--help"], capture_output=True, text=True, check=True
                    ).stdout
                for option in (w.split("=")[0] for w in words[2:] if w.startswith("--")):
                    assert option in help_of[words[1]], f"{command}: {option}"
            else:
                assert words[0] in EXTERNAL_COMMANDS, command


def test_every_stack_setting_is_in_the_configuration_table():
    declared = set(yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"])
    section = (ROOT / "README.md").read_text().split("### Configuration reference", 1)[1].split("\n## ", 1)[0]
    documented: set[str] = set()
    for first_cell in re.findall(r"^\| (`expiry:[^|]*)\|", section, re.M):
        documented |= set(re.findall(r"`(?:expiry:)?(\w+)`", first_cell))
    assert not declared - documented, f"in Pulumi.yaml, not in README's table: {sorted(declared - documented)}"
    # expiry:postgresPassword is the one setting read but not declared (README says why).
    assert documented - declared == {"postgresPassword"}, sorted(documented - declared)


def test_the_readme_test_count_is_within_15_percent_of_pytest_s():
    stated = re.search(r"About (\d+) tests", (ROOT / "README.md").read_text())
    assert stated, "README states no test count"
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    found = re.search(r"^(\d+) tests? collected", collected.stdout, re.M)
    assert found, collected.stdout[-2000:] + collected.stderr[-2000:]
    assert abs(int(found.group(1)) - int(stated.group(1))) <= 0.15 * int(stated.group(1)), (
        f"README says about {stated.group(1)} tests, pytest collects {found.group(1)}: update README"
    )


def test_the_plugin_install_line_pins_no_release_and_names_the_declared_version():
    """No release tag is published: `pulumi package add` takes a checkout, and the version is expiry's."""
    commands = [
        line.split("#")[0] for _, code in blocks("sh") for line in code.splitlines() if "pulumi package add" in line
    ]
    assert commands and all("@" not in command for command in commands), commands
    section = (ROOT / "README.md").read_text().split("### From TypeScript, Go, C#, Java or YAML", 1)[1]
    assert f"declares version {__version__}" in section.split("\n## ", 1)[0]
