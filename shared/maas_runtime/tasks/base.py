"""What every task shares: the registry, the request-to-feeds contract, parameter checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..card import ModelCard
from ..errors import ArtifactError, InvalidInput, LimitExceeded, NotSupported, quoted
from ..explain import Game
from .processing import BATCHING_POLICIES, DEFAULT_BATCHING, softmax

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
    parts: list[tuple[np.ndarray, "Prepared"]] = field(default_factory=list)
    """Sub-batches to run instead of `feeds` in one go: each part's rows of the request (its
    answers' places) and its own feeds. Empty: the request runs as one batch."""


class Task:
    """A task's serving half. Subclasses set `name` and `parameters` and implement both steps."""

    name: ClassVar[str]
    parameters: ClassVar[tuple[str, ...]] = ()
    explain_parameters: ClassVar[tuple[str, ...]] = ()
    """An explanation's own parameters, besides maas_runtime.explain.COMMON_PARAMETERS."""

    def __init__(self, card: ModelCard, folder: Path, engine):
        self.card = card
        self.engine = engine

    def prepare(self, inputs: list, parameters: dict) -> Prepared:
        raise NotImplementedError

    def finish(self, prepared: Prepared, outputs: list[np.ndarray]) -> Prediction:
        raise NotImplementedError

    def run(self, prepared: Prepared) -> Prediction:
        """The graph run on the prepared request and finished: as one batch, or part by part
        with each part's answers put back in the request's order."""
        if not prepared.parts:
            return self.finish(prepared, self.engine.run(prepared.feeds))
        outputs: list = [None] * prepared.usage.get("batch_size", sum(len(rows) for rows, _ in prepared.parts))
        for rows, part in prepared.parts:
            for row, output in zip(rows.tolist(), self.finish(part, self.engine.run(part.feeds)).outputs):
                outputs[row] = output
        return Prediction(outputs=outputs, usage=prepared.usage)

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

    def explain_game(self, item: Any, parameters: dict, where: str) -> Game:
        """One input's explanation as Kernel SHAP plays it: its players, their background, the
        output explained, computed through this task's own pre-processing (`where` names the
        input in error messages)."""
        raise NotSupported(f"{self.name} models serve no explanations")

    explain_required: ClassVar[tuple[str, ...]] = ()
    """Explanation parameters a request must give (an embedding's compare_to)."""

    @classmethod
    def explain_parameters_schema(cls, card: ModelCard) -> dict:
        """JSON Schema of an explanation's parameters: the common ones and the task's own."""
        from ..explain import COMMON_PARAMETERS

        schema = {
            "type": "object",
            "properties": {name: EXPLAIN_PARAMETER_SCHEMAS[name](card) for name in COMMON_PARAMETERS + cls.explain_parameters},
            "additionalProperties": False,
        }
        if cls.explain_required:
            schema["required"] = list(cls.explain_required)
        return schema

    @classmethod
    def attributions_schema(cls, card: ModelCard) -> dict:
        """JSON Schema of one explanation's `attributions`."""
        raise NotImplementedError

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
    explain_parameters: ClassVar[tuple[str, ...]] = ("target", "output")
    EXPLAINED_OUTPUTS: ClassVar[tuple[str, ...]] = ("logit", "probability")

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

    def class_game(self, x, background, weights, logits: Callable[[np.ndarray], np.ndarray], parameters: dict,
                   attributions, usage=None, row_tokens: int = 0) -> Game:
        """The explanation of one class's score: `parameters.target` (a label; default the top
        class), as its logit (default: nearly additive in the inputs, so the estimate converges
        with far fewer coalitions) or its probability."""
        output = parameters.get("output", self.card.explain.output)
        if output not in self.EXPLAINED_OUTPUTS:
            raise InvalidInput(f"parameters.output must be one of {', '.join(self.EXPLAINED_OUTPUTS)}")
        scores = np.asarray(logits(x[None, :]), np.float64)[0]
        target = parameters.get("target")
        if "target" not in parameters:
            index = int(np.argmax(scores))
        elif isinstance(target, str) and target in self.labels:
            index = self.labels.index(target)
        else:
            shown = ", ".join(self.labels) if len(self.labels) <= 20 else ", ".join(self.labels[:20]) + ", ..."
            raise InvalidInput(f"parameters.target must be one of the model's labels ({shown})")

        def f(rows: np.ndarray) -> np.ndarray:
            out = np.asarray(logits(rows), np.float64)
            return out[:, index] if output == "logit" else softmax(out)[:, index]

        answer = {
            "label": self.labels[index],
            "logit": float(scores[index]),
            "probability": float(softmax(scores[None, :])[0, index]),
        }
        return Game(x=x, background=background, weights=weights, f=f, attributions=attributions,
                    output=output, answer=answer, usage=usage or {}, row_tokens=row_tokens)


# Texts are refused before tokenizing when longer than these: truncation would drop almost all
# of them, and tokenizing megabytes only to throw them away is a cheap way to tie up a worker
# (tokenizing costs time in proportion to characters, whatever max_sequence_length keeps).
MAX_TEXT_CHARS = 100_000
"""Characters in one input."""
MAX_BATCH_CHARS = 1_000_000
"""Characters in one request's inputs together."""


def check_texts(inputs: list, names: list[str] | None = None) -> None:
    """Refuse what the tokenizer cannot take, before any tokenizing: a non-string, a text over the
    length limits, or one that is not valid Unicode (JSON can carry an unpaired surrogate such as
    "\\ud800", which no UTF-8 tokenizer can encode). `names` name the texts in messages
    (default: inputs[i])."""
    names = names or [f"inputs[{i}]" for i in range(len(inputs))]
    total = 0
    for name, text in zip(names, inputs):
        if not isinstance(text, str):
            raise InvalidInput(f"{name} must be a string, got {type(text).__name__}")
        if len(text) > MAX_TEXT_CHARS:
            raise LimitExceeded(f"{name} has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
        total += len(text)
        if total > MAX_BATCH_CHARS:
            raise LimitExceeded(f"inputs hold over {MAX_BATCH_CHARS} characters together; send fewer or shorter texts")
    for name, text in zip(names, inputs):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInput(
                f"{name} is not valid Unicode text: an unpaired surrogate "
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

EXPLAIN_PARAMETER_SCHEMAS = {
    "coalitions": lambda card: {
        "oneOf": [{"const": "auto"}, {"type": "integer", "minimum": 1, "maximum": card.explain.max_coalitions}],
        "default": "auto",
        "description": 'Coalitions sampled: "auto" (2M + 2048 for M players, within the limits) or a number '
                       "(raised to the 2M + 2 the solve needs)",
    },
    "seed": lambda card: {"type": "integer", "minimum": 0, "maximum": 2**32 - 1, "default": 0,
                          "description": "The sampler's seed: the same request gets the same answer"},
    "target": lambda card: {"enum": list(card.outputs.labels), "description": "The label explained (default: the top class)"},
    "output": lambda card: {"enum": list(LabelledTask.EXPLAINED_OUTPUTS), "default": card.explain.output,
                            "description": "The class's logit (nearly additive: converges faster) or its probability"},
    "compare_to": lambda card: {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS,
                                "description": "The text whose cosine similarity to the input is explained"},
    "truncate": PARAMETER_SCHEMAS["truncate"],
}
"""Every explanation parameter's JSON Schema for a card: tasks name theirs in `Task.explain_parameters`."""


# Coalitions of a text are run through the model this many sequences at a time: one sequence per
# coalition, so the batch's memory stays bounded whatever the budget.
WORD_BATCH = 64


@dataclass
class Words:
    """A text's words as the players of an explanation: each word's token positions and characters."""

    text: str
    feeds: dict[str, np.ndarray]
    """The whole text's feeds, (1, L), special tokens included."""
    tokens: list[np.ndarray]
    """Per word, the positions of its tokens."""
    spans: list[tuple[int, int]]
    """Per word, its characters in the text: text[start:end]."""

    def present(self, z: np.ndarray) -> dict[str, np.ndarray]:
        """Feeds of one sequence per coalition row of `z` (n, M): an absent word's tokens are
        masked out of attention. A removed word then leaves no trace (a [MASK] token would still
        say "a word was here", and not every tokenizer has one), the sequence keeps its length and
        positions, and with mean pooling the word also leaves the pooled vector."""
        z = np.asarray(z) > 0.5
        mask = np.repeat(self.feeds["attention_mask"], len(z), axis=0)
        for j, positions in enumerate(self.tokens):
            mask[:, positions] = z[:, j : j + 1]
        feeds = {k: np.repeat(v, len(z), axis=0) for k, v in self.feeds.items()}
        feeds["attention_mask"] = mask
        return feeds

    @property
    def length(self) -> int:
        """Tokens in each sequence a coalition runs through the model."""
        return int(self.feeds["input_ids"].shape[1])

    def attributions(self, phi: np.ndarray) -> list[dict]:
        return [
            {"word": self.text[start:end], "start": start, "end": end, "attribution": float(value)}
            for (start, end), value in zip(self.spans, phi)
        ]


class TextTask(Task):
    """Tasks whose inputs are texts: tokenized with the artifact's tokenizer, truncated or refused.

    A request of several texts runs length-aware where the graph runs in this process: sorted by
    token length and cut into sub-batches each padded to its own longest (`batching`, see
    processing.min_cost_runs). A remote engine gets the request whole: its server batches
    itself, and every part would be another network round trip."""

    def __init__(self, card, folder, engine):
        super().__init__(card, folder, engine)
        from ..tokenization import TextEncoder

        self.max_length = card.inputs.max_sequence_length
        self.encoder = TextEncoder(Path(folder) / card.inputs.tokenizer, self.max_length, card.inputs.pad_to_multiple_of)
        self.batching = BATCHING_POLICIES[DEFAULT_BATCHING] if getattr(engine, "local", False) else None

    def encode(self, inputs: list, parameters: dict) -> Prepared:
        """Feeds for the texts, or LimitExceeded when one is too long and truncation is off."""
        check_texts(inputs)
        truncate = bool_param(parameters, "truncate", True)
        feeds, truncated = self.encoder.encode(inputs)
        if truncated and not truncate:
            raise LimitExceeded(
                f"{truncated} input(s) are longer than {self.max_length} tokens and parameters.truncate is false"
            )
        lengths = feeds["attention_mask"].sum(axis=1)
        usage = {
            "batch_size": len(inputs),
            "input_tokens": int(lengths.sum()),
            "truncated_inputs": truncated,
        }
        prepared = Prepared(feeds=feeds, usage=usage)
        if self.batching is not None and len(inputs) > 1:
            runs = self.batching(lengths)
            if len(runs) > 1:
                # Padding is on the right (TextEncoder), so a part's feeds are its rows cut to
                # its longest (as the encoder pads); all parts share the request's options, filled
                # in after this.
                prepared.parts = [
                    (rows, Prepared(feeds={k: v[rows, : self.encoder.width(int(lengths[rows].max()))] for k, v in feeds.items()},
                                    options=prepared.options))
                    for rows in runs
                ]
        return prepared

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

    @classmethod
    def attributions_schema(cls, card: ModelCard) -> dict:
        word = {
            "type": "object",
            "properties": {"word": {"type": "string"}, "start": {"type": "integer", "minimum": 0},
                           "end": {"type": "integer", "minimum": 0}, "attribution": {"type": "number"}},
            "required": ["word", "start", "end", "attribution"],
            "additionalProperties": False,
        }
        return {"type": "array", "items": word, "description": "One per word of the input, in order: input[start:end]"}

    def words(self, text, parameters: dict, where: str) -> Words:
        """The players of a text's explanation: its words (special tokens always stay)."""
        check_texts([text], [where])
        encoding = self.encoder.tokenizer.encode(text)
        if encoding.overflowing and not bool_param(parameters, "truncate", True):
            raise LimitExceeded(f"{where} is longer than {self.max_length} tokens and parameters.truncate is false")
        feeds = {
            "input_ids": np.array([encoding.ids], dtype=np.int64),
            "attention_mask": np.array([encoding.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([encoding.type_ids], dtype=np.int64),
        }
        positions: dict[int, list[int]] = {}
        for position, word in enumerate(encoding.word_ids):
            if word is not None:
                positions.setdefault(word, []).append(position)
        tokens = [np.asarray(p) for p in positions.values()]
        spans = [(encoding.offsets[p[0]][0], encoding.offsets[p[-1]][1]) for p in positions.values()]
        return Words(text, feeds, tokens, spans)

    def run_words(self, words: Words, z: np.ndarray) -> list[np.ndarray]:
        """The graph's first output for each coalition of `z`, as (feeds, output) chunks."""
        chunks = []
        for start in range(0, len(z), WORD_BATCH):
            feeds = words.present(z[start : start + WORD_BATCH])
            chunks.append((feeds, self.engine.run(feeds)[0]))
        return chunks
