"""Model artifacts on disk: sha256 verification of every file the model card lists."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .card import CARD_FILE, FileEntry, ModelCard, check_file_name
from .errors import ArtifactError

_CHUNK = 1 << 20


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_entries(folder: str | os.PathLike) -> dict[str, FileEntry]:
    """Size and sha256 of every file in an artifact folder but the card: what the card lists."""
    return {
        p.name: FileEntry(sha256=sha256_of(p), bytes=p.stat().st_size)
        for p in sorted(Path(folder).iterdir())
        if p.is_file() and p.name != CARD_FILE
    }


def read_card(folder: str | os.PathLike) -> ModelCard:
    return ModelCard.read(folder)


def verify_artifact(folder: str | os.PathLike, card: ModelCard | None = None, names=None) -> ModelCard:
    """Check the files the card lists against their sizes and sha256; return the card.

    ``names``: the listed files to check, by default all of them. A process checks what it opens:
    one whose graph runs on a remote server never opens the card's model file, and need not have it.
    A size mismatch is caught before hashing, so a truncated file fails fast.
    """
    folder = Path(folder)
    card = card if card is not None else read_card(folder)
    wanted = card.files if names is None else set(names)
    unknown = sorted(set(wanted) - set(card.files))
    if unknown:
        raise ArtifactError(f"artifact file(s) {', '.join(map(repr, unknown))} are not listed in the card")
    for name, meta in card.files.items():
        if name not in wanted:
            continue
        path = folder / check_file_name(name)
        if not path.is_file():
            raise ArtifactError(f"artifact file {name!r} is missing")
        size = path.stat().st_size
        if size != meta.bytes:
            raise ArtifactError(
                f"artifact file {name!r} is {size} bytes, the card says {meta.bytes}: truncated or replaced"
            )
        if sha256_of(path) != meta.sha256:
            raise ArtifactError(f"artifact file {name!r} does not match its sha256 in the card: refusing to load it")
    return card
