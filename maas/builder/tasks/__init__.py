"""Tasks, build side: everything about a task that the build needs, one module per task.

In the spirit of optimum's TasksManager. A task's build half says what its inputs are, how a
Hugging Face model is exported for it (the head and the output's axes), the fp32 reference's
post-processing that parity compares against, the parity metric and the manifest's parity table,
and the card's output schema. Its serving half is `maas_runtime.tasks`. Adding a task is one
module here, one there, and tests: both packages find their modules themselves.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import BUILD_TASKS, BuildTask, ParityResult, build_task, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["BUILD_TASKS", "BuildTask", "ParityResult", "build_task", "register"]
