"""What every task shares: the registry, the request-to-feeds contract, parameter checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..card import ModelCard
from ..errors import ArtifactError, InvalidInput, LimitExceeded

TASKS: dict[str, type["Task"]] = {}


def register(cls: type["Task"]) -> type["Task"]:
    """Class decorator: make a task servable under its `name` (the card's and the manifest's `task`)."""
    TASKS[cls.name] = cls
    return cls


def task_for(name: str) -> type["Task"]:
    try:
        return TASKS[name]
    except KeyError:
        raise ArtifactError(f"model card names an unknown task {name!r}") from None


@dataclass
class Prediction:
    outputs: list
    usage: dict = field(default_factory=dict)


@dataclass
class Prepared:
    """One request's graph feeds, with what `finish` needs beside the graph's outputs."""

    feeds: dict[str, np.ndarray]
    options: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)


class Task:
    """A task's serving half. Subclasses set `name` and `parameters` and implement both steps."""

    name: ClassVar[str]
    parameters: ClassVar[tuple[str, ...]] = ()

    def __init__(self, card: ModelCard, folder: Path, engine):
        self.card = card
        self.engine = engine

    def prepare(self, inputs: list, parameters: dict) -> Prepared:
        raise NotImplementedError

    def finish(self, prepared: Prepared, outputs: list[np.ndarray]) -> Prediction:
        raise NotImplementedError

    def smoke_input(self) -> list:
        """A small valid request batch: health checks and deploy smoke tests run it."""
        raise NotImplementedError

    # --- helpers for subclasses --------------------------------------------------------------------

    def check_parameters(self, parameters: dict) -> None:
        unknown = sorted(set(parameters) - set(self.parameters))
        if unknown:
            allowed = ", ".join(self.parameters) if self.parameters else "none"
            raise InvalidInput(f"unknown parameter(s) {', '.join(unknown)}; this model takes: {allowed}")


def bool_param(parameters: dict, key: str, default: bool) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"parameters.{key} must be true or false")
    return value


class LabelledTask(Task):
    """Classifiers: scores over the card's labels, the top k of them answered."""

    parameters: ClassVar[tuple[str, ...]] = ("top_k",)

    def __init__(self, card, folder, engine):
        super().__init__(card, folder, engine)
        self.labels = card.outputs.labels

    def top_k(self, parameters: dict) -> int:
        top_k = parameters.get("top_k", 1)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= len(self.labels):
            raise InvalidInput(f"parameters.top_k must be an integer from 1 to {len(self.labels)}")
        return top_k

    def ranked(self, probabilities: np.ndarray, top_k: int) -> list:
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
        return [
            [{"label": self.labels[j], "score": float(row[j])} for j in idx]
            for row, idx in zip(probabilities, order)
        ]


# A text longer than this is refused before tokenizing: truncation would drop almost all of it,
# and tokenizing megabytes only to throw them away is a cheap way to tie up a worker.
MAX_TEXT_CHARS = 100_000


class TextTask(Task):
    """Tasks whose inputs are texts: tokenized with the artifact's tokenizer, truncated or refused."""

    def __init__(self, card, folder, engine):
        super().__init__(card, folder, engine)
        from ..tokenization import TextEncoder

        self.max_length = card.inputs.max_sequence_length
        self.encoder = TextEncoder(Path(folder) / card.inputs.tokenizer, self.max_length)

    def encode(self, inputs: list, parameters: dict) -> Prepared:
        """Feeds for the texts, or LimitExceeded when one is too long and truncation is off."""
        for i, text in enumerate(inputs):
            if not isinstance(text, str):
                raise InvalidInput(f"inputs[{i}] must be a string, got {type(text).__name__}")
            if len(text) > MAX_TEXT_CHARS:
                raise LimitExceeded(f"inputs[{i}] has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
        truncate = bool_param(parameters, "truncate", True)
        feeds, truncated = self.encoder.encode(inputs)
        if truncated and not truncate:
            raise LimitExceeded(
                f"{truncated} input(s) are longer than {self.max_length} tokens and parameters.truncate is false"
            )
        usage = {
            "batch_size": len(inputs),
            "input_tokens": int(feeds["attention_mask"].sum()),
            "truncated_inputs": truncated,
        }
        return Prepared(feeds=feeds, usage=usage)

    def smoke_input(self) -> list:
        return ["The quick brown fox jumps over the lazy dog."]
