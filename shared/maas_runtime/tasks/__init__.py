"""Tasks: the serving half of everything that differs by task.

A task turns validated request inputs into graph feeds (`prepare`) and the graph's outputs into
JSON-ready results (`finish`); the graph itself stays a plain encoder or classifier, run by an
`Engine` (a local ONNX Runtime session, or a remote one). One module per task in this package,
registered with `@register`; the build side (maas.builder.tasks) holds each task's other half.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import TASKS, Prediction, Prepared, Task, register, task_for
from .processing import embedding_json_values, l2_normalize, mean_pool, softmax

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "processing"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "TASKS",
    "Prediction",
    "Prepared",
    "Task",
    "embedding_json_values",
    "l2_normalize",
    "mean_pool",
    "register",
    "softmax",
    "task_for",
]
