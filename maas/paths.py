"""Where things live, relative to the project root (the folder holding models.toml)."""

from __future__ import annotations

from pathlib import Path

BUILD_DIR = "build"


def artifact_dir(root: Path, name: str, version: str) -> Path:
    """build/<name>/<version>/: model.onnx, tokenizer.json where relevant, card.json."""
    return root / BUILD_DIR / name / version
