"""What `pip install` brings: the package alone (an application's Lambda using the TTL and lease
helpers) against the `components` extra (a Pulumi program). Builds the wheel from this checkout,
installs it with each requirement into an empty folder (`pip install --target`, from PyPI) and counts
the distributions and their size on disk. Prints a Markdown table. Figures, not a test: they depend
on PyPI's newest versions that satisfy pyproject.toml on the day, the platform's wheels and Python.

    venv/bin/python benchmarks/install_footprint.py
"""

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]


def size_mb(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1e6


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        subprocess.run([*PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", out, ROOT], check=True)
        (wheel,) = out.glob("expiry-*.whl")
        print("| install | distributions | size on disk (MB) | pulumi | psycopg |")
        print("|---|---:|---:|---|---|")
        for label, requirement in (
            ("`expiry` (application helpers)", str(wheel)),
            ("`expiry[components]`", f"expiry[components] @ {wheel.as_uri()}"),
        ):
            target = out / label.strip("`").split("`")[0].replace("[", "-").replace("]", "")
            subprocess.run([*PIP, "install", "--target", target, requirement], check=True)
            names = sorted(path.name.split("-")[0].lower() for path in target.glob("*.dist-info"))
            print(
                f"| {label} | {len(names)} | {size_mb(target):.0f} | {'yes' if 'pulumi' in names else 'no'} "
                f"| {'yes' if 'psycopg' in names else 'no'} |"
            )


if __name__ == "__main__":
    main()
