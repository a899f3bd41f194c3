"""The model catalog every function carries: GET /models and GET /models/{name} answer from it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import NotFound, Unavailable, short
from .routes import INVOKE, route

# Card sections a client has no use for and that may name build-machine details.
_PRIVATE_CARD_KEYS = ("build",)


class Catalog:
    def __init__(self, entries: list[dict]):
        self._entries = {e["name"]: e for e in entries if isinstance(e, dict) and "name" in e}

    @classmethod
    def load(cls, path: str | os.PathLike | None) -> "Catalog":
        if not path:
            raise Unavailable("this function was deployed without a model catalog", code="catalog_unavailable")
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(list(data["models"]))
        except (OSError, ValueError, KeyError, TypeError):
            raise Unavailable("the model catalog is missing or unreadable", code="catalog_unavailable") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, name: str) -> dict | None:
        return self._entries.get(name)

    def summaries(self) -> list[dict]:
        return [
            {
                "name": e["name"],
                "version": e.get("version", ""),
                "task": e.get("task", ""),
                "target": e.get("target", ""),
                "description": e.get("description", ""),
                "invoke_path": route(INVOKE).render(name=e["name"]),
            }
            for e in (self._entries[n] for n in self.names())
        ]

    def card(self, name: str) -> dict:
        """The model's public card: version, task, input/output schema, sha256s, parity, target."""
        entry = self._entries.get(name)
        if entry is None:
            raise NotFound(f"unknown model {short(name)}; known models: {', '.join(self.names()) or 'none'}")
        card = dict(entry.get("card") or {})
        for key in _PRIVATE_CARD_KEYS:
            card.pop(key, None)
        for key in ("name", "version", "task", "target", "description"):
            card.setdefault(key, entry.get(key))
        return card
