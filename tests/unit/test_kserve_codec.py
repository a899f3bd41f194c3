"""maas_runtime.kserve: the KServe v2 codec against tritonclient's own, and RemoteEngine's payload guard."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from maas_runtime import LimitExceeded
from maas_runtime.kserve import (
    DATATYPES,
    ProtocolError,
    RemoteEngine,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    header_length_of,
    sagemaker_content_type,
)

RNG = np.random.default_rng(7)
TENSORS = {
    "input_ids": RNG.integers(0, 30000, size=(3, 11), dtype=np.int64),
    "attention_mask": np.ones((3, 11), dtype=np.int64),
    "pixels": RNG.standard_normal((2, 8, 8)).astype(np.float32),
    "half": RNG.standard_normal((4,)).astype(np.float16),
    "flags": np.array([[True, False, True]]),
    "small": np.array([[1, 255]], dtype=np.uint8),
    "wide": np.array([1.5, -2.25], dtype=np.float64),
    "text": np.array([b"hello", "w\u00f6rld".encode(), b""], dtype=object),
}


def _tritonclient_http():
    """tritonclient's HTTP request and answer code, loaded by file path: importing tritonclient.http runs
    its __init__, which needs gevent and geventhttpclient (its [http] extra, not installed here)."""
    tritonclient = pytest.importorskip("tritonclient", reason="tritonclient is installed by `make setup`")
    pytest.importorskip("rapidjson", reason="python-rapidjson is installed with the dev extra")
    folder = Path(tritonclient.__file__).parent / "http"
    modules = {}
    for name in ("_utils", "_infer_input", "_requested_output", "_infer_result"):
        spec = importlib.util.spec_from_file_location(f"tritonclient_http_{name}", folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[name] = module
    return modules


@pytest.mark.parametrize("binary", [True, False])
def test_request_bytes_equal_tritonclients(binary):
    # GIVEN tensors of every datatype, and tritonclient's InferInput/InferRequestedOutput for them
    http = _tritonclient_http()
    inputs = []
    for name, array in TENSORS.items():
        from maas_runtime.kserve import datatype_of

        tensor = http["_infer_input"].InferInput(name, list(array.shape), datatype_of(array))
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    outputs = [http["_requested_output"].InferRequestedOutput(n, binary_data=binary) for n in ("a", "b")]
    # WHEN tritonclient and our codec build the request
    reference, reference_size = http["_utils"]._get_inference_request(
        inputs=inputs, request_id="", outputs=outputs, sequence_id=0, sequence_start=False, sequence_end=False,
        priority=0, timeout=None, custom_parameters=None,
    )
    body, size = encode_request(TENSORS, ["a", "b"], binary=binary)
    # THEN the bytes are the same (in JSON, rapidjson escapes non-ASCII as \u00F6 where Python writes \u00f6)
    assert size == reference_size
    if binary:
        assert body == reference
    else:
        assert json.loads(body) == json.loads(reference)
        assert body.lower() == reference.lower()


@pytest.mark.parametrize("binary", [True, False])
def test_answers_decode_as_tritonclient_decodes_them(binary):
    http = _tritonclient_http()
    outputs = {k: v for k, v in TENSORS.items()}
    body, size = encode_response("m", outputs, {n: binary for n in outputs})
    result = http["_infer_result"].InferResult.from_response_body(body, header_length=size)
    _, ours = decode_response(body, size)
    for name, array in outputs.items():
        theirs = result.as_numpy(name)
        assert ours[name].shape == theirs.shape == array.shape
        # JSON carries BYTES as strings; tritonclient gives them back as str, ours as bytes in both forms
        theirs = [x.encode() if isinstance(x, str) else x for x in theirs.ravel().tolist()]
        assert ours[name].ravel().tolist() == theirs == array.ravel().tolist()


@pytest.mark.parametrize("binary", [True, False])
def test_requests_round_trip(binary):
    body, size = encode_request(TENSORS, ["out"], binary=binary)
    header, arrays = decode_request(body, size)
    assert header["outputs"] == [{"name": "out", "parameters": {"binary_data": binary}}]
    for name, array in TENSORS.items():
        assert arrays[name].dtype.kind == array.dtype.kind and arrays[name].tolist() == array.tolist()


def test_every_datatype_has_a_fixed_width():
    for datatype, dtype in DATATYPES.items():
        array = np.zeros((2, 3), dtype=dtype)
        body, size = encode_response("m", {"x": array}, {"x": True})
        assert len(body) - size == 6 * np.dtype(dtype).itemsize, datatype


@pytest.mark.parametrize(
    ("body", "size", "message"),
    [
        (b'{"outputs":[{"name":"x","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}}]}\x00\x00', None, "not valid JSON"),
        (b'{"outputs":[{"name":"x","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}}]}', 10**6, "outside"),
        (b'{"outputs":[{"name":"x","datatype":"FP32","shape":[3],"parameters":{"binary_data_size":8}}]}' + b"\0" * 8, 92, "needs 12 bytes"),
        (b'{"outputs":[{"name":"x","datatype":"FP33","shape":[1],"data":[1]}]}', None, "unknown datatype"),
        (b'{"outputs":[{"name":"x","datatype":"FP32","shape":[1]}]}', None, "neither data"),
        (b'{"outputs":[{"name":"x","datatype":"FP32","shape":[-1],"data":[1]}]}', None, "non-negative"),
        (b'{"error":"expected 3 inputs but got 1 inputs for model \'m\'"}', None, "expected 3 inputs"),
        (b'[1, 2]', None, "not an object"),
    ],
)
def test_malformed_answers_are_protocol_errors(body, size, message):
    with pytest.raises(ProtocolError, match=message):
        decode_response(body, size)


def test_where_the_header_length_travels():
    assert sagemaker_content_type(None) == "application/json"
    assert sagemaker_content_type(166) == "application/vnd.sagemaker-triton.binary+json;json-header-size=166"
    assert header_length_of("application/vnd.sagemaker-triton.binary+json;json-header-size=166") == 166
    assert header_length_of("application/vnd.sagemaker-triton.binary+json; json-header-size = 7") == 7
    assert header_length_of("application/json") is None and header_length_of(None) is None
    assert header_length_of("application/octet-stream", "42") == 42
    with pytest.raises(ProtocolError):
        header_length_of("application/vnd.sagemaker-triton.binary+json")


METADATA = {
    "name": "m", "versions": ["1"], "platform": "onnxruntime_onnx",
    "inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]}],
    "outputs": [{"name": "last_hidden_state", "datatype": "FP32", "shape": [-1, -1, 384]}],
}


class _MustNotBeCalled:
    """The guard refuses before anything is sent: a transport that fails the test if it is used."""

    def __init__(self, limit):
        self.max_payload_bytes = limit

    def infer(self, body, header_length):
        raise AssertionError("the oversized request was sent")


def test_a_request_over_the_transports_limit_is_refused_before_sending():
    engine = RemoteEngine({**METADATA, "outputs": [{"name": "v", "datatype": "FP32", "shape": [-1, 4]}]}, _MustNotBeCalled(10_000))
    with pytest.raises(LimitExceeded, match="at most 10000 bytes per request"):
        engine.run({"input_ids": np.zeros((8, 200), dtype=np.int64)})  # 12,800 bytes of int64


def test_an_answer_that_could_not_come_back_is_refused_before_sending():
    # 256 texts x 17 tokens x 384 floats of last_hidden_state: 6.7 MB, over InvokeEndpoint's 6 MiB
    engine = RemoteEngine(METADATA, _MustNotBeCalled(6 * 1024 * 1024))
    with pytest.raises(LimitExceeded, match=r"send at most 240 inputs"):
        engine.run({"input_ids": np.zeros((256, 17), dtype=np.int64)})


def test_metadata_that_is_not_kserve_is_an_artifact_error():
    from maas_runtime import ArtifactError

    with pytest.raises(ArtifactError, match="not KServe v2 model metadata"):
        RemoteEngine({"name": "m", "inputs": []}, _MustNotBeCalled(None))


class _SumServer:
    """A server that takes at most `max_batch` rows and answers each row's sum, through the real codec."""

    max_payload_bytes = None

    def __init__(self, max_batch: int):
        self.max_batch, self.batches = max_batch, []

    def infer(self, body, header_length):
        _, arrays = decode_request(body, header_length)
        ids = arrays["input_ids"]
        if len(ids) > self.max_batch:
            raise AssertionError(f"{len(ids)} rows sent to a server that takes {self.max_batch}")
        self.batches.append(len(ids))
        return encode_response("m", {"v": ids.sum(axis=1, keepdims=True).astype(np.float32)}, {"v": True})


def test_a_run_larger_than_the_servers_batch_is_sent_in_order_in_parts():
    server = _SumServer(max_batch=32)
    engine = RemoteEngine({**METADATA, "outputs": [{"name": "v", "datatype": "FP32", "shape": [-1, 1]}]}, server, max_batch=32)
    ids = RNG.integers(0, 1000, size=(70, 5), dtype=np.int64)
    (out,) = engine.run({"input_ids": ids})
    assert server.batches == [32, 32, 6]
    assert np.array_equal(out[:, 0], ids.sum(axis=1).astype(np.float32))
