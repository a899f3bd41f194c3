"""The build pipeline: export -> optimize -> prune -> quantize -> verify parity -> package.

Each step is a small function in its own module; this one sequences them, caches the
result by a content hash of everything that shapes it, and writes the artifact folder
build/<name>/<version>/ atomically (a failed build never replaces a good artifact).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx

from ..manifest import Manifest, ModelSpec
from ..paths import BUILD_DIR, artifact_dir
from . import parity, prune, quantize
from .export import ExportError, export
from .optimize import optimize_graph

MODEL_FILE = "model.onnx"
CARD_SCHEMA_VERSION = 1
TOOLS = ("torch", "transformers", "onnx", "onnxruntime", "tokenizers", "numpy", "scikit-learn")
_CODE_DIRS = ("maas/builder", "maas/recipes", "shared/maas_runtime")
_REPO = Path(__file__).resolve().parents[2]


class BuildError(RuntimeError):
    """A model could not be built, or missed its parity or size threshold."""


@dataclass
class BuildResult:
    name: str
    version: str
    folder: Path
    card: dict
    reused: bool
    seconds: float

    def summary(self) -> str:
        q = self.card["optimization"]["quantization"]
        figures = {k: v for k, v in self.card["parity"].items() if isinstance(v, float)}
        sizes = self.card["sizes"]
        state = "reused" if self.reused else f"built in {self.seconds:.1f}s"
        shown = ", ".join(f"{k} {v:g}" for k, v in figures.items())
        return (
            f"{self.name} {self.version}: {state}; {q['chosen']}; "
            f"{sizes['optimized_bytes'] / 1e6:.1f} MB ({sizes['ratio']:.1%} of fp32); {shown}"
        )


def _log(name: str, message: str) -> None:
    print(f"[{name}] {message}", file=sys.stderr, flush=True)


def tool_versions() -> dict:
    versions = {"python": platform.python_version()}
    for tool in TOOLS:
        try:
            versions[tool] = metadata.version(tool)
        except metadata.PackageNotFoundError:
            versions[tool] = None
    return versions


def _hash_tree(digest, folder: Path) -> None:
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(folder)).encode())
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)


def cache_key(spec: ModelSpec, root: Path) -> str:
    """Everything that shapes the artifact: source bytes, settings, pipeline code, tool versions."""
    digest = hashlib.sha256()
    digest.update(json.dumps(spec.settings, sort_keys=True, default=str).encode())
    digest.update(json.dumps(tool_versions(), sort_keys=True).encode())
    for code_dir in _CODE_DIRS:
        _hash_tree(digest, _REPO / code_dir)
    if spec.source.type != "recipe":
        source = spec.source.resolve(root)
        if source.is_dir():
            _hash_tree(digest, source)
        elif source.is_file():
            digest.update(source.read_bytes())
        if spec.source.tokenizer:
            tok = Path(spec.source.tokenizer)
            digest.update((tok if tok.is_absolute() else root / tok).read_bytes())
    return digest.hexdigest()


def _files_entry(folder: Path) -> dict:
    from maas_runtime import sha256_of

    return {
        p.name: {"sha256": sha256_of(p), "bytes": p.stat().st_size}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != "card.json"
    }


def _write_card(folder: Path, card: dict) -> None:
    card["files"] = _files_entry(folder)
    (folder / "card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _base_card(spec: ModelSpec, exported) -> dict:
    return {
        "schema_version": CARD_SCHEMA_VERSION,
        "name": spec.name,
        "version": spec.version,
        "task": spec.task,
        "target": spec.target,
        "description": spec.description,
        "model_file": MODEL_FILE,
        "inputs": exported.inputs,
        "outputs": exported.outputs,
        "labels": exported.outputs.get("labels"),
        "serving": {"max_batch": spec.serving.max_batch, "max_sequence_length": spec.serving.max_sequence_length},
    }


def _stage(folder: Path, model_file: Path, exported, card: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_file, folder / MODEL_FILE)
    for name, path in exported.extra_files.items():
        shutil.copyfile(path, folder / name)
    _write_card(folder, dict(card))


def _latency_ms(model, sample) -> float:
    """Median batch-1 latency through the runtime, for the card (not a benchmark)."""
    for _ in range(3):
        model.predict([sample])
    times = []
    for _ in range(20):
        started = time.perf_counter()
        model.predict([sample])
        times.append(time.perf_counter() - started)
    return round(float(np.median(times)) * 1000, 3)


def _evaluate(spec: ModelSpec, folder: Path, exported) -> tuple[parity.ParityResult, float]:
    from maas_runtime import Model
    from maas_runtime.session import drop_sessions

    model = Model(folder)
    try:
        served = parity.served_outputs(model, exported.eval_inputs)
        result = parity.measure(spec, served, exported.reference, exported.eval_labels)
        sample = exported.eval_inputs[len(exported.eval_inputs) // 2] if spec.is_text else exported.eval_inputs[0]
        return result, _latency_ms(model, sample)
    finally:
        del model
        drop_sessions()


def _reusable(folder: Path, key: str) -> dict | None:
    from maas_runtime import ArtifactError, verify_artifact

    try:
        card = verify_artifact(folder)
    except ArtifactError:
        return None
    return card if card.get("build", {}).get("cache_key") == key else None


def build_model(manifest: Manifest, spec: ModelSpec, *, force: bool = False) -> BuildResult:
    started = time.perf_counter()
    root = manifest.root
    out = artifact_dir(root, spec.name, spec.version)
    key = cache_key(spec, root)
    if not force and (card := _reusable(out, key)) is not None:
        _log(spec.name, f"unchanged (cache key {key[:12]}): reusing {out.relative_to(root)}")
        return BuildResult(spec.name, spec.version, out, card, True, time.perf_counter() - started)

    work_root = root / BUILD_DIR / ".work"
    work_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{spec.name}-", dir=work_root) as tmp:
        work = Path(tmp)

        def step(label: str):
            _log(spec.name, label)
            return time.perf_counter()

        t = step(f"export from {spec.source.type} source")
        try:
            exported = export(spec, root, work)
        except ExportError as exc:
            raise BuildError(str(exc)) from None
        fp32_bytes = exported.onnx_path.stat().st_size
        _log(spec.name, f"  exported fp32 graph: {fp32_bytes / 1e6:.1f} MB in {time.perf_counter() - t:.1f}s")

        t = step("graph optimization")
        model_folder = spec.source.resolve(root) if spec.source.type == "huggingface" else None
        optimized = work / "optimized.onnx"
        graph_info = optimize_graph(exported.onnx_path, optimized, task=spec.task, model_folder=model_folder)
        _log(spec.name, f"  {graph_info['method']} in {time.perf_counter() - t:.1f}s")

        t = step(f"magnitude pruning to {spec.optimization.pruning_sparsity:.0%}")
        graph = onnx.load(str(optimized))
        pruning = prune.prune(graph, spec.optimization.pruning_sparsity)
        pruned = work / "pruned.onnx"
        onnx.save(graph, str(pruned))
        del graph
        _log(spec.name, f"  sparsity achieved {pruning['achieved']:.1%} over {pruning['weight_matrices']} weight matrices")

        base = _base_card(spec, exported)
        schemes = quantize.schemes_for(spec.optimization.quantization)
        candidates: list[tuple[dict, Path]] = []
        if schemes:
            prepared = work / "prepared.onnx"
            quantize.preprocess(pruned, prepared)
        else:
            candidates.append(({"name": "none", "method": "fp32, no quantization"}, pruned))
        for i, scheme in enumerate(schemes, 1):
            t = step(f"quantize candidate {i}/{len(schemes)}: {scheme.name}")
            target = work / f"{scheme.name}.onnx"
            try:
                quantize.quantize(scheme, prepared, target)
            except Exception as exc:  # a scheme the graph cannot take is a measured outcome, not a crash
                _log(spec.name, f"  {scheme.name} failed: {exc.__class__.__name__}: {str(exc)[:200]}")
                continue
            candidates.append((scheme.describe(), target))

        measured = []
        size_cap = spec.optimization.max_size_ratio
        for description, file in candidates:
            t = step(f"parity of {description['name']} on the evaluation set")
            stage = work / f"stage-{description['name']}"
            _stage(stage, file, exported, base)
            result, latency = _evaluate(spec, stage, exported)
            size = file.stat().st_size
            entry = {
                **description,
                "bytes": size,
                "size_ratio": round(size / fp32_bytes, 4),
                "batch1_latency_ms": latency,
                "parity": result.figures,
                "passed": result.passed,
                "failures": list(result.failures),
            }
            if size_cap is not None and size / fp32_bytes > size_cap:
                entry["passed"] = False
                entry["failures"].append(f"size {size / fp32_bytes:.1%} of fp32 > allowed {size_cap:.0%}")
            measured.append((entry, stage))
            verdict = "meets the bar" if entry["passed"] else "; ".join(entry["failures"])
            _log(spec.name, f"  {entry['size_ratio']:.1%} of fp32, {latency} ms batch-1, {_short(result.figures)}: {verdict} ({time.perf_counter() - t:.1f}s)")

        passing = [(e, s) for e, s in measured if e["passed"]]
        if not passing:
            best = max(measured, key=lambda m: m[0]["parity"].get("min_cosine", m[0]["parity"].get("optimized_accuracy", 0)))[0] if measured else None
            detail = "; ".join(best["failures"]) if best else "no candidate could be produced"
            raise BuildError(f"{spec.name}: no optimized candidate meets the manifest's thresholds (best: {best['name'] if best else '-'}: {detail})")
        # Smallest passing file wins: size is deterministic, latency on a shared machine is not.
        chosen, stage = min(passing, key=lambda m: (m[0]["bytes"], m[0]["batch1_latency_ms"]))

        card = dict(base)
        card["sizes"] = {
            "fp32_bytes": fp32_bytes,
            "optimized_bytes": chosen["bytes"],
            "ratio": round(chosen["bytes"] / fp32_bytes, 4),
        }
        card["optimization"] = {
            "graph": graph_info,
            "pruning": pruning,
            "quantization": {
                "mode": spec.optimization.quantization,
                "chosen": chosen["name"],
                "reason": "the smallest candidate that meets every parity and size threshold",
                "weight_types": quantize.WEIGHT_TYPE_REASON if schemes else None,
                "candidates": [e for e, _ in measured],
            },
        }
        card["parity"] = {
            **chosen["parity"],
            "threshold": {k: v for k, v in vars(spec.parity).items() if v is not None},
            "passed": True,
            "reference": "fp32 PyTorch original" if spec.source.type != "onnx" else "the supplied fp32 ONNX",
            "eval_set": exported.description,
        }
        card["deploy"] = {
            "lambda": vars(spec.lambda_settings),
            "sagemaker": vars(spec.sagemaker) if spec.sagemaker else None,
        }
        card["build"] = {
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "cache_key": key,
            "seconds": round(time.perf_counter() - started, 1),
            "tools": tool_versions(),
            "platform": f"{platform.system()} {platform.machine()}",
        }
        _write_card(stage, card)

        # Replace the old artifact only now that the new one is complete and verified.
        out.parent.mkdir(parents=True, exist_ok=True)
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            out.rename(old)
        shutil.move(str(stage), str(out))
        shutil.rmtree(old, ignore_errors=True)

    _log(spec.name, f"done: {out.relative_to(root)}")
    return BuildResult(spec.name, spec.version, out, card, False, time.perf_counter() - started)


def _short(figures: dict) -> str:
    keys = ("min_cosine", "mean_cosine", "optimized_accuracy", "fp32_accuracy")
    return ", ".join(f"{k} {figures[k]:.4f}" for k in keys if k in figures)


def write_catalog(manifest: Manifest) -> Path:
    """build/catalog.json: every built model's card, the source of GET /models."""
    from maas_runtime import ArtifactError, read_card

    models = []
    for spec in manifest.models:
        try:
            card = read_card(artifact_dir(manifest.root, spec.name, spec.version))
        except ArtifactError:
            continue
        models.append(
            {
                "name": spec.name,
                "version": spec.version,
                "task": spec.task,
                "target": spec.target,
                "description": spec.description,
                "card": card,
            }
        )
    path = manifest.root / BUILD_DIR / "catalog.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"models": models}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def build_models(manifest: Manifest, names=None, *, force: bool = False) -> list[BuildResult]:
    results = []
    try:
        for spec in manifest.select(names):
            results.append(build_model(manifest, spec, force=force))
    finally:
        write_catalog(manifest)
    return results
