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


def optimize_graph(source: Path, target: Path, *, model_folder: Path | None, fused_attention: bool = False) -> dict:
    """BERT fusions where the source is a Hugging Face BERT-family folder, basic rewrites otherwise.

    `fused_attention`: the source is an eager-attention export (`export.Exported.attention_export`)
    and its attention becomes ONNX Runtime's MultiHeadAttention kernel. The Q, K and V projections
    stay separate MatMuls (not the packed Attention op) so that every int8 scheme can still take
    them, and the embeddings stay a Gather (not EmbedLayerNormalization) so the table is still
    quantized to uint8.
    """
    config = bert_config(model_folder)
    if config is not None:
        return _optimize_transformer(source, target, config, fused_attention)
    return _optimize_basic(source, target)


def bert_config(model_folder: Path | None) -> dict | None:
    """The folder's config.json where ONNX Runtime's BERT fusions apply to it, else None."""
    if model_folder is None or not (model_folder / "config.json").is_file():
        return None
    config = json.loads((model_folder / "config.json").read_text())
    return config if config.get("model_type") == "bert" else None


def _optimize_transformer(source: Path, target: Path, config: dict, fused_attention: bool) -> dict:
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    if fused_attention:
        options.use_multi_head_attention = True
        options.disable_multi_head_attention_bias = True
        options.enable_embed_layer_norm = False
    optimized = optimize_model(
        str(source),
        model_type="bert",
        num_heads=config["num_attention_heads"],
        hidden_size=config["hidden_size"],
        opt_level=1,
        optimization_options=options,
    )
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    optimized.save_model_to_file(str(target))
    method = "onnxruntime.transformers bert fusions + basic graph optimization"
    if fused_attention:
        method += " (eager-attention export, MultiHeadAttention fused)"
    return {"method": method, "fused": fused}


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
