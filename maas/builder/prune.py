"""Step 3: unstructured magnitude pruning of weight matrices.

Within each MatMul/Gemm weight, the smallest-magnitude fraction is set to zero. Embedding
tables and biases are left alone: they are lookups and offsets, not products, and zeroing
them costs accuracy without making anything faster.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

PRUNABLE_OPS = ("MatMul", "Gemm")


def prunable_weights(model: onnx.ModelProto) -> list[str]:
    inits = {i.name: i for i in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type in PRUNABLE_OPS and len(node.input) > 1 and node.input[1] in inits:
            if len(inits[node.input[1]].dims) == 2 and node.input[1] not in names:
                names.append(node.input[1])
    return names


def sparsity(model: onnx.ModelProto) -> float:
    """Fraction of zeros over all prunable weights."""
    inits = {i.name: i for i in model.graph.initializer}
    zeros = total = 0
    for name in prunable_weights(model):
        w = numpy_helper.to_array(inits[name])
        zeros += int((w == 0).sum())
        total += w.size
    return zeros / total if total else 0.0


def prune(model: onnx.ModelProto, target: float) -> dict:
    """Zero the smallest |w| in each weight matrix; returns requested and achieved sparsity."""
    inits = {i.name: i for i in model.graph.initializer}
    names = prunable_weights(model)
    if target > 0:
        for name in names:
            w = numpy_helper.to_array(inits[name]).copy()
            k = int(round(target * w.size))
            if k == 0:
                continue
            threshold = np.partition(np.abs(w).ravel(), k - 1)[k - 1]
            w[np.abs(w) <= threshold] = 0
            inits[name].CopyFrom(numpy_helper.from_array(w.astype(w.dtype), name))
    return {
        "requested": target,
        "achieved": round(sparsity(model), 4),
        "weight_matrices": len(names),
        "weights_pruned": len(names) if target else 0,
    }
