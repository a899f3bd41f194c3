"""Roofline: the model's achieved GFLOP/s against this machine's measured matmul GFLOP/s.

FLOPs are counted from the fp32 ONNX graph (MatMul and Gemm, 2*M*K*N each) with shapes inferred
for the batch and sequence length actually run; the quantized graph does the same arithmetic.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def matmul_flops(onnx_path: Path, input_shapes: dict[str, list[int]]) -> int:
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(str(onnx_path))
    for graph_input in model.graph.input:
        shape = input_shapes.get(graph_input.name)
        if shape is None:
            continue
        for dim, size in zip(graph_input.type.tensor_type.shape.dim, shape):
            dim.Clear()
            dim.dim_value = int(size)
    inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    shapes = {
        vi.name: [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    }
    shapes.update({t.name: list(t.dims) for t in inferred.graph.initializer})
    total = 0
    for node in inferred.graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
        if not a or not b or None in a or None in b:
            raise ValueError(f"unknown shape for {node.op_type} {node.name!r}")
        if node.op_type == "Gemm":
            attrs = {at.name: at.i for at in node.attribute}
            m, k = (a[1], a[0]) if attrs.get("transA") else (a[0], a[1])
            n = b[0] if attrs.get("transB") else b[1]
            total += 2 * m * k * n
        else:
            if len(b) == 1:
                b = b + [1]
            lead = math.prod(a[:-2]) if len(a) > 2 else max(1, math.prod(b[:-2]))
            total += 2 * lead * a[-2] * a[-1] * b[-1] if len(a) > 1 else 2 * a[-1] * b[-1]
    return total


def machine_peak(threads: int, repeats: int) -> dict:
    proc = subprocess.run(
        [sys.executable, str(HERE / "peak.py"), str(threads), str(repeats)],
        env={
            **__import__("os").environ,
            "OMP_NUM_THREADS": str(threads),
            "OPENBLAS_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["best_gflops"] = max(v for k, v in out.items() if k != "threads")
    return out
