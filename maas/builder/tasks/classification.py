"""What the classifiers share at build time: probabilities in label order, accuracy-based parity."""

from __future__ import annotations

import numpy as np

from ...manifest import ManifestError, Number, Table
from .base import BuildTask, ParityResult, batched_predict


class ClassifierParity(Table):
    min_accuracy: Number(0.0, 1.0) | None = None
    max_accuracy_drop: Number(0.0, 1.0) | None = None


def macro_f1(truth: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    scores = []
    for c in range(classes):
        tp = np.sum((predicted == c) & (truth == c))
        fp = np.sum((predicted == c) & (truth != c))
        fn = np.sum((predicted != c) & (truth == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


class Classifier(BuildTask):
    """Base of the classifier tasks (not registered itself)."""

    labelled = True
    parity = ClassifierParity
    output_name = "logits"
    output_axes = {0: "batch"}

    def parity_settings(self, parity, where):
        if parity.min_accuracy is None and parity.max_accuracy_drop is None:
            raise ManifestError(f"{where}.min_accuracy: a classifier needs min_accuracy or max_accuracy_drop")
        return parity

    def card_outputs(self, spec, *, config=None, reference=None, labels=None):
        from maas_runtime.card import OutputSpec

        if labels is None and config is not None:
            labels = [config.id2label[i] for i in range(len(config.id2label))]
        labels = list(spec.labels or labels or ())
        if not labels:
            raise ValueError(f"{spec.name}: a classifier needs `labels` in the manifest")
        return OutputSpec(type="labels", labels=tuple(labels))

    def reference(self, raw, feeds):
        from maas_runtime.tasks import softmax

        return softmax(raw)

    def served(self, model, inputs):
        labels = model.card.outputs.labels
        rows = []
        for ranked in batched_predict(model, inputs, {"top_k": len(labels)}):
            by_label = {r["label"]: r["score"] for r in ranked}
            rows.append([by_label[label] for label in labels])
        return np.asarray(rows, dtype=np.float64)

    def measure(self, parity, served, reference, labels):
        classes = reference.shape[1]
        ref_top = reference.argmax(1)
        opt_top = served.argmax(1)
        truth = labels if labels is not None else ref_top
        fp32_acc = float((ref_top == truth).mean())
        opt_acc = float((opt_top == truth).mean())
        figures = {
            "fp32_accuracy": round(fp32_acc, 6),
            "optimized_accuracy": round(opt_acc, 6),
            "fp32_macro_f1": round(macro_f1(truth, ref_top, classes), 6),
            "optimized_macro_f1": round(macro_f1(truth, opt_top, classes), 6),
            "top1_agreement": round(float((ref_top == opt_top).mean()), 6),
            "max_probability_difference": round(float(np.abs(served - reference).max()), 6),
        }
        failures = []
        if parity.min_accuracy is not None and opt_acc < parity.min_accuracy:
            failures.append(f"accuracy {opt_acc:.4f} < threshold {parity.min_accuracy}")
        if parity.max_accuracy_drop is not None and fp32_acc - opt_acc > parity.max_accuracy_drop + 1e-12:
            failures.append(f"accuracy drop {fp32_acc - opt_acc:.4f} > allowed {parity.max_accuracy_drop}")
        metric = "held-out accuracy and macro F1" if labels is not None else "agreement with the fp32 original's top-1"
        return ParityResult(figures, not failures, failures, metric=metric, samples=int(len(truth)), score=opt_acc)
