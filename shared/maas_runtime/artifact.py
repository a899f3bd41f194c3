"""Model artifacts on disk: the card's signature where one is required, then sha256 verification of
every file the card lists."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .card import CARD_FILE, SIG_FILE, FileEntry, ModelCard, check_file_name, read_card_bytes
from .errors import ArtifactError
from .signing import TrustedKeys

_CHUNK = 32 << 20
"""Bytes read and hashed per call. Each call gives up the GIL and must win it back, and beside a
thread importing modules (a handler's imports while its model loads) winning it back waits for
that thread's switch interval: hashing the 23 MB MiniLM took 155 ms in 1 MiB chunks there, 54 ms
in 32 MiB ones (21 ms alone)."""


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_entries(folder: str | os.PathLike) -> dict[str, FileEntry]:
    """Size and sha256 of every file in an artifact folder but the card and its signature: what the card lists."""
    return {
        p.name: FileEntry(sha256=sha256_of(p), bytes=p.stat().st_size)
        for p in sorted(Path(folder).iterdir())
        if p.is_file() and p.name not in (CARD_FILE, SIG_FILE)
    }


def read_card(folder: str | os.PathLike, trusted_keys: TrustedKeys | None = None) -> ModelCard:
    """The card of an artifact folder. With `trusted_keys`, card.sig must verify with one of them,
    and it is checked on the card's bytes before anything in them is parsed or believed."""
    data = read_card_bytes(folder)
    if trusted_keys is not None:
        sig = Path(folder) / SIG_FILE
        try:
            sig_bytes = sig.read_bytes()
        except FileNotFoundError:
            sig_bytes = None
        except OSError as exc:
            raise ArtifactError(f"{SIG_FILE} is unreadable: {exc.__class__.__name__}") from None
        trusted_keys.verify(data, sig_bytes)
    return ModelCard.from_bytes(data)


def verify_artifact(
    folder: str | os.PathLike, card: ModelCard | None = None, names=None, trusted_keys: TrustedKeys | None = None
) -> ModelCard:
    """Check the files the card lists against their sizes and sha256; return the card.

    The card is read (and its signature checked, with `trusted_keys`) unless the caller passes the
    one it already read that way. ``names``: the listed files to check, by default all of them. A
    process checks what it opens: one whose graph runs on a remote server never opens the card's
    model file, and need not have it. A size mismatch is caught before hashing, so a truncated file
    fails fast.
    """
    folder = Path(folder)
    card = card if card is not None else read_card(folder, trusted_keys)
    wanted = card.files if names is None else set(names)
    unknown = sorted(set(wanted) - set(card.files))
    if unknown:
        raise ArtifactError(f"artifact file(s) {', '.join(map(repr, unknown))} are not listed in the card")
    for name, meta in card.files.items():
        if name not in wanted:
            continue
        path = _existing_path(folder, name)
        _check_size(name, meta, path.stat().st_size)  # a truncated file fails before hashing
        _check_digest(name, meta, sha256_of(path))
    return card


def read_verified(folder: str | os.PathLike, card: ModelCard, name: str) -> bytes:
    """A file the card lists, read once and checked against its size and sha256: the bytes checked
    are the bytes returned, so nothing can change the file between its check and its use (a second
    read)."""
    meta = card.files.get(name)
    if meta is None:
        raise ArtifactError(f"artifact file {name!r} is not listed in the card")
    data = _existing_path(Path(folder), name).read_bytes()
    _check_size(name, meta, len(data))
    _check_digest(name, meta, hashlib.sha256(data).hexdigest())
    return data


def _existing_path(folder: Path, name: str) -> Path:
    path = folder / check_file_name(name)
    if not path.is_file():
        raise ArtifactError(f"artifact file {name!r} is missing")
    return path


def _check_size(name: str, meta: FileEntry, size: int) -> None:
    if size != meta.bytes:
        raise ArtifactError(f"artifact file {name!r} is {size} bytes, the card says {meta.bytes}: truncated or replaced")


def _check_digest(name: str, meta: FileEntry, digest: str) -> None:
    if digest != meta.sha256:
        raise ArtifactError(f"artifact file {name!r} does not match its sha256 in the card: refusing to load it")
