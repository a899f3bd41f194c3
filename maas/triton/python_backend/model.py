"""Triton Python-backend model: the served ONNX graph run by ONNX Runtime on this machine's CPU.

Copied into the local model repository as ``<model>/1/model.py`` by `maas serve`. The tritonserver
of the nvidia-pytriton wheel has no ONNX Runtime backend, only the Python one; this model stands
in for the onnxruntime_onnx backend that SageMaker's Triton image runs on the GPU, with the same
tensors and the same dynamic batcher in front of it. Requests the batcher hands over together
are run as one batch: inputs of different lengths (token ids) are padded with zeros to the
longest (padding has attention mask 0), and the outputs are split back per request.

It runs inside Triton's Python stub (the tool venv: numpy<2, onnxruntime) and imports nothing
of the kit.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _pad(arrays):
    """One batch from per-request arrays: concatenated, shorter ones zero-padded on every later axis."""
    widest = [max(a.shape[axis] for a in arrays) for axis in range(1, arrays[0].ndim)]
    padded = [np.pad(a, [(0, 0)] + [(0, w - s) for w, s in zip(widest, a.shape[1:])]) for a in arrays]
    return np.concatenate(padded)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        try:
            arrays = [{n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs} for r in requests]
            widths = [max((a.shape[1] for a in request.values() if a.ndim > 1), default=0) for request in arrays]
            feeds = {n: _pad([request[n] for request in arrays]) for n in self.inputs}
            results = self.session.run(self.outputs, feeds)
        except Exception as exc:  # every request of the batch gets the error, the server goes on
            error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        padded = max(widths)
        responses, start = [], 0
        for request, width in zip(arrays, widths):
            size = next(iter(request.values())).shape[0]
            tensors = []
            for name, result in zip(self.outputs, results):
                part = result[start : start + size]
                if part.ndim > 2 and part.shape[1] == padded:  # a per-token output: drop the padding
                    part = part[:, :width]
                tensors.append(pb_utils.Tensor(name, np.ascontiguousarray(part)))
            start += size
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
