"""This machine's matrix-multiply GFLOP/s with a given thread count (run as a script in a fresh process,
so that the BLAS and ONNX Runtime thread pools take the thread count from the environment).

    python peak.py THREADS REPEATS  ->  one JSON line
"""

import json
import sys
import time


def best_gflops(fn, flops: float, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


def main() -> None:
    threads, repeats = int(sys.argv[1]), int(sys.argv[2])
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    out = {"threads": threads}
    for m, k, n in ((4096, 384, 1536), (1024, 1024, 1024)):
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        flops = 2.0 * m * k * n
        out[f"numpy_fp32_{m}x{k}x{n}"] = best_gflops(lambda: a @ b, flops, repeats)
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["a", "b"], ["c"])],
            "matmul",
            [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
            [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])],
            [numpy_helper.from_array(b, "b")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        out[f"onnxruntime_fp32_{m}x{k}x{n}"] = best_gflops(lambda: session.run(None, {"a": a}), flops, repeats)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
