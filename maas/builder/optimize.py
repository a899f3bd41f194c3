"""Step 2: ONNX Runtime graph optimization, saved into the artifact.

Only portable rewrites are saved: fusions into ONNX Runtime's CPU contrib ops (present on
x86_64 and arm64 alike) and basic constant folding. Hardware-specific layout rewrites are
left to the session at load time, where ONNX Runtime picks them for the machine it runs on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def optimize_graph(source: Path, target: Path, *, model_folder: Path | None) -> dict:
    """BERT fusions where the source is a Hugging Face BERT-family folder, basic rewrites otherwise."""
    config = _bert_config(model_folder)
    if config is not None:
        return _optimize_transformer(source, target, config)
    return _optimize_basic(source, target)


def _bert_config(model_folder: Path | None) -> dict | None:
    if model_folder is None or not (model_folder / "config.json").is_file():
        return None
    config = json.loads((model_folder / "config.json").read_text())
    return config if config.get("model_type") == "bert" else None


def _optimize_transformer(source: Path, target: Path, config: dict) -> dict:
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(source),
        model_type="bert",
        num_heads=config["num_attention_heads"],
        hidden_size=config["hidden_size"],
        opt_level=1,
    )
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    optimized.save_model_to_file(str(target))
    return {"method": "onnxruntime.transformers bert fusions + basic graph optimization", "fused": fused}


def _optimize_basic(source: Path, target: Path) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    model = onnx.load(str(target))
    converted = gemm_to_matmul(model)
    onnx.save(model, str(target))
    return {"method": "onnxruntime basic graph optimization", "gemm_to_matmul": converted}


def gemm_to_matmul(model: onnx.ModelProto) -> int:
    """Rewrite Gemm(x, W, b) as MatMul + Add, the form the int8 quantizers handle.

    Only the plain case is rewritten (alpha = beta = 1, transA = 0, constant W and b).
    """
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    new_nodes, converted = [], 0
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        plain = (
            node.op_type == "Gemm"
            and attrs.get("alpha", 1.0) == 1.0
            and attrs.get("beta", 1.0) == 1.0
            and not attrs.get("transA", 0)
            and node.input[1] in inits
            and (len(node.input) < 3 or node.input[2] in inits)
        )
        if not plain:
            new_nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            weight = np.ascontiguousarray(weight.T)
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(weight, node.input[1]))
        matmul_out = node.output[0] + "_matmul" if len(node.input) > 2 else node.output[0]
        new_nodes.append(onnx.helper.make_node("MatMul", [node.input[0], node.input[1]], [matmul_out], name=node.name + "_MatMul"))
        if len(node.input) > 2:
            new_nodes.append(onnx.helper.make_node("Add", [matmul_out, node.input[2]], [node.output[0]], name=node.name + "_Add"))
        converted += 1
    del graph.node[:]
    graph.node.extend(new_nodes)
    return converted
