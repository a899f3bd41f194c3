"""embedding, build side: encoder token vectors, mean-pooled and normalized; parity by cosine."""

from __future__ import annotations

import numpy as np

from ...manifest import ManifestError, Number, Table
from ..explain import WordExplain, word_card
from .base import BuildTask, ParityResult, batched_predict, register


class EmbeddingParity(Table):
    min_cosine: Number(0.0, 1.0) | None = None
    mean_cosine: Number(0.0, 1.0) | None = None


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@register
class Embedding(BuildTask):
    name = "embedding"
    inputs = "text"
    parity = EmbeddingParity
    hf_auto_class = "AutoModel"
    output_name = "last_hidden_state"
    output_axes = {0: "batch", 1: "sequence"}
    explain = WordExplain

    def explain_card(self, spec, exported, work):
        """The cosine to another text (the request's compare_to), attributed to the input's words."""
        return (word_card(spec.explain, output="cosine"), {}) if spec.explain.enabled else (None, {})

    def parity_settings(self, parity, where):
        if parity.min_cosine is None and parity.mean_cosine is None:
            raise ManifestError(f"{where}.min_cosine: an embedding model needs min_cosine or mean_cosine")
        return parity

    def card_outputs(self, spec, *, config=None, reference=None, labels=None):
        from maas_runtime.card import OutputSpec

        dimensions = config.hidden_size if config is not None else int(reference.shape[1])
        return OutputSpec(type="embedding", dimensions=dimensions, pooling="mean", normalize=True)

    def reference(self, raw, feeds):
        from maas_runtime.tasks import l2_normalize, mean_pool

        return l2_normalize(mean_pool(raw, feeds["attention_mask"]))

    def served(self, model, inputs):
        return np.asarray(batched_predict(model, inputs), dtype=np.float64)

    def measure(self, parity, served, reference, labels):
        cos = cosines(served, reference)
        figures = {
            "min_cosine": round(float(cos.min()), 6),
            "mean_cosine": round(float(cos.mean()), 6),
            "p01_cosine": round(float(np.percentile(cos, 1)), 6),
        }
        failures = []
        if parity.min_cosine is not None and figures["min_cosine"] < parity.min_cosine:
            failures.append(f"min cosine {figures['min_cosine']:.4f} < threshold {parity.min_cosine}")
        if parity.mean_cosine is not None and figures["mean_cosine"] < parity.mean_cosine:
            failures.append(f"mean cosine {figures['mean_cosine']:.4f} < threshold {parity.mean_cosine}")
        return ParityResult(
            figures, not failures, failures,
            metric="cosine similarity to the fp32 original's embedding", samples=int(len(cos)),
            score=figures["min_cosine"],
        )
