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

import numpy as np
import onnx


WEIGHT_TYPE_REASON = (
    "uint8 weights with uint8 activations (U8U8) in the dynamic scheme: the U8S8 kernel on x86_64 "
    "without VNNI (AVX2 VPMADDUBSW) can saturate 16-bit sums, and arm64 runs U8U8 as fast as U8S8; "
    "the weight-only scheme keeps symmetric int8 blocks with per-block int8 activations, which MLAS "
    "runs on AVX2, AVX-512 and arm64 NEON"
)


MAX_EXCLUDED = 4
"""The most MatMuls the smoothquant series keeps in fp32 before it gives up: each costs MiniLM about
2% of its fp32 size, and beyond four the candidate is as large as weight-only int8 and no faster."""
SMALL_GATHER_BYTES = 4 << 20
"""Embedding tables below this (positions, token types) stay fp32 in the smoothquant scheme: they
are too small to matter for size, and quantizing the position table cost cosine."""


@dataclass(frozen=True)
class Scheme:
    name: str
    kind: str  # "dynamic" | "weight-only" | "smoothquant" | "per-token"
    block_size: int | None = None
    graph: str = "standard"
    """Which optimized graph it quantizes: "standard", or "fused" (eager attention, MultiHeadAttention)."""
    excluded: int = 0
    """smoothquant, per-token: how many of the most sensitive MatMuls stay fp32."""

    @property
    def smoothed(self) -> bool:
        """Whether it quantizes the SmoothQuant-smoothed graph (and keeps the ranked MatMuls fp32)."""
        return self.kind in ("smoothquant", "per-token")

    @property
    def batch_invariant(self) -> bool:
        """Whether an input's answer is independent of the other inputs of its request. The dynamic
        schemes quantize each activation tensor with one range computed at run time over the whole
        batch (DynamicQuantizeLinear), so a text's embedding moves with what it is batched with
        (and with length-aware batching's sub-batches); weight-only blocks and the per-token scheme
        (maas.builder.pertoken) quantize each row alone. What the arithmetic promises: the build
        also measures it on its machine (selection.batch_dependence), and a candidate's card entry
        says what held."""
        return self.kind in ("weight-only", "per-token")

    @property
    def pad_to_multiple_of(self) -> int:
        """The token-length multiple this scheme's graph is served with (the card's
        inputs.pad_to_multiple_of). ONNX Runtime's MatMulNBits int8 kernel (accuracy level 4) runs
        the rows of its input two at a time and an odd count's last row alone, and the lone row's
        sums come out in another order: ~1e-6 apart in one 384x1536 MatMul, enough to flip int8
        codes downstream (0.06 in MiniLM's hidden state). Measured on ONNX Runtime 1.32, AVX-512
        VNNI, 1 and 2 threads: a row's answer changed only as the odd count's last row, and was
        identical whatever row it was paired with. An even token length makes every batch's row
        count even, so every row is paired and a text gets the same answer alone and in any batch
        (selection.batch_dependence checks it on the build machine); it costs at most one
        padding token per sub-batch."""
        return 2 if self.kind == "weight-only" else 1

    def describe(self) -> dict:
        entry = {"name": self.name, "graph": self.graph, "batch_invariant": self.batch_invariant}
        if self.pad_to_multiple_of > 1:
            entry["pad_to_multiple_of"] = self.pad_to_multiple_of
        if self.kind == "dynamic":
            return entry | {
                "method": "quantize_dynamic",
                "weights": "uint8 per-channel (MatMul), uint8 per-tensor (Gather)",
                "activations": "uint8 per-tensor, computed at run time",
            }
        if self.kind == "smoothquant":
            return entry | {
                "method": "SmoothQuant activation smoothing + quantize_dynamic",
                "weights": "uint8 per-channel (MatMul), uint8 per-tensor (large Gather tables)",
                "activations": "uint8 per-tensor, computed at run time, after smoothing",
                "fp32_matmuls": self.excluded,
            }
        if self.kind == "per-token":
            return entry | {
                "method": "SmoothQuant activation smoothing + per-token dynamic int8 (maas.builder.pertoken)",
                "weights": "uint8 per-channel (MatMul), uint8 per-tensor (large Gather tables)",
                "activations": "uint8 per token (one symmetric range per row), computed at run time, after smoothing",
                "fp32_matmuls": self.excluded,
            }
        return entry | {
            "method": "MatMulNBits 8-bit weight-only + dynamic Gather",
            "weights": f"int8 symmetric blocks of {self.block_size} (MatMul), uint8 per-tensor (Gather)",
            "activations": "int8 per block at run time (accuracy_level 4)",
        }


DYNAMIC = Scheme("dynamic-int8", "dynamic")
WEIGHT_ONLY = [Scheme(f"weight-only-int8-b{b}", "weight-only", b) for b in (128, 64, 32)]
FUSED_WEIGHT_ONLY = Scheme("fused-weight-only-int8-b128", "weight-only", 128, graph="fused")


def smoothquant_series(graph: str) -> list[Scheme]:
    prefix = "fused-" if graph == "fused" else ""
    return [Scheme(f"{prefix}smoothquant-int8-x{k}", "smoothquant", graph=graph, excluded=k) for k in range(MAX_EXCLUDED + 1)]


def per_token_series(graph: str) -> list[Scheme]:
    prefix = "fused-" if graph == "fused" else ""
    return [Scheme(f"{prefix}per-token-int8-x{k}", "per-token", graph=graph, excluded=k) for k in range(MAX_EXCLUDED + 1)]


def uses_fused_graph(mode: str) -> bool:
    """Whether a mode measures candidates on the fused-attention graph (worth exporting it)."""
    return any(s.graph == "fused" for group in series_for(mode, True, True) for s in group)


def series_for(mode: str, fused: bool, calibrated: bool) -> list[list[Scheme]]:
    """The candidates a quantization mode measures, as series: a series is tried in order and stops
    at its first candidate that meets the bar, or once the next is too large to be chosen. Each step
    of a series buys accuracy with size (smaller weight-only blocks also with speed): blocks of 128, 64, 32;
    smoothquant with 0, 1, 2... of the most sensitive MatMuls kept fp32.

    `fused`: the source has a fused-attention graph; `calibrated`: the task has calibration inputs
    (smoothing needs activations). `mode` is one of the manifest's QUANTIZATION_MODES.
    """
    fused_only = [[FUSED_WEIGHT_ONLY]] if fused else []
    graph = "fused" if fused else "standard"
    smoothquant = [smoothquant_series(graph)] if calibrated else []
    per_token = [per_token_series(graph)] if calibrated else []
    if mode == "dynamic-int8":
        return [[DYNAMIC]]
    if mode == "weight-only-int8":
        return [WEIGHT_ONLY, *fused_only]
    if mode == "smoothquant-int8":
        return smoothquant
    if mode == "per-token-int8":
        return per_token
    if mode == "auto":
        return [[DYNAMIC], WEIGHT_ONLY, *fused_only, *smoothquant, *per_token]
    return []


def preprocess(source: Path, target: Path) -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # Symbolic shape inference fails on this kind of graph; ONNX's own inference is enough.
    quant_pre_process(str(source), str(target), skip_symbolic_shape=True)


def _quiet():
    for name in ("onnxruntime.quantization.matmul_nbits_quantizer", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)


def small_gathers(model: onnx.ModelProto) -> list[str]:
    """Gather nodes whose constant table is smaller than SMALL_GATHER_BYTES."""
    sizes = {i.name: int(np.prod(i.dims)) * 4 for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "Gather" and sizes.get(n.input[0], 1 << 62) < SMALL_GATHER_BYTES]


def quantize(scheme: Scheme, source: Path, target: Path, fp32_nodes: tuple[str, ...] = ()) -> None:
    """Write `scheme`'s int8 graph of `source` (for smoothquant: the smoothed graph, with `fp32_nodes`
    the MatMuls it keeps fp32, most sensitive first)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _quiet()
    if scheme.kind == "per-token":
        from . import pertoken

        pertoken.quantize(source, target, fp32_nodes[: scheme.excluded])
        quantize_dynamic(
            str(target), str(target), per_channel=False, weight_type=QuantType.QUInt8, op_types_to_quantize=["Gather"],
            nodes_to_exclude=small_gathers(onnx.load(str(target), load_external_data=False)),
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        return
    if scheme.kind in ("dynamic", "smoothquant"):
        excluded = []
        if scheme.kind == "smoothquant":
            excluded = [*small_gathers(onnx.load(str(source), load_external_data=False)), *fp32_nodes[: scheme.excluded]]
        quantize_dynamic(
            str(source),
            str(target),
            per_channel=True,
            weight_type=QuantType.QUInt8,
            op_types_to_quantize=["MatMul", "Gather"],
            nodes_to_exclude=excluded,
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
