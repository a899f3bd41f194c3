"""What every task shares: the registry, the request-to-feeds contract, parameter checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..card import ModelCard
from ..errors import ArtifactError, InvalidInput, LimitExceeded, quoted

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
        return self.example_inputs(self.card)

    # --- the request and answer as JSON Schema, from the card alone ------------------------------
    # The API's OpenAPI document describes each model with these; they state what the checks in
    # prepare() accept, so the two are written side by side, per task.

    @classmethod
    def example_inputs(cls, card: ModelCard) -> list:
        """A small valid batch for a model with this card."""
        raise NotImplementedError

    @classmethod
    def input_schema(cls, card: ModelCard) -> dict:
        """JSON Schema of one input."""
        raise NotImplementedError

    @classmethod
    def output_schema(cls, card: ModelCard) -> dict:
        """JSON Schema of one output."""
        raise NotImplementedError

    @classmethod
    def parameters_schema(cls, card: ModelCard) -> dict:
        """JSON Schema of the parameters object: exactly the task's parameters, each optional."""
        return {
            "type": "object",
            "properties": {name: PARAMETER_SCHEMAS[name](card) for name in cls.parameters},
            "additionalProperties": False,
        }

    # --- helpers for subclasses --------------------------------------------------------------------

    def check_parameters(self, parameters: dict) -> None:
        unknown = sorted(set(parameters) - set(self.parameters), key=str)
        if unknown:
            allowed = ", ".join(self.parameters) if self.parameters else "none"
            named = ", ".join(quoted(name, 40) for name in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise InvalidInput(f"unknown parameter(s) {named}; this model takes: {allowed}")


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
        if isinstance(top_k, float) and top_k.is_integer():
            top_k = int(top_k)  # 3.0 is the integer 3 in JSON (and in JSON Schema)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= len(self.labels):
            raise InvalidInput(f"parameters.top_k must be an integer from 1 to {len(self.labels)}")
        return top_k

    @classmethod
    def output_schema(cls, card: ModelCard) -> dict:
        labels = list(card.outputs.labels)
        ranked = {
            "type": "object",
            "properties": {"label": {"enum": labels}, "score": {"type": "number", "minimum": 0, "maximum": 1}},
            "required": ["label", "score"],
            "additionalProperties": False,
        }
        return {"type": "array", "items": ranked, "minItems": 1, "maxItems": len(labels),
                "description": "The top_k labels, most probable first"}

    def ranked(self, probabilities: np.ndarray, top_k: int) -> list:
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
        return [
            [{"label": self.labels[j], "score": float(row[j])} for j in idx]
            for row, idx in zip(probabilities, order)
        ]


# Texts are refused before tokenizing when longer than these: truncation would drop almost all
# of them, and tokenizing megabytes only to throw them away is a cheap way to tie up a worker
# (tokenizing costs time in proportion to characters, whatever max_sequence_length keeps).
MAX_TEXT_CHARS = 100_000
"""Characters in one input."""
MAX_BATCH_CHARS = 1_000_000
"""Characters in one request's inputs together."""


def check_texts(inputs: list) -> None:
    """Refuse what the tokenizer cannot take, before any tokenizing: a non-string, a text over the
    length limits, or one that is not valid Unicode (JSON can carry an unpaired surrogate such as
    "\\ud800", which no UTF-8 tokenizer can encode)."""
    total = 0
    for i, text in enumerate(inputs):
        if not isinstance(text, str):
            raise InvalidInput(f"inputs[{i}] must be a string, got {type(text).__name__}")
        if len(text) > MAX_TEXT_CHARS:
            raise LimitExceeded(f"inputs[{i}] has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
        total += len(text)
        if total > MAX_BATCH_CHARS:
            raise LimitExceeded(f"inputs hold over {MAX_BATCH_CHARS} characters together; send fewer or shorter texts")
    for i, text in enumerate(inputs):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInput(
                f"inputs[{i}] is not valid Unicode text: an unpaired surrogate "
                f"{quoted(text[exc.start])} at character {exc.start}"
            ) from None


PARAMETER_SCHEMAS = {
    "normalize": lambda card: {"type": "boolean", "default": card.outputs.normalize,
                               "description": "L2-normalize each embedding"},
    "truncate": lambda card: {"type": "boolean", "default": True,
                              "description": "Truncate inputs longer than the model's max_sequence_length tokens; "
                                             "false refuses them (limit_exceeded)"},
    "top_k": lambda card: {"type": "integer", "minimum": 1, "maximum": len(card.outputs.labels), "default": 1,
                           "description": "How many of the most probable labels to answer"},
}
"""Every task parameter's JSON Schema for a card: tasks name theirs in `Task.parameters`."""


class TextTask(Task):
    """Tasks whose inputs are texts: tokenized with the artifact's tokenizer, truncated or refused."""

    def __init__(self, card, folder, engine):
        super().__init__(card, folder, engine)
        from ..tokenization import TextEncoder

        self.max_length = card.inputs.max_sequence_length
        self.encoder = TextEncoder(Path(folder) / card.inputs.tokenizer, self.max_length)

    def encode(self, inputs: list, parameters: dict) -> Prepared:
        """Feeds for the texts, or LimitExceeded when one is too long and truncation is off."""
        check_texts(inputs)
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

    @classmethod
    def example_inputs(cls, card: ModelCard) -> list:
        return ["The quick brown fox jumps over the lazy dog."]

    @classmethod
    def input_schema(cls, card: ModelCard) -> dict:
        return {
            "type": "string",
            "maxLength": MAX_TEXT_CHARS,
            "description": f"Text; longer than {card.inputs.max_sequence_length} tokens is truncated "
                           f"(parameters.truncate). All inputs together: at most {MAX_BATCH_CHARS} characters",
        }
