"""Step 5: parity of a candidate against the fp32 original, through the serving code itself.

A candidate is measured the way it will be served: loaded by maas_runtime from a staged
artifact folder and called with request-shaped inputs, so tokenization, pooling and
pre-processing are part of what is measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..manifest import ModelSpec


@dataclass
class ParityResult:
    figures: dict
    passed: bool
    failures: list[str]


def served_outputs(model, inputs: list) -> np.ndarray:
    """Embeddings, or class probabilities in label order, for every input."""
    rows = []
    labels = model.card["outputs"].get("labels")
    for start in range(0, len(inputs), model.max_batch):
        batch = inputs[start : start + model.max_batch]
        if labels is None:
            rows.extend(model.predict(batch).outputs)
        else:
            for ranked in model.predict(batch, {"top_k": len(labels)}).outputs:
                by_label = {r["label"]: r["score"] for r in ranked}
                rows.append([by_label[label] for label in labels])
    return np.asarray(rows, dtype=np.float64)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def macro_f1(truth: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    scores = []
    for c in range(classes):
        tp = np.sum((predicted == c) & (truth == c))
        fp = np.sum((predicted == c) & (truth != c))
        fn = np.sum((predicted != c) & (truth == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def measure(spec: ModelSpec, served: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> ParityResult:
    p = spec.parity
    failures: list[str] = []
    if spec.task == "embedding":
        cos = cosines(served, reference)
        figures = {
            "metric": "cosine similarity to the fp32 original's embedding",
            "samples": int(len(cos)),
            "min_cosine": round(float(cos.min()), 6),
            "mean_cosine": round(float(cos.mean()), 6),
            "p01_cosine": round(float(np.percentile(cos, 1)), 6),
        }
        if p.min_cosine is not None and figures["min_cosine"] < p.min_cosine:
            failures.append(f"min cosine {figures['min_cosine']:.4f} < threshold {p.min_cosine}")
        if p.mean_cosine is not None and figures["mean_cosine"] < p.mean_cosine:
            failures.append(f"mean cosine {figures['mean_cosine']:.4f} < threshold {p.mean_cosine}")
        return ParityResult(figures, not failures, failures)

    classes = reference.shape[1]
    ref_top = reference.argmax(1)
    opt_top = served.argmax(1)
    truth = labels if labels is not None else ref_top
    fp32_acc = float((ref_top == truth).mean())
    opt_acc = float((opt_top == truth).mean())
    figures = {
        "metric": "held-out accuracy and macro F1" if labels is not None else "agreement with the fp32 original's top-1",
        "samples": int(len(truth)),
        "fp32_accuracy": round(fp32_acc, 6),
        "optimized_accuracy": round(opt_acc, 6),
        "fp32_macro_f1": round(macro_f1(truth, ref_top, classes), 6),
        "optimized_macro_f1": round(macro_f1(truth, opt_top, classes), 6),
        "top1_agreement": round(float((ref_top == opt_top).mean()), 6),
        "max_probability_difference": round(float(np.abs(served - reference).max()), 6),
    }
    if p.min_accuracy is not None and opt_acc < p.min_accuracy:
        failures.append(f"accuracy {opt_acc:.4f} < threshold {p.min_accuracy}")
    if p.max_accuracy_drop is not None and fp32_acc - opt_acc > p.max_accuracy_drop + 1e-12:
        failures.append(f"accuracy drop {fp32_acc - opt_acc:.4f} > allowed {p.max_accuracy_drop}")
    return ParityResult(figures, not failures, failures)
