"""Per-task pre- and post-processing around the ONNX graph.

Each task turns validated request inputs into graph feeds and graph outputs into
JSON-ready results. The graph itself stays a plain encoder or classifier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidInput, LimitExceeded
from .tokenization import TextEncoder

# A text longer than this is refused before tokenizing: truncation would drop almost all
# of it, and tokenizing megabytes only to throw them away is a cheap way to tie up a worker.
MAX_TEXT_CHARS = 100_000


@dataclass
class Prediction:
    outputs: list
    usage: dict = field(default_factory=dict)


def _bool_param(parameters: dict, key: str, default: bool) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"parameters.{key} must be true or false")
    return value


def _check_parameters(parameters: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(parameters) - set(allowed))
    if unknown:
        allowed_text = ", ".join(allowed) if allowed else "none"
        raise InvalidInput(f"unknown parameter(s) {', '.join(unknown)}; this model takes: {allowed_text}")


def _texts(inputs: list) -> list[str]:
    for i, text in enumerate(inputs):
        if not isinstance(text, str):
            raise InvalidInput(f"inputs[{i}] must be a string, got {type(text).__name__}")
        if len(text) > MAX_TEXT_CHARS:
            raise LimitExceeded(f"inputs[{i}] has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    return inputs


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the token vectors, ignoring padding (as sentence-transformers pools)."""
    weights = mask[..., None].astype(hidden.dtype)
    return (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)


def embedding_json_values(vectors: np.ndarray) -> list:
    """Vectors as Python floats rounded to 9 decimal places.

    A float32 read back as a double prints with up to 17 digits; rounded, it prints with at
    most 9 after the point: the JSON is ~40% smaller and encodes ~40% faster, and the change
    (at most 5e-10 per component) is below float32's own resolution for any component above 0.01.
    """
    return np.round(vectors.astype(np.float64), 9).tolist()


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.clip(norms, 1e-12, None)


class Task:
    parameters: tuple[str, ...] = ()

    def __init__(self, card: dict, folder, session):
        self.card = card
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]

    def run(self, inputs: list, parameters: dict) -> Prediction:
        raise NotImplementedError


class EmbeddingTask(Task):
    parameters = ("normalize", "truncate")

    def __init__(self, card, folder, session):
        super().__init__(card, folder, session)
        self.max_length = card["inputs"]["max_sequence_length"]
        self.encoder = TextEncoder(folder / card["inputs"]["tokenizer"], self.max_length)
        self.output = card["outputs"]

    def run(self, inputs, parameters):
        _check_parameters(parameters, self.parameters)
        normalize = _bool_param(parameters, "normalize", self.output.get("normalize", True))
        truncate = _bool_param(parameters, "truncate", True)
        feeds, truncated = self.encoder.encode(_texts(inputs))
        if truncated and not truncate:
            raise LimitExceeded(
                f"{truncated} input(s) are longer than {self.max_length} tokens and parameters.truncate is false"
            )
        mask = feeds["attention_mask"]
        hidden = self.session.run(None, {k: v for k, v in feeds.items() if k in self.input_names})[0]
        vectors = mean_pool(hidden, mask)
        if normalize:
            vectors = l2_normalize(vectors)
        return Prediction(
            outputs=embedding_json_values(vectors),
            usage={"batch_size": len(inputs), "input_tokens": int(mask.sum()), "truncated_inputs": truncated},
        )


class _Classifier(Task):
    parameters = ("top_k",)

    def __init__(self, card, folder, session):
        super().__init__(card, folder, session)
        self.labels = card["outputs"]["labels"]

    def _top_k(self, parameters: dict) -> int:
        top_k = parameters.get("top_k", 1)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= len(self.labels):
            raise InvalidInput(f"parameters.top_k must be an integer from 1 to {len(self.labels)}")
        return top_k

    def _ranked(self, probabilities: np.ndarray, top_k: int) -> list:
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
        return [
            [{"label": self.labels[j], "score": float(row[j])} for j in idx]
            for row, idx in zip(probabilities, order)
        ]


class TextClassificationTask(_Classifier):
    parameters = ("top_k", "truncate")

    def __init__(self, card, folder, session):
        super().__init__(card, folder, session)
        self.max_length = card["inputs"]["max_sequence_length"]
        self.encoder = TextEncoder(folder / card["inputs"]["tokenizer"], self.max_length)

    def run(self, inputs, parameters):
        _check_parameters(parameters, self.parameters)
        top_k = self._top_k(parameters)
        truncate = _bool_param(parameters, "truncate", True)
        feeds, truncated = self.encoder.encode(_texts(inputs))
        if truncated and not truncate:
            raise LimitExceeded(
                f"{truncated} input(s) are longer than {self.max_length} tokens and parameters.truncate is false"
            )
        logits = self.session.run(None, {k: v for k, v in feeds.items() if k in self.input_names})[0]
        return Prediction(
            outputs=self._ranked(softmax(logits), top_k),
            usage={
                "batch_size": len(inputs),
                "input_tokens": int(feeds["attention_mask"].sum()),
                "truncated_inputs": truncated,
            },
        )


class ImageClassificationTask(_Classifier):
    def __init__(self, card, folder, session):
        super().__init__(card, folder, session)
        spec = card["inputs"]
        self.shape = tuple(spec["shape"])
        self.low, self.high = spec["min"], spec["max"]
        self.scale = spec.get("scale", 1.0)
        self.graph_shape = [d if isinstance(d, int) else -1 for d in session.get_inputs()[0].shape]

    def _pixels(self, inputs: list) -> np.ndarray:
        size = math.prod(self.shape)
        rows = []
        for i, image in enumerate(inputs):
            flat = _flatten_numbers(image, f"inputs[{i}]")
            if len(flat) != size:
                raise InvalidInput(
                    f"inputs[{i}] must hold {size} pixel values "
                    f"({'x'.join(map(str, self.shape))}), got {len(flat)}"
                )
            rows.append(flat)
        pixels = np.asarray(rows, dtype=np.float64)
        if not np.isfinite(pixels).all() or pixels.min() < self.low or pixels.max() > self.high:
            bad = int(np.argwhere(~((pixels >= self.low) & (pixels <= self.high)))[0][0])
            raise InvalidInput(f"inputs[{bad}]: pixel values must be numbers from {self.low} to {self.high}")
        return pixels.astype(np.float32)

    def run(self, inputs, parameters):
        _check_parameters(parameters, self.parameters)
        top_k = self._top_k(parameters)
        pixels = self._pixels(inputs) * np.float32(self.scale)
        feed = pixels.reshape([len(inputs), *self.graph_shape[1:]])
        logits = self.session.run(None, {self.input_names[0]: feed})[0]
        return Prediction(outputs=self._ranked(softmax(logits), top_k), usage={"batch_size": len(inputs)})


def _flatten_numbers(value, where: str) -> list:
    """An image as nested lists (8x8) or a flat list (64) of numbers."""
    if not isinstance(value, list):
        raise InvalidInput(f"{where} must be a list of pixel rows, got {type(value).__name__}")
    flat: list = []
    for r, row in enumerate(value):
        cells = row if isinstance(row, list) else [row]
        for cell in cells:
            if isinstance(cell, bool) or not isinstance(cell, (int, float)):
                raise InvalidInput(f"{where}[{r}] must hold numbers only, got {type(cell).__name__}")
            flat.append(cell)
    return flat


TASKS = {
    "embedding": EmbeddingTask,
    "text-classification": TextClassificationTask,
    "image-classification": ImageClassificationTask,
}
