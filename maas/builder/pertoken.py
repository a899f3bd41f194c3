"""Per-token dynamic int8: integer GEMMs whose answer for one input does not depend on the others.

ONNX Runtime's dynamic scheme (`quantize_dynamic`) quantizes each MatMul input with one range per
tensor, computed at run time over the whole request: a text's vector then moves with what it is
batched with (and with length-aware batching's sub-batches), and one long text's outliers spend
every other token's 256 levels. This rewrite gives every token (every row of the activation) its
own symmetric range instead, as LLM.int8() and SmoothQuant's W8A8 "per-token" mode do:

    s_t = max_j |X_tj| / 127,    Xq_t = round(X_t / s_t) + 128  (uint8, zero point 128)
    Y_t = s_t * ((Xq_t - 128) @ (Wq - zw) * sw)

with the weights as `quantize_dynamic` stores them (uint8 per output column: scale sw, zero point
zw, U8U8 for the reason in `quantize.WEIGHT_TYPE_REASON`). In ONNX:

- per activation (shared by its consumer MatMuls, e.g. Q/K/V): ReduceMax and ReduceMin over the
  hidden axis give s (two read-only passes), and QuantizeLinear with a per-axis scale over the
  flattened [tokens, hidden] view writes the uint8 copy in one pass;
- per MatMul: `com.microsoft.MatMulIntegerToFloat` (MLAS's integer GEMM with the per-column weight
  scale applied in its output stage), then one Mul by s and a Reshape back to [batch, seq, out].

Standard ONNX has no per-row activation scale in an integer MatMul (MatMulInteger's a_zero_point,
MatMulIntegerToFloat's a_scale are per tensor or per column), hence the trailing Mul. Measured on
MiniLM (smoothed, fused attention, 2-core AVX2): min cosine 0.994 on the parity set where
per-tensor dynamic reached 0.983, the same text bit-identical alone and in any batch; 5 to 40%
slower than per-tensor dynamic int8 on the build's mixed batch (the extra passes, and at batch 1
the many small operators), faster than weight-only int8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .smoothquant import weight_matmuls

ZERO_POINT = 128
"""uint8 activations, symmetric around 128: a scalar zero point, which MLAS's U8U8 GEMM takes."""
EPSILON = 1e-12
"""The smallest range a token gets (an all-zero row would otherwise divide by zero)."""

_CONSTANTS = {
    "pertoken/inv127": np.array(1 / 127, np.float32),
    "pertoken/eps": np.array(EPSILON, np.float32),
    "pertoken/zero_point": np.array(ZERO_POINT, np.uint8),
    "pertoken/one": np.array(1.0, np.float32),
    "pertoken/flat": np.array([-1], np.int64),
    "pertoken/column": np.array([-1, 1], np.int64),
    "pertoken/last": np.array([-1], np.int64),
    "pertoken/start": np.array([0], np.int64),
}


def weights_uint8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 weights, per-column scale, per-column zero point): quantize_dynamic's per-channel QUInt8."""
    lo = np.minimum(w.min(axis=0), 0.0)
    hi = np.maximum(w.max(axis=0), 0.0)
    scale = np.where(hi > lo, (hi - lo) / 255, 1.0).astype(np.float32)
    zero = np.clip(np.round(-lo / scale), 0, 255).astype(np.uint8)
    return np.clip(np.round(w / scale) + zero, 0, 255).astype(np.uint8), scale, zero


def _activation_nodes(x: str, hidden: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], dict[str, str]]:
    """The nodes that quantize activation `x` per token; returns them, their constants and the names
    the GEMMs use ("q": uint8 [tokens, hidden], "scale": [tokens, 1], "shape": x's leading dims + [-1])."""
    p = f"{x}/pertoken"
    shape2d = numpy_helper.from_array(np.array([-1, hidden], np.int64), f"{p}/shape2d")
    nodes = [
        helper.make_node("ReduceMax", [x], [f"{p}/hi"], axes=[-1], keepdims=1, name=f"{p}/ReduceMax"),
        helper.make_node("ReduceMin", [x], [f"{p}/lo"], axes=[-1], keepdims=1, name=f"{p}/ReduceMin"),
        helper.make_node("Neg", [f"{p}/lo"], [f"{p}/neglo"], name=f"{p}/Neg"),
        helper.make_node("Max", [f"{p}/hi", f"{p}/neglo", "pertoken/eps"], [f"{p}/absmax"], name=f"{p}/Max"),
        helper.make_node("Mul", [f"{p}/absmax", "pertoken/inv127"], [f"{p}/s"], name=f"{p}/Scale"),
        helper.make_node("Reshape", [f"{p}/s", "pertoken/flat"], [f"{p}/s_flat"], name=f"{p}/ScaleFlat"),
        helper.make_node("Reshape", [f"{p}/s", "pertoken/column"], [f"{p}/s_column"], name=f"{p}/ScaleColumn"),
        helper.make_node("Reshape", [x, shape2d.name], [f"{p}/x2d"], name=f"{p}/Flatten"),
        helper.make_node("Shape", [f"{p}/s_flat"], [f"{p}/tokens"], name=f"{p}/Tokens"),
        helper.make_node("Expand", ["pertoken/zero_point", f"{p}/tokens"], [f"{p}/zero_points"], name=f"{p}/ZeroPoints"),
        helper.make_node("QuantizeLinear", [f"{p}/x2d", f"{p}/s_flat", f"{p}/zero_points"], [f"{p}/q"], axis=0,
                         name=f"{p}/Quantize"),
        helper.make_node("Shape", [x], [f"{p}/x_shape"], name=f"{p}/Shape"),
        helper.make_node("Slice", [f"{p}/x_shape", "pertoken/start", "pertoken/flat"], [f"{p}/lead"], name=f"{p}/Lead"),
        helper.make_node("Concat", [f"{p}/lead", "pertoken/last"], [f"{p}/out_shape"], axis=0, name=f"{p}/OutShape"),
    ]
    return nodes, [shape2d], {"q": f"{p}/q", "scale": f"{p}/s_column", "shape": f"{p}/out_shape"}


def quantize(source: Path, target: Path, fp32_nodes: tuple[str, ...] = ()) -> int:
    """Write `source` with every weight MatMul but `fp32_nodes` as a per-token int8 GEMM; returns how
    many were rewritten. Embedding tables are left to the caller (quantize.quantize)."""
    model = onnx.load(str(source))
    groups, inits = weight_matmuls(model)
    added = [numpy_helper.from_array(v, k) for k, v in _CONSTANTS.items()]
    before: dict[str, list[onnx.NodeProto]] = {}  # node name -> what replaces it
    dropped: set[str] = set()
    for x, consumers in groups.items():
        rewritten = [n for n in consumers if n.name not in fp32_nodes]
        if not rewritten:
            continue
        hidden = inits[rewritten[0].input[1]].dims[0]
        quant_nodes, consts, names = _activation_nodes(x, hidden)
        added += consts
        for i, node in enumerate(rewritten):
            wq, scale, zero = weights_uint8(numpy_helper.to_array(inits[node.input[1]]).astype(np.float32))
            w = node.input[1]
            added += [numpy_helper.from_array(wq, f"{w}/uint8"), numpy_helper.from_array(scale, f"{w}/scale"),
                      numpy_helper.from_array(zero, f"{w}/zero_point")]
            dropped.add(w)
            out = node.output[0]
            gemm = [
                helper.make_node("MatMulIntegerToFloat",
                                 [names["q"], f"{w}/uint8", "pertoken/one", f"{w}/scale", "pertoken/zero_point", f"{w}/zero_point"],
                                 [f"{out}/pertoken"], domain="com.microsoft", name=f"{node.name}/PerToken"),
                helper.make_node("Mul", [f"{out}/pertoken", names["scale"]], [f"{out}/pertoken_scaled"], name=f"{node.name}/TokenScale"),
                helper.make_node("Reshape", [f"{out}/pertoken_scaled", names["shape"]], [out], name=f"{node.name}/Unflatten"),
            ]
            # The activation's quantization goes before its first consumer (the graph stays sorted).
            before[node.name] = (quant_nodes if i == 0 else []) + gemm
    nodes = []
    for node in model.graph.node:
        nodes.extend(before.get(node.name, [node]))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    kept = [i for i in model.graph.initializer if i.name not in dropped or _still_used(model, i.name)]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + added)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(target))
    return len(before)


def _still_used(model: onnx.ModelProto, name: str) -> bool:
    return any(name in node.input for node in model.graph.node)
