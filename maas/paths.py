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
CACHE_KEEP = 3
"""How many content-keyed folders of one family (a layer, a function, a served model) the .cache
keeps: the one in use and the last two others (switching a branch back costs no rebuild)."""


def artifact_dir(root: Path, name: str, version: str) -> Path:
    """build/<name>/<version>/: model.onnx, tokenizer.json where relevant, card.json."""
    return root / BUILD_DIR / name / version


def materialize(dest: Path, fill: Callable[[Path], None], keep: int | None = None) -> Path:
    """Create the folder dest atomically: fill(a temporary sibling), then rename it into place.

    If dest already exists it is kept as it is (a cache hit, or a concurrent build that finished
    first), so readers never see a half-written folder.

    With keep, dest is one of a family of content-keyed siblings, `<family>-<key>` (a layer, a
    staged function): each use marks it as used, and only the keep most recently used of the family
    stay, so a cache that gets a new key on every edit does not grow without bound.
    """
    if not dest.is_dir():
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
    if keep is not None:
        _keep_recent(dest, keep)
    return dest


def _keep_recent(dest: Path, keep: int) -> None:
    os.utime(dest)
    family = dest.name.rsplit("-", 1)[0]
    siblings = [p for p in dest.parent.iterdir()
                if p.is_dir() and p != dest and p.name.rsplit("-", 1)[0] == family]
    siblings.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in siblings[keep - 1:]:
        shutil.rmtree(stale, ignore_errors=True)


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
