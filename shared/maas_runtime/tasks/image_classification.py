"""image-classification: fixed-size grey images (nested rows or flat) -> the top k labels."""

from __future__ import annotations

import math

import numpy as np

from ..errors import InvalidInput
from ..explain import load_background
from .base import LabelledTask, Prediction, Prepared, register
from .processing import softmax


@register
class ImageClassificationTask(LabelledTask):
    name = "image-classification"

    def __init__(self, card, folder, engine):
        super().__init__(card, folder, engine)
        spec = card.inputs
        self.shape = tuple(spec.shape)
        self.low, self.high = spec.min, spec.max
        self.scale = spec.scale
        self.input_name = engine.input_names[0]
        self.graph_shape = [d if isinstance(d, int) else -1 for d in engine.input_shapes[self.input_name]]
        explain = card.explain
        self.background = load_background(folder, explain, math.prod(self.shape)) if explain and explain.background else None

    def pixels(self, inputs: list, names: list[str] | None = None) -> np.ndarray:
        """The batch as float32 (batch, *shape), values checked against the card's range."""
        size = math.prod(self.shape)
        names = names or [f"inputs[{i}]" for i in range(len(inputs))]
        rows = []
        for name, image in zip(names, inputs):
            flat = _flatten_numbers(image, name)
            if len(flat) != size:
                raise InvalidInput(
                    f"{name} must hold {size} pixel values "
                    f"({'x'.join(map(str, self.shape))}), got {len(flat)}"
                )
            rows.append(flat)
        pixels = np.asarray(rows, dtype=np.float64)
        if not np.isfinite(pixels).all() or pixels.min() < self.low or pixels.max() > self.high:
            bad = int(np.argwhere(~((pixels >= self.low) & (pixels <= self.high)))[0][0])
            raise InvalidInput(f"{names[bad]}: pixel values must be numbers from {self.low:g} to {self.high:g}")
        return pixels.astype(np.float32)

    def feeds(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        scaled = pixels * np.float32(self.scale)
        return {self.input_name: scaled.reshape([len(pixels), *self.graph_shape[1:]])}

    def prepare(self, inputs, parameters) -> Prepared:
        self.check_parameters(parameters)
        top_k = self.top_k(parameters)
        return Prepared(
            feeds=self.feeds(self.pixels(inputs)), options={"top_k": top_k}, usage={"batch_size": len(inputs)}
        )

    def finish(self, prepared, outputs) -> Prediction:
        return Prediction(outputs=self.ranked(softmax(outputs[0]), prepared.options["top_k"]), usage=prepared.usage)

    def explain_game(self, item, parameters, where):
        """Players are the pixels, in request units (0-16 for digits): an absent pixel takes each
        background row's value, and every row goes through `feeds` (the same scaling as predict)."""
        if self.background is None:
            return super().explain_game(item, parameters, where)
        x = self.pixels([item], [where])[0]

        def logits(rows):
            return self.engine.run(self.feeds(np.asarray(rows, dtype=np.float32)))[0]

        return self.class_game(x, self.background.x, self.background.weights, logits, parameters,
                               lambda phi: phi.reshape(self.shape).tolist())

    def smoke_input(self) -> list:
        return [[[self.low] * self.shape[-1]] * (math.prod(self.shape) // self.shape[-1])]


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
