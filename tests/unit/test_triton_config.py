"""config.pbtxt: made from the served graph's metadata and the manifest, read back by Triton's own protobuf."""

from __future__ import annotations

import pytest

pytest.importorskip("tritonclient", reason="tritonclient (Triton's model_config_pb2) is installed by `make setup`")

from maas.manifest import SageMakerSettings  # noqa: E402
from maas.triton import config as triton_config  # noqa: E402

METADATA = {
    "name": "minilm-gpu", "versions": ["1"], "platform": "onnxruntime_onnx",
    "inputs": [{"name": n, "datatype": "INT64", "shape": [-1, -1]} for n in ("input_ids", "attention_mask", "token_type_ids")],
    "outputs": [{"name": "sentence_embedding", "datatype": "FP32", "shape": [-1, 384]}],
}


def test_the_schema_is_tritons_own():
    module = triton_config.model_config_pb2()
    assert module.__file__.endswith("tritonclient/grpc/model_config_pb2.py")
    assert module.ModelConfig.DESCRIPTOR.full_name == "inference.ModelConfig"


def test_gpu_config_from_metadata_and_manifest():
    # GIVEN the shipped heavy model's settings (defaults) and a batch limit of 256
    config = triton_config.gpu_config(METADATA, SageMakerSettings(), 256)
    # WHEN rendered and parsed back by Triton's schema
    text = triton_config.render(config)
    parsed = triton_config.parse(text)
    # THEN nothing is lost, and it says what SageMaker's Triton must run
    assert parsed == config
    pb = triton_config.model_config_pb2()
    assert parsed.platform == "onnxruntime_onnx" and parsed.default_model_filename == "model.onnx"
    assert parsed.max_batch_size == 256
    assert [(i.name, pb.DataType.Name(i.data_type), list(i.dims)) for i in parsed.input] == [
        (n, "TYPE_INT64", [-1]) for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    assert [(o.name, pb.DataType.Name(o.data_type), list(o.dims)) for o in parsed.output] == [("sentence_embedding", "TYPE_FP32", [384])]
    assert [(g.kind, g.count) for g in parsed.instance_group] == [(pb.ModelInstanceGroup.KIND_GPU, 1)]
    assert list(parsed.dynamic_batching.preferred_batch_size) == [32, 64, 128]
    assert parsed.dynamic_batching.max_queue_delay_microseconds == 2000
    assert not parsed.HasField("optimization")  # no TensorRT unless asked: parity stays what the build measured


def test_tensorrt_fp16_is_an_onnx_runtime_execution_accelerator():
    settings = SageMakerSettings(accelerator="tensorrt-fp16", max_queue_delay_us=500, preferred_batch_sizes=[16, 8])
    parsed = triton_config.parse(triton_config.render(triton_config.gpu_config(METADATA, settings, 64)))
    (accelerator,) = parsed.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    assert int(accelerator.parameters["max_workspace_size_bytes"]) == triton_config.TENSORRT_WORKSPACE_BYTES
    assert list(parsed.dynamic_batching.preferred_batch_size) == [8, 16]
    assert parsed.dynamic_batching.max_queue_delay_microseconds == 500


def test_local_config_runs_the_same_tensors_on_the_python_backend():
    gpu = triton_config.gpu_config(METADATA, SageMakerSettings(accelerator="tensorrt-fp16"), 256)
    local = triton_config.parse(triton_config.render(triton_config.local_config(gpu)))
    pb = triton_config.model_config_pb2()
    assert local.backend == "python" and not local.platform and not local.default_model_filename
    assert not local.HasField("optimization")
    assert [(g.kind, g.count) for g in local.instance_group] == [(pb.ModelInstanceGroup.KIND_CPU, 1)]
    assert list(local.input) == list(gpu.input) and list(local.output) == list(gpu.output)
    assert local.dynamic_batching == gpu.dynamic_batching and local.max_batch_size == gpu.max_batch_size


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('platform: "onnxruntime_onnx"\nmax_batch: 4', 'no field named "max_batch"'),
        ('instance_group [{ kind: KIND_TPU }]', 'no value named KIND_TPU'),
        ('input [{ name: "x" data_type: TYPE_INT64 dims: "a" }]', "Couldn't parse integer"),
        ('dynamic_batching { max_queue_delay_microseconds: -1 }', "Value out of range: -1"),
    ],
)
def test_a_broken_config_is_refused_naming_the_problem(text, message):
    with pytest.raises(triton_config.ConfigError, match=message):
        triton_config.parse(text)


@pytest.mark.parametrize(("max_batch", "sizes"), [(256, [32, 64, 128]), (32, [8, 16]), (9, [8]), (8, []), (1, [])])
def test_default_preferred_batch_sizes(max_batch, sizes):
    assert triton_config.preferred_batch_sizes(max_batch) == sizes
