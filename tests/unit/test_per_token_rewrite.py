"""maas.builder.pertoken on a small graph: the rewrite computes the per-token int8 formula, keeps
every MatMul's output name, answers a row alike whatever it is batched with, and a row of zeros
gives exactly zeros (its range is 0)."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from maas.builder import pertoken
from maas.builder.smoothquant import weights_uint8

RNG = np.random.default_rng(7)
WEIGHTS = {"wq": RNG.normal(size=(8, 5)), "wk": RNG.normal(size=(8, 5)), "wv": RNG.normal(size=(8, 6)),
           "wo": RNG.normal(size=(8, 4))}


def _graph(path):
    """x feeds three MatMuls (as Q, K and V share their input); Relu(x) feeds a fourth alone."""
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], name="Q"),
        helper.make_node("MatMul", ["x", "wk"], ["k"], name="K"),
        helper.make_node("MatMul", ["x", "wv"], ["v"], name="V"),
        helper.make_node("Relu", ["x"], ["h"], name="Relu"),
        helper.make_node("MatMul", ["h", "wo"], ["o"], name="O"),
    ]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", "s", WEIGHTS["w" + n].shape[1]]) for n in "qkvo"]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", 8])], outputs,
                              [numpy_helper.from_array(w.astype(np.float32), n) for n, w in WEIGHTS.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _expected(x, w):
    """Y_t = r_t * ((round(127 x_t / r_t) + 128 - 128) @ (Wq - zw) * sw / 127), in numpy."""
    wq, scale, zero = weights_uint8(w.astype(np.float32))
    r = np.abs(x).max(axis=-1, keepdims=True)
    codes = np.round(127 * x / np.where(r > 0, r, 1))
    return r * (codes @ ((wq.astype(np.float32) - zero) * scale)) / 127


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip("qkvo", session.run(None, {"x": x.astype(np.float32)})))


def test_the_rewrite_computes_per_token_int8(tmp_path):
    _graph(tmp_path / "fp32.onnx")
    assert pertoken.quantize(tmp_path / "fp32.onnx", tmp_path / "int8.onnx") == 4
    model = onnx.load(str(tmp_path / "int8.onnx"))
    onnx.checker.check_model(model)
    assert not any(n.op_type == "MatMul" for n in model.graph.node)
    assert sum(n.op_type == "MatMulIntegerToFloat" for n in model.graph.node) == 2  # Q/K/V packed, O alone

    x = RNG.normal(size=(3, 5, 8)) * np.array([1, 1, 1, 1, 1, 1, 1, 20.0])  # one outlier channel
    x[1, 2] = 0.0  # a row of zeros
    got = _run(tmp_path / "int8.onnx", x)
    for name, source in (("q", x), ("k", x), ("v", x), ("o", np.maximum(x, 0))):
        w = WEIGHTS["w" + name]
        np.testing.assert_allclose(got[name], _expected(source, w), rtol=1e-5, atol=1e-5)
        assert np.isfinite(got[name]).all() and not got[name][1, 2].any()
        exact = source @ w
        assert np.abs(got[name] - exact).max() < 0.02 * np.abs(exact).max()


def test_a_row_answers_alike_alone_and_in_any_batch(tmp_path):
    _graph(tmp_path / "fp32.onnx")
    pertoken.quantize(tmp_path / "fp32.onnx", tmp_path / "int8.onnx")
    x = RNG.normal(size=(4, 6, 8))
    x[3] *= 50  # a batch-mate with a far larger range
    together = _run(tmp_path / "int8.onnx", x)
    for i in range(4):
        alone = _run(tmp_path / "int8.onnx", x[i : i + 1, :3])  # alone, and shorter
        for name in "qkvo":
            assert np.array_equal(alone[name][0], together[name][i, :3])
