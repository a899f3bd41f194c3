"""Pruning and the Gemm rewrite on small real graphs, checked numerically with ONNX Runtime."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from maas.builder import prune
from maas.builder.optimize import gemm_to_matmul


def _gemm_model(rng) -> onnx.ModelProto:
    w1 = rng.normal(size=(32, 16)).astype(np.float32)  # (out, in): transB = 1, as torch exports Linear
    b1 = rng.normal(size=(32,)).astype(np.float32)
    w2 = rng.normal(size=(32, 4)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1, name="fc1"),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_gemm_rewrite_keeps_the_numbers():
    rng = np.random.default_rng(0)
    model = _gemm_model(rng)
    x = rng.normal(size=(5, 16)).astype(np.float32)
    before = _run(model, x)
    assert gemm_to_matmul(model) == 1
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add", "Relu", "MatMul"]
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-5, atol=1e-5)


def test_pruning_reaches_the_requested_sparsity_and_zeroes_the_smallest():
    rng = np.random.default_rng(1)
    model = _gemm_model(rng)
    original = {i.name: numpy_helper.to_array(i).copy() for i in model.graph.initializer}
    report = prune.prune(model, 0.5)
    assert report["requested"] == 0.5
    assert abs(report["achieved"] - 0.5) < 0.01
    assert report["achieved"] == round(prune.sparsity(model), 4)
    pruned = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for name in ("w1", "w2"):
        kept = np.abs(original[name][pruned[name] != 0])
        dropped = np.abs(original[name][pruned[name] == 0])
        assert dropped.max() <= kept.min()  # magnitude order: nothing kept is smaller than what was dropped
    np.testing.assert_array_equal(pruned["b1"], original["b1"])  # biases are never pruned


def test_zero_sparsity_changes_nothing():
    rng = np.random.default_rng(2)
    model = _gemm_model(rng)
    report = prune.prune(model, 0.0)
    assert report["achieved"] == 0.0 and report["weights_pruned"] == 0
