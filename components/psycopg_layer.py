"""A Lambda layer with psycopg, built from PyPI's manylinux wheels for the function's architecture and
Python, so PostgreSQL handlers run without a compiler or Docker on the deploying machine."""

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from importlib.metadata import version
from pathlib import Path

from expiry.components.lambda_bundle import FIXED_TIME

PLATFORMS = {
    "arm64": ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64"),
    "x86_64": ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64"),
}


def psycopg_version() -> str:
    """The psycopg this project pins (requirements.txt), so the layer matches what the tests ran."""
    return version("psycopg")


def build_psycopg_layer(architecture: str, python: str, build_dir: Path) -> Path:
    """The layer zip (python/ at its root), downloaded once per architecture, Python and version."""
    if architecture not in PLATFORMS:
        raise ValueError(f"architecture: must be one of {', '.join(PLATFORMS)}, got {architecture!r}")
    wanted = psycopg_version()
    key = hashlib.sha256(f"{architecture}/{python}/{wanted}".encode()).hexdigest()[:16]
    path = build_dir / f"psycopg-layer-{architecture}-py{python}-{wanted}-{key}.zip"
    if path.exists():
        return path
    build_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as wheels:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            python,
            "--dest",
            wheels,
        ]
        for platform in PLATFORMS[architecture]:
            command += ["--platform", platform]
        result = subprocess.run(
            [*command, f"psycopg[binary]=={wanted}"], capture_output=True, text=True, check=False, timeout=600
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"could not download psycopg wheels for {architecture}/python{python}: "
                f"{result.stderr.strip().splitlines()[-1:]}"
            )
        members: dict[str, bytes] = {}
        for wheel in sorted(Path(wheels).glob("*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                for name in archive.namelist():
                    if not name.endswith("/"):
                        members[f"python/{name}"] = archive.read(name)
    temporary = path.with_suffix(".tmp")
    with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as layer:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.external_attr = (0o755 if name.endswith(".so") or ".so." in name else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            layer.writestr(info, members[name])
    temporary.replace(path)
    return path
