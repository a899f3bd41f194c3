"""Where things live, relative to the project root (the folder holding models.toml)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

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
