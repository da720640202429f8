"""`pip install` of the repository into another project: one top-level package, `expiry`, that does
not collide with the project's own `components/` or `runtime.py`, typed, licensed, with the `expiry`
command, and with the dependencies the components import."""

import json
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest
from stack_config import ROOT

import expiry
from expiry.components.provider_host import ExpiryProvider

SOURCES = ("expiry", "components", "runtime")
USER_PROGRAM = """
import sys
import components, runtime  # the project's own, not expiry's
assert components.OWN and runtime.OWN, "the project's own modules were shadowed"

import pulumi

created = []


class Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args):
        created.append(args.typ)
        return [f"{args.name}-id", {**args.inputs, "name": args.inputs.get("name", args.name)}]

    def call(self, args):
        return {}


pulumi.runtime.set_mocks(Mocks(), project="user-project", stack="test", preview=False)
import expiry
from expiry import TtlTable

assert "site-packages" in expiry.__file__, expiry.__file__


@pulumi.runtime.test
def build():
    table = TtlTable("sessions", {"hash_key": "id", "ttl_attribute": "expires_at"})
    return table.table_name.apply(lambda name: print("TABLE", name))


build()
assert "expiry:index:TtlTable" in created and "aws:dynamodb/table:Table" in created, created
print("VERSION", expiry.__version__)

from expiry.components.lambda_bundle import build_bundle

bundle = build_bundle(None, "user-project")  # the Lambda archive goes to the user's cache, not here
print("ARCHIVE", bundle.path)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the sources (so no build/ is left in the checkout)."""
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"
    for name in SOURCES:
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", out, source],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("expiry-*.whl")
    return built


def test_wheel_holds_one_package_and_declares_its_metadata(wheel: Path):
    archive = zipfile.ZipFile(wheel)
    names = set(archive.namelist())
    info = f"expiry-{expiry.__version__}.dist-info"
    assert {name.split("/", 1)[0] for name in names} == {"expiry", info}
    sources = {
        f"expiry/{folder}/{path.relative_to(ROOT / folder).as_posix()}"
        for folder in ("components", "runtime")
        for path in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert sources <= names, sorted(sources - names)  # every subpackage is mapped into the wheel
    assert {"expiry/__init__.py", "expiry/__main__.py", "expiry/py.typed", f"{info}/licenses/LICENSE"} <= names
    assert not any(name.startswith(("expiry/stack/", "expiry/tests/")) for name in names)
    metadata = archive.read(f"{info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "Classifier: Typing :: Typed" in metadata and "Requires-Python: >=3.11" in metadata
    required = sorted(
        line.split(":", 1)[1].split(">")[0].strip()
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    )
    assert required == ["boto3"], required  # an application's Lambda installs the helpers with boto3 alone
    for package in ("pulumi", "pulumi-aws", "psycopg", "tzdata"):
        assert re.search(rf'^Requires-Dist: {package}\b.*extra == "components"', metadata, re.M), package
    assert "expiry = expiry.runtime.cli:main" in archive.read(f"{info}/entry_points.txt").decode()


def venv_with(wheel: Path, tmp_path: Path) -> Path:
    """A new venv's python with expiry from the wheel only; the dependencies come from this venv's
    site-packages (a path, not its .pth files, so not the editable install of this checkout)."""
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, capture_output=True, timeout=300)
    python = env / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--disable-pip-version-check", wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return python


def test_installed_wheel_works_inside_a_project_with_its_own_components_and_runtime(wheel: Path, tmp_path: Path):
    python = venv_with(wheel, tmp_path)
    project = tmp_path / "project"
    (project / "components").mkdir(parents=True)
    (project / "components" / "__init__.py").write_text("OWN = True\n")
    (project / "runtime.py").write_text("OWN = True\n")
    (project / "program.py").write_text(textwrap.dedent(USER_PROGRAM))
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    run = subprocess.run([python, "program.py"], cwd=project, env=clean, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "TABLE " in run.stdout and f"VERSION {expiry.__version__}" in run.stdout
    archive = Path(run.stdout.split("ARCHIVE ", 1)[1].strip())
    assert archive.parent == tmp_path / ".cache" / "expiry"
    assert {name.split("/", 1)[0] for name in zipfile.ZipFile(archive).namelist()} == {"expiry"}
    assert sorted(path.name for path in project.iterdir()) == ["components", "program.py", "runtime.py"]
    cli = subprocess.run([python.parent / "expiry", "--help"], cwd=project, env=clean, capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.startswith("usage: expiry") and "sweep" in cli.stdout
    module = subprocess.run([python, "-m", "expiry", "--help"], cwd=project, env=clean, capture_output=True, text=True)
    assert module.returncode == 0 and module.stdout == cli.stdout


APPLICATION = """
import importlib.abc, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pulumi", "pulumi_aws", "psycopg"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NotInstalled())
from expiry.runtime.dynamodb import leases
from expiry.runtime.dynamodb.ttl import expires_at, is_expired

assert not is_expired({"ttl": expires_at(60, now=0)}, "ttl", now=30) and leases.JOB_CLAIMS.table
try:
    from expiry import TtlTable
except ModuleNotFoundError as error:
    print("REFUSED", error)
"""


def test_an_application_uses_the_helpers_without_pulumi_or_psycopg(wheel: Path, tmp_path: Path):
    """What an application's Lambda installs (the package without extras) imports no pulumi or psycopg;
    a component asked for without them says which extra installs them."""
    python = venv_with(wheel, tmp_path)  # boto3 from this venv; pulumi and psycopg blocked in the program
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run([python, "-c", APPLICATION], cwd=tmp_path, env=clean, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "REFUSED expiry.TtlTable needs pulumi, which the components extra installs" in run.stdout, run.stdout
    assert "pip install 'expiry[components]'" in run.stdout


def test_one_version_everywhere_it_is_stated():
    """The release's version, 0.3.0, as the package, the wheel's metadata (pyproject reads it from the
    package), the plugin's schema and the changelog's newest release state it; its tag is v<version>."""
    assert expiry.__version__ == "0.3.0"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "expiry.__version__"}
    assert json.loads(ExpiryProvider().schema or "{}")["version"] == expiry.__version__
    changelog = (ROOT / "CHANGELOG.md").read_text()
    released = re.findall(r"^## (\d+\.\d+\.\d+)\b", changelog, flags=re.M)
    assert released[0] == expiry.__version__ and len(set(released)) == len(released), released
    newest = changelog.split(f"## {expiry.__version__}", 1)[1].split("\n## ", 1)[0]
    assert f"`v{expiry.__version__}`" in newest
