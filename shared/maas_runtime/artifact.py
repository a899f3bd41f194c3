"""Model artifacts on disk: the model card, and sha256 verification of every file it lists."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .errors import ArtifactError

CARD_FILE = "card.json"
_CHUNK = 1 << 20


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_card(folder: str | os.PathLike) -> dict:
    path = Path(folder) / CARD_FILE
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"no model card at {path.name} in {Path(folder).name!r}") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"model card {path.name} is unreadable: {exc.__class__.__name__}") from None
    if not isinstance(card, dict) or not isinstance(card.get("files"), dict) or not card["files"]:
        raise ArtifactError("model card lists no files")
    return card


def verify_artifact(folder: str | os.PathLike, card: dict | None = None) -> dict:
    """Check every file the card lists against its size and sha256; return the card.

    A size mismatch is caught before hashing, so a truncated file fails fast.
    """
    folder = Path(folder)
    card = card if card is not None else read_card(folder)
    for name, meta in card["files"].items():
        if "/" in name or "\\" in name or name.startswith("."):
            raise ArtifactError(f"model card names an unsafe file path {name!r}")
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"artifact file {name!r} is missing")
        size = path.stat().st_size
        if size != meta.get("bytes"):
            raise ArtifactError(
                f"artifact file {name!r} is {size} bytes, the card says {meta.get('bytes')}: truncated or replaced"
            )
        if sha256_of(path) != meta.get("sha256"):
            raise ArtifactError(f"artifact file {name!r} does not match its sha256 in the card: refusing to load it")
    return card
