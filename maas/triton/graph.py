"""The graph a model server runs: the artifact's own graph, with an embedding's pooling appended.

SageMaker's InvokeEndpoint answers at most 6 MB, and an encoder's per-token output does not fit:
256 texts of 17 tokens already make 6.7 MB of MiniLM's last_hidden_state (256 tokens: 100 MB).
The served copy of an embedding graph therefore ends in masked mean pooling, so the answer is one
vector per text (256 x 384 x 4 B = 393 KB). The pooling is the runtime's own (maas_runtime's
`mean_pool`, written in ONNX operators); L2 normalization stays in the runtime's task, because
whether to normalize is a request parameter. The artifact and its card are unchanged: this copy
is made when the server's model repository is staged.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from maas_runtime import ModelCard
from maas_runtime.kserve import DATATYPES

POOLED_OUTPUT = "sentence_embedding"
MASK_INPUT = "attention_mask"
_PREFIX = "maas_pool_"


def served_graph(card: ModelCard, folder: Path) -> onnx.ModelProto:
    """The graph to serve for the artifact in ``folder``: pooled for a mean-pooled embedding."""
    model = onnx.load(str(Path(folder) / card.model_file))
    if card.outputs.type == "embedding" and card.outputs.pooling == "mean":
        append_mean_pooling(model, card.outputs.dimensions)
    return model


def append_mean_pooling(model: onnx.ModelProto, dimensions: int) -> onnx.ModelProto:
    """Replace the graph's (batch, tokens, hidden) output by its mean over the unmasked tokens."""
    graph = model.graph
    if len(graph.output) != 1 or MASK_INPUT not in {i.name for i in graph.input}:
        raise ValueError(f"mean pooling needs one (batch, tokens, hidden) output and an {MASK_INPUT} input")
    hidden = graph.output[0]
    dims = hidden.type.tensor_type.shape.dim
    if len(dims) != 3 or dims[2].dim_value != dimensions:
        raise ValueError(f"output {hidden.name!r} is not (batch, tokens, {dimensions})")
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        raise ValueError(f"appending pooling needs opset 13 or later (ReduceSum's axes as an input), the graph has {opset}")
    p = _PREFIX
    graph.initializer.extend([
        helper.make_tensor(f"{p}tokens_axis", TensorProto.INT64, [1], [1]),
        helper.make_tensor(f"{p}last_axis", TensorProto.INT64, [1], [-1]),
        helper.make_tensor(f"{p}min_count", TensorProto.FLOAT, [], [1e-9]),
    ])
    graph.node.extend([
        helper.make_node("Cast", [MASK_INPUT], [f"{p}mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", [f"{p}mask", f"{p}last_axis"], [f"{p}weights"]),
        helper.make_node("Mul", [hidden.name, f"{p}weights"], [f"{p}masked"]),
        helper.make_node("ReduceSum", [f"{p}masked", f"{p}tokens_axis"], [f"{p}sum"], keepdims=0),
        helper.make_node("ReduceSum", [f"{p}weights", f"{p}tokens_axis"], [f"{p}count"], keepdims=0),
        helper.make_node("Max", [f"{p}count", f"{p}min_count"], [f"{p}safe_count"]),
        helper.make_node("Div", [f"{p}sum", f"{p}safe_count"], [POOLED_OUTPUT]),
    ])
    batch = dims[0].dim_param or "batch"
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(POOLED_OUTPUT, TensorProto.FLOAT, [batch, dimensions]))
    onnx.checker.check_model(model)
    return model


def metadata(name: str, model: onnx.ModelProto, platform: str) -> dict:
    """The graph's KServe v2 model metadata (what GET /v2/models/<name> answers): the one
    description of the served tensors, from which config.pbtxt and the remote engine both read."""

    def tensor(value) -> dict:
        kind = value.type.tensor_type
        numpy_type = helper.tensor_dtype_to_np_dtype(kind.elem_type)
        datatype = next((k for k, v in DATATYPES.items() if _same(v, numpy_type)), None)
        if datatype is None:
            raise ValueError(f"tensor {value.name!r} has a type a model server cannot carry ({numpy_type})")
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim]
        if not shape:
            raise ValueError(f"tensor {value.name!r} has no batch axis")
        shape[0] = -1
        return {"name": value.name, "datatype": datatype, "shape": shape}

    initializers = {i.name for i in model.graph.initializer}
    return {
        "name": name,
        "versions": ["1"],
        "platform": platform,
        "inputs": [tensor(i) for i in model.graph.input if i.name not in initializers],
        "outputs": [tensor(o) for o in model.graph.output],
    }


def _same(dtype_str: str, numpy_type) -> bool:
    import numpy as np

    return np.dtype(dtype_str).newbyteorder("=") == np.dtype(numpy_type).newbyteorder("=")
