"""config.pbtxt: Triton's model configuration, built and checked with Triton's own protobuf schema.

The message types come from `model_config_pb2`, the generated module that the `tritonclient`
package ships (tritonclient/grpc/model_config_pb2.py, from triton-inference-server/common's
model_config.proto). It is loaded by file path: importing it as a module of tritonclient.grpc
would run that package's __init__, which needs grpc (an extra we do not install).

The GPU configuration (the archive SageMaker's Triton loads) is made from the served graph's
metadata and the manifest's `sagemaker` table. The local one (`maas serve`) is derived from it:
the same tensors and batching, run by our Python-backend model on CPU (the pip-installed
tritonserver has no ONNX Runtime backend).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, files

from google.protobuf import text_format

CONFIG_FILE = "config.pbtxt"
GPU_PLATFORM = "onnxruntime_onnx"
LOCAL_BACKEND = "python"
MODEL_FILENAME = "model.onnx"
VERSION = "1"
TENSORRT_WORKSPACE_BYTES = 1 << 30


class ConfigError(ValueError):
    """A config.pbtxt that Triton's schema refuses, or that cannot be made."""


@lru_cache(maxsize=1)
def model_config_pb2():
    """Triton's ModelConfig protobuf module, from the installed tritonclient."""
    try:
        path = next(f for f in files("tritonclient") or () if str(f).endswith("grpc/model_config_pb2.py")).locate()
    except (PackageNotFoundError, StopIteration):
        raise ConfigError(
            "tritonclient is not installed (it ships Triton's model_config_pb2): run `make setup`, "
            "or `pip install --no-deps tritonclient==2.73.0`"
        ) from None
    spec = importlib.util.spec_from_file_location("maas_triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def preferred_batch_sizes(max_batch: int, configured: tuple[int, ...] | None = None) -> list[int]:
    """The sizes at which the dynamic batcher sends a batch at once rather than wait for more.
    By default the powers of two from 8 up to half the largest batch, at most three of them."""
    if configured is not None:
        return sorted(set(configured))
    sizes = [2**i for i in range(3, 16) if 2**i < max_batch]
    return sizes[-3:]


def gpu_config(metadata: dict, settings, max_batch: int):
    """The ModelConfig SageMaker's Triton runs: ONNX Runtime on the GPU, with dynamic batching.

    ``settings``: the manifest's `sagemaker` table (maas.manifest.SageMakerSettings).
    """
    pb = model_config_pb2()
    config = pb.ModelConfig(name=metadata["name"], platform=GPU_PLATFORM, max_batch_size=max_batch)
    config.default_model_filename = MODEL_FILENAME
    for role, entries in (("input", metadata["inputs"]), ("output", metadata["outputs"])):
        for entry in entries:
            datatype = "STRING" if entry["datatype"] == "BYTES" else entry["datatype"]
            getattr(config, role).add(
                name=entry["name"], data_type=pb.DataType.Value(f"TYPE_{datatype}"), dims=entry["shape"][1:]
            )
    config.dynamic_batching.preferred_batch_size.extend(
        preferred_batch_sizes(max_batch, settings.preferred_batch_sizes)
    )
    config.dynamic_batching.max_queue_delay_microseconds = settings.max_queue_delay_us
    config.instance_group.add(kind=pb.ModelInstanceGroup.KIND_GPU, count=1)
    if settings.accelerator == "tensorrt-fp16":
        tensorrt = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        tensorrt.parameters["precision_mode"] = "FP16"
        tensorrt.parameters["max_workspace_size_bytes"] = str(TENSORRT_WORKSPACE_BYTES)
    return config


def local_config(config):
    """The same model for the local tritonserver: our Python-backend model on CPU, same batching."""
    pb = model_config_pb2()
    local = pb.ModelConfig()
    local.CopyFrom(config)
    local.ClearField("platform")
    local.ClearField("default_model_filename")
    local.ClearField("optimization")
    local.backend = LOCAL_BACKEND
    del local.instance_group[:]
    local.instance_group.add(kind=pb.ModelInstanceGroup.KIND_CPU, count=1)
    return local


def render(config) -> str:
    return text_format.MessageToString(config)


def parse(text: str):
    """A config.pbtxt as Triton's schema reads it: unknown fields, bad enum values and wrong types are refused."""
    pb = model_config_pb2()
    try:
        return text_format.Parse(text, pb.ModelConfig())
    except text_format.ParseError as exc:
        raise ConfigError(f"{CONFIG_FILE} is not a valid Triton ModelConfig: {exc}") from None
