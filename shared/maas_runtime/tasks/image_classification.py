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
        """The batch as float32 (batch, *shape), every value checked in Python first: a number
        that numpy cannot hold (a 400-digit integer) is refused here, not overflowed there.
        `names` name the images in messages (default: inputs[i])."""
        names = names or [f"inputs[{i}]" for i in range(len(inputs))]
        rows = [_pixels(image, self.shape, self.low, self.high, name) for name, image in zip(names, inputs)]
        return np.asarray(rows, dtype=np.float32)

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

    @classmethod
    def example_inputs(cls, card) -> list:
        *rows, width = card.inputs.shape
        return [[[card.inputs.min] * width] * math.prod(rows)]

    @classmethod
    def attributions_schema(cls, card) -> dict:
        nested: dict = {"type": "number"}
        for size in reversed(card.inputs.shape):
            nested = {"type": "array", "items": nested, "minItems": size, "maxItems": size}
        return {**nested, "description": f"One per pixel, shaped as the image ({'x'.join(map(str, card.inputs.shape))})"}

    @classmethod
    def input_schema(cls, card) -> dict:
        spec = card.inputs
        pixel = {"type": "number", "minimum": spec.min, "maximum": spec.max}
        nested = pixel
        for size in reversed(spec.shape):
            nested = {"type": "array", "items": nested, "minItems": size, "maxItems": size}
        size = math.prod(spec.shape)
        shape = "x".join(map(str, spec.shape))
        return {
            "oneOf": [nested, {"type": "array", "items": pixel, "minItems": size, "maxItems": size}],
            "description": f"One image: {shape} nested rows, or {size} values flat; each from {spec.min:g} to {spec.max:g}",
        }


def _pixels(image, shape: tuple[int, ...], low: float, high: float, where: str) -> list:
    """One image's values, flat: exactly `shape` as nested lists, or a flat list of prod(shape)."""
    size = math.prod(shape)
    if not isinstance(image, list):
        raise InvalidInput(f"{where} must be a list of pixel rows, got {type(image).__name__}")
    if image and all(isinstance(row, list) for row in image):
        flat = _flatten(image, shape, where)
    elif len(image) == size:
        flat = image
    else:
        raise InvalidInput(
            f"{where} must be {'x'.join(map(str, shape))} nested rows or {size} values flat, got {len(image)} items"
        )
    for j, value in enumerate(flat):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"{where}: pixel {j} must be a number, got {type(value).__name__}")
        # Python's own comparison: exact for an int of any size, false for NaN, nothing to overflow.
        if not low <= value <= high:
            raise InvalidInput(f"{where}: pixel {j} must be from {low:g} to {high:g}")
    return [float(v) for v in flat]


def _flatten(image: list, shape: tuple[int, ...], where: str) -> list:
    """Nested rows of exactly `shape`, flattened; anything else is refused with its position."""
    level = [(image, where)]
    for depth, size in enumerate(shape):
        last = depth == len(shape) - 1
        nxt = []
        for items, place in level:
            if not isinstance(items, list) or len(items) != size:
                got = f"{len(items)} items" if isinstance(items, list) else type(items).__name__
                raise InvalidInput(f"{place} must be a list of {size} {'values' if last else 'rows'}, got {got}")
            nxt.extend((item, f"{place}[{k}]") for k, item in enumerate(items))
        level = nxt
    return [value for value, _ in level]
