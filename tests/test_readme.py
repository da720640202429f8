"""Every code block of the README and of the pages under docs/ works as written: Python blocks run under
Pulumi's mocks (and moto, for the blocks that call AWS), the YAML program matches the plugin's schema,
shell blocks name commands that exist (make targets, `expiry` subcommands and their options). Mermaid and
plain listings are not programs, nor is the excerpt of the purge's SQL: they are left out; the
least-privilege SQL runs in tests/test_readme_sql.py. The figures below are checked too: the configuration table
against Pulumi.yaml, the test count against pytest. The pages are read in one place, tests/docs_pages.py;
every relative link between them must resolve."""

import json
import re
import subprocess
import sys

import pulumi
import pytest
import yaml
from docs_pages import ROOT, Location, all_blocks, anchors, location_id, section, texts
from moto import mock_aws

from expiry import __version__
from expiry.components.provider_host import ExpiryProvider

EXTERNAL_COMMANDS = {"pip", "pulumi"}  # not on this machine's PATH (pulumi) or not ours to check (pip)
# Blocks per language once README.md was split into docs/ (issue 19: 23 blocks before, 24 after, the
# benchmarks page's `make benchmark` added). A page dropped from docs/, or a block lost in a move, shows
# here; raise these when examples are added.
BLOCKS_AT_LEAST = {"python": 11, "sh": 6, "yaml": 1, "sql": 2, "mermaid": 1, "": 3}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def blocks(language: str) -> list[tuple[Location, str]]:
    """(where, code) of the blocks in ``language`` on every page (README.md and docs/*.md)."""
    return [(where, code) for found, where, code in all_blocks() if found == language]


def program_blocks() -> list[tuple[Location, str]]:
    """The Python blocks that are programs; a unit-test file sets its own mocks (test_user_mocks.py runs it)."""
    return [(where, code) for where, code in blocks("python") if "pulumi.runtime.set_mocks" not in code]


def test_the_readme_has_the_blocks_this_test_reads():
    languages = {language for language, _, _ in all_blocks()}
    assert languages <= {"python", "sh", "yaml", "mermaid", "sql", ""}, languages
    assert len(blocks("python")) >= 8 and blocks("sh") and blocks("yaml")
    for language, least in BLOCKS_AT_LEAST.items():
        assert len(blocks(language)) >= least, f"```{language}: {len(blocks(language))} blocks, were {least}"
    assert len(program_blocks()) >= 10


def relative_links(text: str) -> list[str]:
    """The targets of a page's Markdown links outside code (fenced blocks and `spans`), other sites left out."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    prose = re.sub(r"`[^`\n]*`", "", prose)
    return [target for target in LINK.findall(prose) if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]


def test_every_relative_link_points_at_a_page_and_heading_that_exist():
    checked = 0
    for page, text in texts():
        for target in relative_links(text):
            path, _, anchor = target.partition("#")
            linked = (ROOT / page).parent / path if path else ROOT / page
            assert linked.resolve().is_relative_to(ROOT) and linked.exists(), f"{page}: ({target}): no such file"
            if anchor:
                assert linked.suffix == ".md", f"{page}: ({target}): an anchor into a file that is not a page"
                assert anchor in anchors(linked.read_text()), f"{page}: ({target}): no heading makes #{anchor}"
            checked += 1
    assert checked >= 12, checked


def test_every_docs_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in relative_links(readme)}
    pages = {page.resolve() for page in (ROOT / "docs").glob("*.md")}
    assert pages, "no pages under docs/"
    assert not pages - linked, f"not linked from README.md: {sorted(p.name for p in pages - linked)}"


@pytest.mark.parametrize(("where", "code"), program_blocks(), ids=location_id)
def test_python_block_runs_as_written(pulumi_mocks, where, code):
    # The stack config the README has you set (`pulumi config set --secret dbPassword`).
    pulumi.runtime.set_config("expiry:dbPassword", "example-password")
    with mock_aws():
        pulumi_mocks.run(lambda: exec(compile(code, where, "exec"), {"__name__": "readme"}))
    assert pulumi_mocks.resources or "pulumi" not in code, "a Pulumi example registered nothing"


@pytest.mark.parametrize(("where", "code"), blocks("yaml"), ids=location_id)
def test_yaml_program_matches_the_plugin_schema(where, code):
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
    page, table = section("Configuration reference")
    documented: set[str] = set()
    for first_cell in re.findall(r"^\| (`expiry:[^|]*)\|", table, re.M):
        documented |= set(re.findall(r"`(?:expiry:)?(\w+)`", first_cell))
    assert not declared - documented, f"in Pulumi.yaml, not in {page}'s table: {sorted(declared - documented)}"
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


def test_the_plugin_install_line_takes_a_checkout_and_the_text_names_the_release_tag():
    """`pulumi package add` takes a checkout; the text names the declared version, its tag and its CHANGELOG."""
    commands = [
        line.split("#")[0] for _, code in blocks("sh") for line in code.splitlines() if "pulumi package add" in line
    ]
    assert commands and all("@" not in command for command in commands), commands
    _, text = section("From TypeScript, Go, C#, Java or YAML")
    assert f"Release {__version__} is the tag `v{__version__}`" in text
    assert f"\n## {__version__} - " in (ROOT / "CHANGELOG.md").read_text()
