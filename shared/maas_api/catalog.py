"""The model catalog every function carries: GET /models and GET /models/{name} answer from it.

build/catalog.json holds, per built version of each model, its card (maas_runtime.card.ModelCard)
with the deployment facts that are not part of the artifact: the manifest's target and description,
and whether it is the model's live version (a catalog without `live` has one version per model).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from maas_runtime.card import ModelCard
from maas_runtime.errors import ArtifactError

from .errors import NotFound, Unavailable, short
from .routes import INVOKE, INVOKE_VERSION, route


class CatalogEntry:
    def __init__(self, data: dict):
        self.card = ModelCard.from_dict(data["card"])
        self.target = str(data.get("target", ""))
        self.description = str(data.get("description", ""))
        self.live = bool(data.get("live", True))

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> str:
        return self.card.version

    def summary(self) -> dict:
        """What GET /models/{name} says of this version beside the live card: enough to choose one."""
        card = self.card.public()
        return {
            "version": self.version,
            "live": self.live,
            "parity": {k: card["parity"][k] for k in ("metric", "figures", "threshold", "passed")},
            "sizes": card["sizes"],
            "pruning_sparsity": (card["optimization"].get("pruning") or {}).get("achieved"),
            "quantization": (card["optimization"].get("quantization") or {}).get("chosen"),
            "invoke_path": route(INVOKE_VERSION).render(name=self.name, version=self.version),
        }

    @property
    def task_class(self):
        """The runtime's task for this model (imported here: only the OpenAPI document needs it)."""
        from maas_runtime.tasks import task_for

        return task_for(self.card.task)


class Catalog:
    def __init__(self, entries: list[CatalogEntry]):
        self._entries = {e.name: e for e in entries if e.live}
        self._versions: dict[str, dict[str, CatalogEntry]] = {}
        for e in entries:
            self._versions.setdefault(e.name, {})[e.version] = e

    @classmethod
    def load(cls, path: str | os.PathLike | None) -> "Catalog":
        if not path:
            raise Unavailable("this function was deployed without a model catalog", code="catalog_unavailable")
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls([CatalogEntry(e) for e in data["models"]])
        except (OSError, ValueError, KeyError, TypeError, ArtifactError):
            raise Unavailable("the model catalog is missing or unreadable", code="catalog_unavailable") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, name: str) -> CatalogEntry | None:
        return self._entries.get(name)

    def versions(self, name: str) -> list[str]:
        """The model's kept versions, oldest first."""
        return sorted(self._versions.get(name, {}), key=lambda v: tuple(int(p) for p in v.split(".")))

    def version_entry(self, name: str, version: str) -> CatalogEntry:
        """The entry of one kept version; 404 naming the versions kept when there is no such one."""
        self.card(name)  # 404 for an unknown model
        entry = self._versions[name].get(version)
        if entry is None:
            raise NotFound(f"model {name!r} has no version {short(version)}; kept versions: {', '.join(self.versions(name))}")
        return entry

    def summaries(self) -> list[dict]:
        return [
            {
                "name": e.name,
                "version": e.card.version,
                "versions": self.versions(e.name),
                "task": e.card.task,
                "target": e.target,
                "description": e.description,
                "invoke_path": route(INVOKE).render(name=e.name),
            }
            for e in (self._entries[n] for n in self.names())
        ]

    CARD_EXTRAS = ("target", "description", "versions", "live")
    """What GET /models/{name}[/versions/{version}] adds to the model card's own fields."""

    def card(self, name: str) -> dict:
        """The model's public card: version, task, input/output schema, sha256s, parity, target."""
        entry = self._entries.get(name)
        if entry is None:
            raise NotFound(f"unknown model {short(name)}; known models: {', '.join(self.names()) or 'none'}")
        return {**entry.card.public(), "target": entry.target, "description": entry.description,
                "versions": [self._versions[name][v].summary() for v in self.versions(name)]}

    def version_card(self, name: str, version: str) -> dict:
        """One kept version's public card."""
        entry = self.version_entry(name, version)
        return {**entry.card.public(), "target": entry.target, "description": entry.description, "live": entry.live}
