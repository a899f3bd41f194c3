"""The build-side task contract and its registry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel

BUILD_TASKS: dict[str, "BuildTask"] = {}


def register(cls: type["BuildTask"]) -> type["BuildTask"]:
    BUILD_TASKS[cls.name] = cls()
    return cls


def build_task(name: str) -> "BuildTask":
    return BUILD_TASKS[name]


@dataclass
class ParityResult:
    figures: dict
    passed: bool
    failures: list[str]
    metric: str = ""
    samples: int = 0
    score: float = 0.0
    """The headline figure (higher is better): how a failed build names its best candidate."""


class BuildTask:
    name: ClassVar[str]
    inputs: ClassVar[str]
    """"text" (tokenized with the model's tokenizer.json) or "image" (fixed-shape numbers)."""
    labelled: ClassVar[bool] = False
    """Whether the model answers scores over labels (the manifest may name them)."""
    parity: ClassVar[type[BaseModel]]
    """The manifest's `parity` table for this task (a frozen pydantic model, unknown keys refused)."""
    hf_auto_class: ClassVar[str | None] = None
    """The transformers Auto class a Hugging Face source is loaded with; None if not exportable."""
    output_name: ClassVar[str] = "output"
    output_axes: ClassVar[dict[int, str]] = {0: "batch"}
    explain: ClassVar[type[BaseModel] | None] = None
    """The manifest's `explain` table for this task (maas.builder.explain); None: no explanations."""

    def parity_settings(self, parity: BaseModel, where: str) -> BaseModel:
        """Checks across the parity table's keys; raises ManifestError naming `where`."""
        return parity

    def explain_settings(self, settings: BaseModel, where: str) -> BaseModel:
        """Checks across the explain table's keys; raises ManifestError naming `where`."""
        from ..explain import check_settings

        return check_settings(settings, where)

    def explain_card(self, spec, exported, work: Path) -> tuple[Any, dict[str, Path]]:
        """The card's `explain` section (maas_runtime.card.ExplainSpec, or None) and the files it
        needs shipped in the artifact (name -> path), computed once per build. ValueError when the
        source cannot provide what explanations need."""
        return None, {}

    def calibration(self, spec, exported) -> tuple[list[dict[str, np.ndarray]], str] | None:
        """Graph feeds that calibrate quantization (SmoothQuant's activation ranges, node sensitivity),
        in batches of 8, and where they come from; None where the task has none. Text tasks: the
        calibration texts of `evalsets`, never the parity set."""
        if self.inputs != "text":
            return None
        from maas_runtime.tokenization import TextEncoder

        from ..evalsets import CALIBRATION_DESCRIPTION, CALIBRATION_SEED, calibration_texts
        from ..smoothquant import CALIBRATION_TEXTS

        encoder = TextEncoder(exported.extra_files[exported.inputs.tokenizer], spec.serving.max_sequence_length)
        texts = calibration_texts(CALIBRATION_TEXTS)
        feeds = [encoder.encode(texts[i : i + 8])[0] for i in range(0, len(texts), 8)]
        return feeds, CALIBRATION_DESCRIPTION.format(count=len(texts), seed=CALIBRATION_SEED)

    def card_outputs(self, spec, *, config=None, reference: np.ndarray | None = None, labels=None):
        """The card's OutputSpec, from a Hugging Face config or the fp32 reference's outputs."""
        raise NotImplementedError

    def reference(self, raw: np.ndarray, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The fp32 original's graph output, post-processed exactly as serving does."""
        raise NotImplementedError

    def served(self, model, inputs: list) -> np.ndarray:
        """The served model's answers to `inputs`, as the array `reference` is compared with."""
        raise NotImplementedError

    def measure(self, parity: Any, served: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> ParityResult:
        raise NotImplementedError


def batched_predict(model, inputs: list, parameters: dict | None = None) -> list:
    """Every input through `model.predict`, in batches of the model's serving limit."""
    outputs = []
    for start in range(0, len(inputs), model.max_batch):
        outputs.extend(model.predict(inputs[start : start + model.max_batch], parameters or {}).outputs)
    return outputs
