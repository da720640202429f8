"""`pip install git+<repo>` from another project: the wheel holds components and runtime, and its
dependencies are the ones the components import."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from stack_config import ROOT


def test_wheel_holds_the_packages_and_declares_their_dependencies(tmp_path: Path):
    # Built from a copy of the sources, so no build/ directory is left in the checkout.
    source = tmp_path / "source"
    for name in ("components", "runtime"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("expiry-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in (
        "components/__init__.py",
        "components/ttl_table.py",
        "components/scheduled_sweeper.py",
        "components/pg_cron_cleanup.py",
        "components/cleanup_alarms.py",
        "runtime/__init__.py",
        "runtime/ttl.py",
        "runtime/handlers/sweep.py",
        "runtime/handlers/pg_provision.py",
        "runtime/__main__.py",
    ):
        assert module in names, module
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)
    metadata = next(name for name in names if name.endswith("METADATA"))
    requires = [
        line
        for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    declared = " ".join(requires)
    for package in ("pulumi", "pulumi-aws", "boto3", "psycopg", "tzdata"):
        assert f"Requires-Dist: {package}" in declared, package
