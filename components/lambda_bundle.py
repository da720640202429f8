"""The Lambda archive: `expiry/__init__.py` and `expiry/runtime/` (sources only) and the application's
hook module, zipped so that the same inputs always give the same bytes, so `pulumi up` shows no code
change when none happened. Archives are written to the user's cache directory, never the working one."""

import base64
import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import expiry
import expiry.runtime
from expiry.components import validation as v
from expiry.runtime.jobs.config import HOOK_MODULE

PACKAGE_INIT = Path(expiry.__file__).resolve()
RUNTIME_DIR = Path(expiry.runtime.__file__).resolve().parent
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
SKIPPED_PARTS = {"__pycache__", "tests", "venv", ".venv"}
BUILD_DIR_ENV = "EXPIRY_BUILD_DIR"


def default_build_dir() -> Path:
    """$EXPIRY_BUILD_DIR, else $XDG_CACHE_HOME/expiry, else ~/.cache/expiry. Archives are named by
    their content hash, so one cache serves every project and stack of the user."""
    if override := os.environ.get(BUILD_DIR_ENV):
        return Path(override)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "expiry"


@dataclass(frozen=True)
class Bundle:
    path: Path
    sha256_base64: str
    files: tuple[str, ...]


def _sources(root: Path, prefix: str) -> list[tuple[str, Path]]:
    found = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and path.suffix == ".py" and not SKIPPED_PARTS & set(relative.parts):
            found.append((f"{prefix}/{relative.as_posix()}", path))
    return found


def bundle_files(hooks_path: str | None, component: str) -> list[tuple[str, Path]]:
    """(archive name, source file) pairs: expiry/__init__.py (imports nothing but the standard library
    until a component is asked for), expiry/runtime/ and, when given, the hook module."""
    files = [("expiry/__init__.py", PACKAGE_INIT), *_sources(RUNTIME_DIR, "expiry/runtime")]
    if hooks_path:
        hooks = Path(hooks_path)
        if hooks.is_file() and hooks.suffix == ".py":
            files.append((f"{HOOK_MODULE}.py", hooks))
        elif hooks.is_dir() and (hooks / "__init__.py").is_file():
            files += _sources(hooks, HOOK_MODULE)
        else:
            v.fail(component, "hooks_path", f"must be a .py file or a package directory, got {hooks_path!r}")
    return files


def zip_bytes(files: list[tuple[str, Path]]) -> bytes:
    """A zip of ``files`` with fixed timestamps and permissions, in name order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, path in sorted(files):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def build_bundle(hooks_path: str | None, component: str, build_dir: Path | None = None) -> Bundle:
    """Write the archive, named by its content hash, under ``build_dir`` or :func:`default_build_dir`."""
    files = bundle_files(hooks_path, component)
    data = zip_bytes(files)
    digest = hashlib.sha256(data).digest()
    directory = build_dir or default_build_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"lambda-{digest.hex()[:20]}.zip"
    if not path.exists():
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_bytes(data)
        temporary.replace(path)
    return Bundle(path, base64.b64encode(digest).decode(), tuple(name for name, _ in sorted(files)))
