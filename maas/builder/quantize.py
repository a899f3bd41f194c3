"""Step 4: int8 quantization schemes, one candidate file each.

Weight types: activations are always uint8 in ONNX Runtime's dynamic scheme; weights are
uint8 too (U8U8) rather than int8 (U8S8). On x86_64 CPUs without AVX-512 VNNI, ONNX
Runtime's U8S8 kernel uses VPMADDUBSW, whose 16-bit intermediate sums can saturate and
cost accuracy (on MiniLM, QInt8 weights lost more cosine to fp32 than QUInt8 did);
U8U8 has no such path, and on arm64 (Graviton: SDOT/UDOT) both run at the same speed.
The weight-only scheme (MatMulNBits, accuracy_level 4) stores int8 blocks and quantizes
activations per block at run time, so outliers in one block do not cost the whole tensor
its resolution; MLAS has kernels for it on AVX2/AVX-512 and on arm64 NEON.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import onnx


WEIGHT_TYPE_REASON = (
    "uint8 weights with uint8 activations (U8U8) in the dynamic scheme: the U8S8 kernel on x86_64 "
    "without VNNI (AVX2 VPMADDUBSW) can saturate 16-bit sums, and arm64 runs U8U8 as fast as U8S8; "
    "the weight-only scheme keeps symmetric int8 blocks with per-block int8 activations, which MLAS "
    "runs on AVX2, AVX-512 and arm64 NEON"
)


@dataclass(frozen=True)
class Scheme:
    name: str
    kind: str  # "dynamic" | "weight-only"
    block_size: int | None = None

    def describe(self) -> dict:
        if self.kind == "dynamic":
            return {
                "name": self.name,
                "method": "quantize_dynamic",
                "weights": "uint8 per-channel (MatMul), uint8 per-tensor (Gather)",
                "activations": "uint8 per-tensor, computed at run time",
            }
        return {
            "name": self.name,
            "method": "MatMulNBits 8-bit weight-only + dynamic Gather",
            "weights": f"int8 symmetric blocks of {self.block_size} (MatMul), uint8 per-tensor (Gather)",
            "activations": "int8 per block at run time (accuracy_level 4)",
        }


DYNAMIC = Scheme("dynamic-int8", "dynamic")
WEIGHT_ONLY = [Scheme(f"weight-only-int8-b{b}", "weight-only", b) for b in (128, 64, 32)]


def schemes_for(mode: str) -> list[Scheme]:
    if mode == "dynamic-int8":
        return [DYNAMIC]
    if mode == "weight-only-int8":
        return WEIGHT_ONLY
    if mode == "auto":
        return [DYNAMIC, *WEIGHT_ONLY]
    return []


def preprocess(source: Path, target: Path) -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # Symbolic shape inference fails on this kind of graph; ONNX's own inference is enough.
    quant_pre_process(str(source), str(target), skip_symbolic_shape=True)


def _quiet():
    for name in ("onnxruntime.quantization.matmul_nbits_quantizer", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)


def quantize(scheme: Scheme, source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _quiet()
    if scheme.kind == "dynamic":
        quantize_dynamic(
            str(source),
            str(target),
            per_channel=True,
            weight_type=QuantType.QUInt8,
            op_types_to_quantize=["MatMul", "Gather"],
            # Fused contrib ops (SkipLayerNormalization, BiasGelu) carry no inferred types.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        return
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(source)),
        bits=8,
        block_size=scheme.block_size,
        is_symmetric=True,
        accuracy_level=4,
        op_types_to_quantize=("MatMul",),
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(target), use_external_data_format=False)
    # MatMulNBits has no 8-bit Gather: the embedding table gets the dynamic quantizer's uint8.
    quantize_dynamic(
        str(target), str(target), per_channel=False, weight_type=QuantType.QUInt8, op_types_to_quantize=["Gather"]
    )
