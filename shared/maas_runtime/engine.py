"""Engines run a model's graph: feeds in, outputs out. Tasks never see which engine they have.

`OnnxEngine` runs the artifact's ONNX file in this process (Lambda, the build's parity, bench).
A remote engine (a GPU server speaking the same tensors) implements the same two members, so a
task's pre- and post-processing are written once for both paths.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Engine(Protocol):
    input_names: list[str]
    input_shapes: dict[str, list]
    """Each input's dimensions as the graph declares them: ints, or names/None for dynamic axes."""

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The graph's outputs, in order, for the feeds it takes (extra feeds are ignored)."""

    # Optional: `local = True` says the graph runs in this process, where a request cut into
    # several smaller runs costs no round trips (text tasks then batch length-aware).


class OnnxEngine:
    """An ONNX Runtime session (created once per model file per process, see session.py)."""

    local = True

    def __init__(self, session):
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.input_shapes = {i.name: list(i.shape) for i in session.get_inputs()}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, {k: v for k, v in feeds.items() if k in self.input_names})
