"""Where things live, relative to the project root (the folder holding models.toml)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from maas_api.constants import DEFAULT_CATALOG_FILE as CATALOG_FILE  # noqa: F401 - re-exported: where the build writes it

BUILD_DIR = "build"


def artifact_dir(root: Path, name: str, version: str) -> Path:
    """build/<name>/<version>/: model.onnx, tokenizer.json where relevant, card.json."""
    return root / BUILD_DIR / name / version


def materialize(dest: Path, fill: Callable[[Path], None]) -> Path:
    """Create the folder dest atomically: fill(a temporary sibling), then rename it into place.

    If dest already exists it is kept as it is (a cache hit, or a concurrent build that finished
    first), so readers never see a half-written folder.
    """
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        fill(work)
        if dest.exists():
            shutil.rmtree(work)
        else:
            os.replace(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return dest


def tree_hash(folder: Path) -> str:
    """sha256 over the relative paths and bytes of a folder's files (no Python caches)."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files below a folder (symlinks not followed)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink())
