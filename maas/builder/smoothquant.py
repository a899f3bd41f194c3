"""SmoothQuant for dynamic int8, and the per-node sensitivity that says which MatMuls stay fp32.

Dynamic int8 quantizes each MatMul's activation per tensor at run time; a transformer's
activations carry a few outlier channels, and one outlier spends the whole tensor's 256 levels.
SmoothQuant (Xiao et al., 2023) moves that range into the weights, exactly in real arithmetic:
for an activation X shared by its consumer MatMuls and each input channel j,

    s_j = max|X_j|^alpha / max_k |W_jk|^(1 - alpha),    X' = X / s,    W' = diag(s) W,    X' W' = X W

A Mul by 1/s is inserted after X for the MatMul consumers only (the residual path keeps X), so
the graph stays standard ONNX plus what `quantize_dynamic` emits. max|X_j| comes from the
calibration texts (`evalsets.calibration_texts`), never from the parity set.

ONNX Runtime's own SmoothQuant lives in its static (QDQ) path, which needs symbolic shape
inference (it fails on the fused contrib ops) and produced a slower, larger graph on MiniLM;
the dynamic path has no smoothing option, so the few lines of it are here.

Sensitivity is ranked once per build by a local proxy, not end to end: each MatMul's relative
output error ||Q(X')Q(W') - X'W'|| / ||X'W'|| with ONNX Runtime's dynamic u8u8 rounding, on the
calibration activations. The same single fp32 pass serves smoothing and the ranking; quantizing
the nodes one at a time end to end would cost a graph rewrite and a session per node (minutes on
2 cores). The proxy does not see how an error propagates to the pooled output, which is why the
build measures each step of the series end to end rather than trusting the ranking's order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ALPHA = 0.7
"""Migration strength: 0.5 (the paper's default) left MiniLM's outliers too strong for per-tensor
uint8; 0.8 and above pushed the error into the weights. 0.7 had the best min cosine of 0.5-0.9."""
SCALE_CLIP = (1e-2, 1e2)
"""s is clipped so that a dead channel (max|X_j| ~ 0) cannot blow its weight row up."""
SENSITIVITY_ROWS = 48
"""Real tokens per calibration batch on which each node's output error is measured (a sample: the
ranking only has to separate the few worst nodes, and the products are most of the step's cost)."""
CALIBRATION_TEXTS = 160
"""48 and 96 texts saw too few of MiniLM's outlier activations: smoothing then left the parity set's
worst text below the bar where 160 did not."""


def weight_matmuls(model: onnx.ModelProto) -> tuple[dict[str, list[onnx.NodeProto]], dict[str, onnx.TensorProto]]:
    """MatMuls with a constant 2-D weight, grouped by their activation input."""
    inits = {i.name: i for i in model.graph.initializer}
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        if (node.op_type == "MatMul" and node.input[1] in inits and node.input[0] not in inits
                and len(inits[node.input[1]].dims) == 2):
            groups.setdefault(node.input[0], []).append(node)
    return groups, inits


def _session_with_outputs(model: onnx.ModelProto, tensors: list[str]):
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in known:
            probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor addressable
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session, {i.name for i in session.get_inputs()}


def _runs(model: onnx.ModelProto, tensors: list[str], feeds: list[dict[str, np.ndarray]]):
    """(batch feeds, {tensor: value}) for each calibration batch."""
    session, names = _session_with_outputs(model, tensors)
    for batch in feeds:
        values = session.run(tensors, {k: v for k, v in batch.items() if k in names})
        yield batch, dict(zip(tensors, values))


def _real_rows(value: np.ndarray, batch: dict[str, np.ndarray]) -> np.ndarray:
    """The tensor's rows for real tokens (padding dropped), as a 2-D matrix."""
    mask = batch.get("attention_mask")
    if value.ndim == 3 and mask is not None and mask.shape == value.shape[:2]:
        return value[mask.astype(bool)]
    return value.reshape(-1, value.shape[-1])


@dataclass
class Observed:
    """One activation (a MatMul input) over the calibration batches, from a single fp32 pass."""

    absmax: np.ndarray
    """Per channel, over real tokens: what smoothing balances."""
    lows: list[np.ndarray] = field(default_factory=list)
    highs: list[np.ndarray] = field(default_factory=list)
    """Per batch and channel, over the whole padded tensor: dynamic int8's range at run time, which
    after smoothing is min_j(low_j / s_j) .. max_j(high_j / s_j), known without running again."""
    rows: list[np.ndarray] = field(default_factory=list)
    """Per batch, a sample of real-token rows: where each node's int8 error is measured."""


def observe(source: Path, feeds: list[dict[str, np.ndarray]]) -> dict[str, Observed]:
    """Every weight MatMul's input over the calibration feeds, in one fp32 pass."""
    model = onnx.load(str(source))
    groups, _ = weight_matmuls(model)
    seen: dict[str, Observed] = {}
    rng = np.random.default_rng(0)
    for batch, values in _runs(model, list(groups), feeds):
        for x, value in values.items():
            rows = _real_rows(value, batch)
            top = np.abs(rows).max(axis=0)
            flat = value.reshape(-1, value.shape[-1])
            item = seen.setdefault(x, Observed(absmax=top))
            item.absmax = np.maximum(item.absmax, top)
            item.lows.append(flat.min(axis=0))
            item.highs.append(flat.max(axis=0))
            item.rows.append(rows[rng.choice(len(rows), SENSITIVITY_ROWS, replace=False)] if len(rows) > SENSITIVITY_ROWS else rows)
    return seen


def smooth(source: Path, target: Path, observed: dict[str, Observed], alpha: float = ALPHA) -> tuple[dict, dict[str, np.ndarray]]:
    """Write the smoothed fp32 graph; returns what the card records and each activation's s."""
    model = onnx.load(str(source))
    groups, inits = weight_matmuls(model)
    scales, muls = {}, []
    for x, consumers in groups.items():
        w_absmax = np.max([np.abs(numpy_helper.to_array(inits[n.input[1]])).max(axis=1) for n in consumers], axis=0)
        s = np.maximum(observed[x].absmax, 1e-5) ** alpha / np.maximum(w_absmax, 1e-5) ** (1 - alpha)
        s = scales[x] = np.clip(s, *SCALE_CLIP).astype(np.float32)
        inverse = numpy_helper.from_array((1.0 / s).astype(np.float32), f"{x}/smooth_inverse")
        model.graph.initializer.append(inverse)
        smoothed = f"{x}/smoothed"
        muls.append((x, helper.make_node("Mul", [x, inverse.name], [smoothed], name=f"{x}/SmoothMul")))
        for node in consumers:
            w = numpy_helper.to_array(inits[node.input[1]]) * s[:, None]
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(w.astype(np.float32), node.input[1]))
            node.input[0] = smoothed
    # Each Mul goes right after the node producing its input, which keeps the graph topologically sorted.
    producer = {out: i for i, node in enumerate(model.graph.node) for out in node.output}
    nodes = list(model.graph.node)
    for x, mul in sorted(muls, key=lambda m: -producer.get(m[0], -1)):
        nodes.insert(producer.get(x, -1) + 1, mul)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(target))
    report = {"alpha": alpha, "activations_smoothed": len(groups), "matmuls": sum(len(c) for c in groups.values())}
    return report, scales


def _fake_quant_activation(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """ONNX DynamicQuantizeLinear then DequantizeLinear: uint8, one range per tensor including 0."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = np.float32((hi - lo) / 255 or 1.0)
    zero = np.float32(np.clip(np.round(-lo / scale), 0, 255))
    return (np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale


def weights_uint8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 weights, per-column scale, per-column zero point): quantize_dynamic's per-channel QUInt8."""
    lo = np.minimum(w.min(axis=0), 0.0)
    hi = np.maximum(w.max(axis=0), 0.0)
    scale = np.where(hi > lo, (hi - lo) / 255, 1.0).astype(np.float32)
    zero = np.clip(np.round(-lo / scale), 0, 255).astype(np.uint8)
    return np.clip(np.round(w / scale) + zero, 0, 255).astype(np.uint8), scale, zero


def _fake_quant_weight(w: np.ndarray) -> np.ndarray:
    """quantize_dynamic's per-channel uint8 weights (one scale per output column), dequantized."""
    q, scale, zero = weights_uint8(w)
    return ((q.astype(np.float32) - zero) * scale).astype(np.float32)


def sensitivity(smoothed: Path, observed: dict[str, Observed], scales: dict[str, np.ndarray]) -> list[tuple[str, float]]:
    """Every weight MatMul of the smoothed graph with its relative output error under dynamic u8u8,
    worst first, from the observed (unsmoothed) activations divided by their s."""
    model = onnx.load(str(smoothed))
    groups, inits = weight_matmuls(model)
    ranked = []
    for smoothed_input, consumers in groups.items():
        x = smoothed_input.removesuffix("/smoothed")
        seen, inverse = observed[x], 1.0 / scales[x]
        rows = np.concatenate(seen.rows) * inverse
        # each batch's rows quantized with that batch's range, as ONNX Runtime would at run time
        rows_int8 = np.concatenate([
            _fake_quant_activation(r * inverse, float((low * inverse).min()), float((high * inverse).max()))
            for r, low, high in zip(seen.rows, seen.lows, seen.highs)
        ])
        for node in consumers:
            w = numpy_helper.to_array(inits[node.input[1]])
            exact = rows @ w
            error = float(np.square(rows_int8 @ _fake_quant_weight(w) - exact, dtype=np.float64).sum())
            energy = float(np.square(exact, dtype=np.float64).sum())
            ranked.append((node.name, (error / energy) ** 0.5 if energy else 0.0))
    return sorted(ranked, key=lambda item: -item[1])
