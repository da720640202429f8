"""The layout in docs/architecture.md is the tree: every path it names exists, and every top-level
folder and every package under runtime/ is named."""

import re

from docs_pages import ROOT

TEXT = (ROOT / "docs" / "architecture.md").read_text()
(LAYOUT,) = re.findall(r"^```\n(Pulumi\.yaml.*?)^```", TEXT, re.S | re.M)


def named() -> dict[str, str]:
    """Each named path, with its parent folder for indented lines (`  kinds/` under `runtime/`)."""
    paths: dict[str, str] = {}
    parent = ""
    for line in LAYOUT.splitlines():
        entry = line.split("  ")[0] if not line.startswith(" ") else line.strip().split(" ")[0]
        if not entry or not re.fullmatch(r"[\w.,/ -]+", entry) or line.startswith("    "):
            continue
        for name in entry.split(", "):
            if line.startswith("  "):
                paths[f"{parent}{name}"] = line
            else:
                parent = name if name.endswith("/") else parent
                paths[name] = line
    return paths


def test_every_path_the_layout_names_exists():
    paths = named()
    assert "runtime/kinds/" in paths and "Pulumi.prod.yaml" in paths
    missing = [path for path in paths if not (ROOT / path).exists()]
    assert not missing, missing


def test_every_top_level_folder_and_runtime_package_is_named():
    paths = named()
    ignored = {line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()}
    tracked = {
        p.name + "/"
        for p in ROOT.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and p.name + "/" not in ignored
        and not p.name.endswith(".egg-info")
    }
    assert tracked <= set(paths), sorted(tracked - set(paths))
    packages = {f"runtime/{p.name}/" for p in (ROOT / "runtime").iterdir() if (p / "__init__.py").is_file()}
    assert packages <= set(paths), sorted(packages - set(paths))
