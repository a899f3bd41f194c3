"""Numeric pre- and post-processing shared by tasks, and by the build's fp32 reference."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the token vectors, ignoring padding (as sentence-transformers pools)."""
    weights = mask[..., None].astype(hidden.dtype)
    return (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.clip(norms, 1e-12, None)


def embedding_json_values(vectors: np.ndarray) -> list:
    """Vectors as Python floats rounded to 9 decimal places.

    A float32 read back as a double prints with up to 17 digits; rounded, it prints with at
    most 9 after the point: the JSON is smaller and encodes faster, and the change (at most
    5e-10 per component) is below float32's own resolution for any component above 0.01.
    """
    return np.round(vectors.astype(np.float64), 9).tolist()
