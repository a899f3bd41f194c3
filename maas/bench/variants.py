"""What is measured: per model, the kit's handler, the fp32 ONNX model, and the PyTorch baseline.

A `Variant` is everything a worker process needs to serve one of them. The baseline's weights are
prepared here (the digits recipe is trained once and cached: training is not part of a cold start).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from maas_api.constants import ENV_MODEL_DIR, ENV_MODEL_NAME, ENV_MODEL_S3_URI, MODEL_FUNCTION_ENV
from maas_runtime import CARD_FILE, MODEL_FILE, ArtifactError, ModelCard, file_entries, verify_artifact
from maas_runtime.session import ENV_INTRA_OP_THREADS

from ..paths import artifact_dir

HERE = Path(__file__).resolve().parent
WORKER = HERE / "worker.py"

KIT = "kit"  # the optimized artifact through the real Lambda handler
RUNTIME = "runtime"  # the optimized artifact through maas_runtime alone (cold start split only)
FP32 = "onnx-fp32"  # the fp32 ONNX model through maas_runtime
TORCH = "torch"  # PyTorch eager with the original weights
# The anchors: CPU embedding stacks a user would pick instead, each with the same weights, run by
# the bench-anchors venv's python (`make bench-anchors`); their worker kind is their role.
ST = "sentence-transformers"  # SentenceTransformer.encode(batch_size=32) on the original weights
FASTEMBED = "fastembed"  # fastembed's TextEmbedding on the kit's fp32 ONNX export
OPTIMUM = "optimum"  # Optimum's ORTModelForFeatureExtraction on the kit's fp32 ONNX export
ANCHORS = (ST, FASTEMBED, OPTIMUM)

LABELS = {
    KIT: "int8 ONNX via Lambda handler",
    RUNTIME: "int8 ONNX via maas_runtime",
    FP32: "fp32 ONNX via maas_runtime",
    TORCH: "PyTorch eager (baseline)",
    ST: "sentence-transformers encode",
    FASTEMBED: "fastembed (kit's fp32 ONNX)",
    OPTIMUM: "Optimum ORTModel (kit's fp32 ONNX)",
}
ANCHORS_VENV = Path(".cache") / "tools" / "bench-anchors"
ANCHORS_HOW = "make bench-anchors"


class BenchError(RuntimeError):
    pass


@dataclass(frozen=True)
class Variant:
    model: str
    role: str  # KIT | RUNTIME | FP32 | TORCH
    kind: str  # worker kind: handler | runtime | torch
    task: str
    dir: str
    threads: int
    extra: dict = field(default_factory=dict)
    python: str | None = None
    """The interpreter of its worker: the bench's own where None."""

    @property
    def key(self) -> str:
        return f"{self.model}/{self.role}@{self.threads}t"

    @property
    def label(self) -> str:
        return LABELS[self.role]

    def spec(self, mode: str, root: Path, first_inputs: list) -> dict:
        return {
            "mode": mode,
            "kind": self.kind,
            "model": self.model,
            "task": self.task,
            "dir": self.dir,
            "threads": self.threads,
            "handler_dir": str(root / "functions" / "model"),
            "catalog": str(root / "build" / "catalog.json"),
            "first_inputs": first_inputs,
            **self.extra,
        }

    def env(self) -> dict:
        env = dict(os.environ)
        threads = str(self.threads)
        env.update(
            {
                ENV_INTRA_OP_THREADS: threads,
                "OMP_NUM_THREADS": threads,
                "OPENBLAS_NUM_THREADS": threads,
                "MKL_NUM_THREADS": threads,
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_SERVICE_NAME": "maas-bench",
                "TOKENIZERS_PARALLELISM": "false",
            }
        )
        if self.role in (KIT, RUNTIME, FP32):
            env.update(MODEL_FUNCTION_ENV)  # what the stack gives every model function, as deployed
        # A deployed package has its bytecode: let the untimed first run write it (any value disables).
        for name in (ENV_MODEL_NAME, ENV_MODEL_DIR, ENV_MODEL_S3_URI, "PYTHONDONTWRITEBYTECODE"):
            env.pop(name, None)
        return env


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def cache_dir(root: Path) -> Path:
    path = root / ".cache" / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def digits_baseline(root: Path, card: ModelCard) -> tuple[Path, Path]:
    """The digits model as trained (fp32 torch weights), and its fp32 ONNX export as an artifact folder.

    Trained once by the recipe (fixed seed, the same model the build starts from) and cached.
    """
    cache = cache_dir(root)
    weights = cache / "digits-fp32.pt"
    folder = cache / "digits-fp32"
    if weights.exists() and _verified(folder):
        return weights, folder
    import torch

    from ..recipes import digits

    model = digits.train(digits.load_data())
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    widths = [linears[0].in_features] + [m.out_features for m in linears]
    flat = torch.nn.Sequential(*list(model.children())[1:]).eval()
    state = {f"{i + 1}.{k}": v for i, layer in enumerate(flat) for k, v in layer.state_dict().items()}
    torch.save({"widths": widths, "state_dict": state, "scale": 1.0 / digits.PIXEL_MAX}, weights)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    onnx_path = folder / MODEL_FILE
    torch.onnx.export(
        flat,
        (torch.zeros((2, 64), dtype=torch.float32),),
        str(onnx_path),
        input_names=["pixels"],
        output_names=["logits"],
        dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    # The trained model's fp32 export, described by the kit's card with its own file.
    # It serves no explanations: the kit's background file is not copied beside it.
    card.replace(model_file=MODEL_FILE, files=file_entries(folder), optimization=None, sizes=None, parity=None,
                 explain=None).write(folder)
    return weights, folder


def _verified(folder: Path) -> bool:
    """A cached artifact folder that this kit's runtime still reads (an older card schema is rebuilt)."""
    try:
        verify_artifact(folder)
    except ArtifactError:
        return False
    return True


def anchors_python(root: Path) -> Path | None:
    """The bench-anchors venv's python, where `make bench-anchors` installed it."""
    venv = root / ANCHORS_VENV
    return venv / "bin" / "python" if (venv / ".installed").exists() else None


def anchor_folder(root: Path, fp32: Path, source: Path, max_length: int) -> Path:
    """A Hugging Face-style folder for fastembed and Optimum: the kit's fp32 ONNX export with the
    source's tokenizer and config files (linked), its tokenizer truncating where the kit does."""
    import json

    folder = cache_dir(root) / f"anchor-{fp32.parent.name}-{fp32.name}"
    folder.mkdir(exist_ok=True)
    links = {"model.onnx": fp32 / ModelCard.read(fp32).model_file}
    links.update({p.name: p for p in source.iterdir() if p.suffix in (".json", ".txt") and p.name != "tokenizer_config.json"})
    for name, target in links.items():
        link = folder / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target.resolve())
    config = json.loads((source / "tokenizer_config.json").read_text()) if (source / "tokenizer_config.json").exists() else {}
    config["model_max_length"] = max_length
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    return folder


def variants_for(manifest, name: str, threads: int, anchors: bool = True, log=print) -> list[Variant]:
    """The variants measured for one model; KIT also at 1 thread (Lambda sizes up to 1769 MB);
    for an embedding model, the anchors too where their venv is installed."""
    root = manifest.root
    spec = manifest.get(name)
    folder = artifact_dir(root, spec.name, spec.version)
    if not (folder / CARD_FILE).exists():
        raise BenchError(f"no artifact for {name!r} at {folder}; run `maas build {name}` first")
    card = ModelCard.read(folder)
    if spec.task == "embedding":
        fp32 = _fp32_sibling(manifest, spec)
        if fp32 is None:
            raise BenchError(f"no fp32 ONNX artifact (quantization = 'none') built from {spec.source.package!r}")
        torch_dir = str(spec.source.resolve(root))
        extra = {"max_sequence_length": card.inputs.max_sequence_length}
    elif spec.task == "image-classification" and getattr(spec.source, "recipe", None) == "digits":
        weights, fp32 = digits_baseline(root, card)
        torch_dir, extra = str(weights), {}
    else:
        raise BenchError(f"no baseline known for model {name!r} ({spec.task})")
    common = dict(model=spec.name, task=spec.task)
    out = [
        Variant(role=KIT, kind="handler", dir=str(folder), threads=threads, **common),
        Variant(role=RUNTIME, kind="runtime", dir=str(folder), threads=threads, **common),
        Variant(role=FP32, kind="runtime", dir=str(fp32), threads=threads, **common),
        Variant(role=TORCH, kind="torch", dir=torch_dir, threads=threads, extra=extra, **common),
    ]
    if threads > 1:
        out.append(Variant(role=KIT, kind="handler", dir=str(folder), threads=1, **common))
    if spec.task == "embedding" and anchors:
        python = anchors_python(root)
        if python is None:
            log(f"  anchors skipped ({', '.join(ANCHORS)}): their venv is not installed; run `{ANCHORS_HOW}`")
        else:
            shared = anchor_folder(root, Path(fp32), Path(torch_dir), card.inputs.max_sequence_length)
            extra = {**extra, "dimensions": card.outputs.dimensions}
            for role, where in ((ST, torch_dir), (FASTEMBED, str(shared)), (OPTIMUM, str(shared))):
                out.append(Variant(role=role, kind=role, dir=where, threads=threads, extra=extra, python=str(python), **common))
    return out


def _fp32_sibling(manifest, spec) -> Path | None:
    """The manifest's unquantized build of the same source (minilm-gpu for minilm), if built."""
    for other in manifest.models:
        same_source = getattr(other.source, "package", None) == getattr(spec.source, "package", None)
        if other.name != spec.name and same_source and other.optimization.quantization == "none":
            folder = artifact_dir(manifest.root, other.name, other.version)
            if (folder / CARD_FILE).exists():
                return folder
    return None
