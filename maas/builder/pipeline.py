"""The build pipeline: export -> optimize -> prune -> quantize -> verify parity -> package.

Each step is a small function in its own module, and what differs by task lives in the task's
build half (maas.builder.tasks); this module sequences the steps, caches the result by a content
hash of everything that shapes the artifact, and writes the artifact folder build/<name>/<version>/
atomically (a failed build never replaces a good artifact).
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
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

import onnx

from maas_runtime import MODEL_FILE, ArtifactError, Model, ModelCard, file_entries, sha256_of, verify_artifact
from maas_runtime.card import (
    BuildInfo,
    OptimizationReport,
    ParityReport,
    QuantizationReport,
    ServingSpec,
    Sizes,
)

from ..manifest import Manifest, ModelSpec
from ..paths import BUILD_DIR, CATALOG_FILE, artifact_dir, tree_hash
from . import prune, quantize, selection, smoothquant
from .export import ExportError, Exported, export
from .optimize import optimize_graph
from .tasks import ParityResult, build_task

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
    card: ModelCard
    reused: bool
    seconds: float

    def summary(self) -> str:
        card = self.card
        state = "reused" if self.reused else f"built in {self.seconds:.1f}s"
        shown = ", ".join(f"{k} {v:g}" for k, v in card.parity.figures.items())
        return (
            f"{self.name} {self.version}: {state}; {card.optimization.quantization.chosen}; "
            f"{card.sizes.optimized_bytes / 1e6:.1f} MB ({card.sizes.ratio:.1%} of fp32); {shown}"
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


def cache_key(spec: ModelSpec, root: Path) -> str:
    """What shapes the artifact: source bytes, artifact settings, pipeline code, tool versions.

    Deploy-only settings (memory, concurrency, architecture, instance type, target) are left
    out (`ModelSpec.artifact_settings`), so changing them reuses the built artifact.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(spec.artifact_settings(), sort_keys=True).encode())
    digest.update(json.dumps(tool_versions(), sort_keys=True).encode())
    for code_dir in _CODE_DIRS:
        digest.update(tree_hash(_REPO / code_dir).encode())
    if spec.source.type != "recipe":
        source = spec.source.resolve(root)
        if source.is_dir():
            digest.update(tree_hash(source).encode())
        elif source.is_file():
            digest.update(sha256_of(source).encode())
        tokenizer = spec.source.tokenizer_path(root)
        if tokenizer is not None:
            digest.update(sha256_of(tokenizer).encode())
    return digest.hexdigest()


def _stage(folder: Path, model_file: Path, exported: Exported, spec: ModelSpec, explain=None,
           pad_to_multiple_of: int = 1) -> ModelCard:
    """An artifact folder for one candidate, with the card the runtime needs to load it.
    `pad_to_multiple_of`: what the candidate's graph needs (quantize.Scheme.pad_to_multiple_of),
    for text inputs whose maximum length it divides."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_file, folder / MODEL_FILE)
    for name, path in exported.extra_files.items():
        shutil.copyfile(path, folder / name)
    inputs = exported.inputs
    if inputs.type == "text" and inputs.max_sequence_length % pad_to_multiple_of == 0:
        inputs = replace(inputs, pad_to_multiple_of=pad_to_multiple_of)
    card = ModelCard(
        name=spec.name,
        version=spec.version,
        task=spec.task,
        model_file=MODEL_FILE,
        inputs=inputs,
        outputs=exported.outputs,
        serving=ServingSpec(max_batch=spec.serving.max_batch),
        files=file_entries(folder),
        explain=explain,
    )
    card.write(folder)
    return card


def _evaluate(spec: ModelSpec, folder: Path, exported: Exported) -> tuple[ParityResult, dict, float]:
    """Parity, latency and batch dependence of a staged candidate, measured through the runtime
    exactly as it will be served."""
    from maas_runtime.session import drop_sessions

    task = build_task(spec.task)
    model = Model(folder)
    try:
        served = task.served(model, exported.eval_inputs)
        result = task.measure(spec.parity, served, exported.reference, exported.eval_labels)
        return result, selection.latency(model, exported.eval_inputs), selection.batch_dependence(task, model, exported.eval_inputs)
    finally:
        del model
        drop_sessions()


def _side_by_side(spec: ModelSpec, passing: list, inputs: list) -> None:
    """Re-time the passing candidates against each other (selection.side_by_side) and record those
    figures as their latency, which the choice ranks and the card's latency_workload describes (a
    lone passing candidate too, so that its figures are taken the way the card says)."""
    from maas_runtime.session import drop_sessions

    t = time.perf_counter()
    models = [Model(stage) for _, stage, _, _ in passing]
    try:
        figures = selection.side_by_side(models, inputs)
    finally:
        del models
        drop_sessions()
    for (entry, *_), latency in zip(passing, figures):
        entry["latency"] = latency
    shown = ", ".join(f"{e['name']} {e['latency']['mixed_batch_ms']} ms" for e, *_ in passing)
    _log(spec.name, f"  side by side ({selection.ROUNDS_SIDE_BY_SIDE} interleaved rounds, mixed batch): {shown} "
                    f"({time.perf_counter() - t:.1f}s)")


def _reusable(folder: Path, key: str) -> ModelCard | None:
    try:
        card = verify_artifact(folder)
    except ArtifactError:
        return None
    return card if card.build is not None and card.build.cache_key == key else None


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
        try:
            explain, explain_files = build_task(spec.task).explain_card(spec, exported, work)
        except ValueError as exc:
            raise BuildError(f"{spec.name}: {exc}") from None
        exported.extra_files.update(explain_files)

        graphs = {"standard": exported.onnx_path}
        if exported.attention_export is not None:
            graphs["fused"] = exported.attention_export
        model_folder = spec.source.resolve(root) if spec.source.type == "huggingface" else None
        prepared: dict[str, Path] = {}
        infos, prunings = {}, {}
        for graph_name, source in graphs.items():
            t = step(f"graph optimization ({graph_name} graph)")
            optimized = work / f"optimized-{graph_name}.onnx"
            info = optimize_graph(source, optimized, model_folder=model_folder, fused_attention=graph_name == "fused")
            infos[graph_name] = info
            _log(spec.name, f"  {info['method']} in {time.perf_counter() - t:.1f}s: {info.get('fused', '')}")

            t = step(f"magnitude pruning to {spec.optimization.pruning_sparsity:.0%} ({graph_name} graph)")
            graph = onnx.load(str(optimized))
            pruned_info = prune.prune(graph, spec.optimization.pruning_sparsity)
            prunings[graph_name] = pruned_info
            pruned = work / f"pruned-{graph_name}.onnx"
            onnx.save(graph, str(pruned))
            del graph
            _log(spec.name, f"  sparsity achieved {pruned_info['achieved']:.1%} over {pruned_info['weight_matrices']} weight matrices")
            prepared[graph_name] = pruned
        graph_info, pruning = infos["standard"], prunings["standard"]
        if "fused" in infos:
            graph_info = {**graph_info, "fused_variant": infos["fused"]}

        calibration = build_task(spec.task).calibration(spec, exported)
        series = quantize.series_for(spec.optimization.quantization, "fused" in graphs, calibration is not None)
        if not series:
            series = [[None]]  # fp32: the pruned standard graph as it is
        for graph_name in sorted({s.graph for group in series for s in group if s is not None}):
            quantize.preprocess(prepared[graph_name], work / f"prepared-{graph_name}.onnx")
            prepared[graph_name] = work / f"prepared-{graph_name}.onnx"
        calibration_report, ranking = None, []
        smoothed_graph = next((s.graph for group in series for s in group if s is not None and s.smoothed), None)
        if smoothed_graph is not None:
            t = step("SmoothQuant: activation ranges and node sensitivity on the calibration set")
            graph_name = smoothed_graph
            feeds, calibration_words = calibration
            smoothed = work / f"smoothed-{graph_name}.onnx"
            observed = smoothquant.observe(prepared[graph_name], feeds)
            smoothing, scales = smoothquant.smooth(prepared[graph_name], smoothed, observed)
            ranking = smoothquant.sensitivity(smoothed, observed, scales)
            del observed
            prepared["smoothed"] = smoothed
            calibration_report = {
                "inputs": calibration_words,
                "smoothing": smoothing,
                "sensitivity": "relative output error of each MatMul under dynamic u8u8 on the calibration set (maas.builder.smoothquant)",
                "most_sensitive": [{"node": n, "relative_error": round(e, 5)} for n, e in ranking[: quantize.MAX_EXCLUDED]],
            }
            _log(spec.name, f"  smoothed {smoothing['activations_smoothed']} activations, ranked {len(ranking)} MatMuls in {time.perf_counter() - t:.1f}s")
        fp32_nodes = tuple(n for n, _ in ranking)

        measured = []
        size_cap = spec.optimization.max_size_ratio
        _, _, workload_words = selection.workload(exported.eval_inputs, spec.serving.max_batch)
        for group in series:
            for scheme in group:
                if scheme is None:
                    description, file = {"name": "none", "graph": "standard", "batch_invariant": True, "method": "fp32, no quantization"}, prepared["standard"]
                else:
                    step(f"quantize candidate {len(measured) + 1}: {scheme.name}")
                    file = work / f"{scheme.name}.onnx"
                    source = prepared["smoothed" if scheme.smoothed else scheme.graph]
                    try:
                        quantize.quantize(scheme, source, file, fp32_nodes)
                    except Exception as exc:  # a scheme the graph cannot take is a measured outcome, not a crash
                        _log(spec.name, f"  {scheme.name} failed: {exc.__class__.__name__}: {str(exc)[:200]}")
                        break
                    passing_sizes = [m[0]["bytes"] for m in measured if m[0]["passed"]]
                    if scheme is not group[0] and not selection.could_win(file.stat().st_size, passing_sizes, spec.optimization.prefer):
                        _log(spec.name, f"  {scheme.name}: {file.stat().st_size / fp32_bytes:.1%} of fp32, too large to be chosen "
                                        "beside the passing candidates; its series stops here")
                        break
                    description = scheme.describe()
                    if scheme.smoothed:
                        description["fp32_nodes"] = list(fp32_nodes[: scheme.excluded])
                t = step(f"parity and latency of {description['name']}")
                stage = work / f"stage-{description['name']}"
                staged = _stage(stage, file, exported, spec, explain, scheme.pad_to_multiple_of if scheme else 1)
                result, latency, dependence = _evaluate(spec, stage, exported)
                size = file.stat().st_size
                invariant = dependence <= selection.BATCH_INVARIANCE_ATOL
                if description["batch_invariant"] and not invariant:
                    _log(spec.name, f"  {description['name']}: an input alone differs by {dependence:.3g} from inside its "
                                    "request on this machine: counted batch-dependent")
                entry = {
                    **description,
                    "batch_invariant": description["batch_invariant"] and invariant,
                    "batch_dependence": float(f"{dependence:.3g}"),
                    "bytes": size,
                    "size_ratio": round(size / fp32_bytes, 4),
                    "latency": latency,
                    "parity": result.figures,
                    "passed": result.passed,
                    "failures": list(result.failures),
                }
                if size_cap is not None and size / fp32_bytes > size_cap:
                    entry["passed"] = False
                    entry["failures"].append(f"size {size / fp32_bytes:.1%} of fp32 > allowed {size_cap:.0%}")
                measured.append((entry, stage, staged, result))
                verdict = "meets the bar" if entry["passed"] else "; ".join(entry["failures"])
                shown = ", ".join(f"{k} {v:.4f}" for k, v in list(result.figures.items())[:2])
                _log(spec.name, f"  {entry['size_ratio']:.1%} of fp32, {latency['mixed_batch_ms']} ms mixed batch of {latency['mixed_batch']}, "
                                f"{latency['batch1_ms']} ms batch-1, {shown}: {verdict} ({time.perf_counter() - t:.1f}s)")
                if entry["passed"]:
                    break  # a series stops at its first candidate that meets the bar

        passing = [m for m in measured if m[0]["passed"]]
        if not passing:
            best = max(measured, key=lambda m: m[3].score)[0] if measured else None
            detail = "; ".join(best["failures"]) if best else "no candidate could be produced"
            raise BuildError(f"{spec.name}: no optimized candidate meets the manifest's thresholds (best: {best['name'] if best else '-'}: {detail})")
        _side_by_side(spec, passing, exported.eval_inputs)
        chosen_entry, reason = selection.choose([m[0] for m in passing], spec.optimization.prefer)
        chosen, stage, staged, result = next(m for m in passing if m[0] is chosen_entry)
        _log(spec.name, f"  chose {chosen['name']}: {reason}")

        card = staged.replace(
            sizes=Sizes(fp32_bytes=fp32_bytes, optimized_bytes=chosen["bytes"], ratio=round(chosen["bytes"] / fp32_bytes, 4)),
            optimization=OptimizationReport(
                graph=graph_info,
                pruning=pruning,
                quantization=QuantizationReport(
                    mode=spec.optimization.quantization,
                    chosen=chosen["name"],
                    reason=reason,
                    weight_types=quantize.WEIGHT_TYPE_REASON if chosen["name"] != "none" else None,
                    candidates=tuple(e for e, *_ in measured),
                    prefer=spec.optimization.prefer,
                    latency_workload=workload_words,
                    calibration=calibration_report,
                ),
            ),
            parity=ParityReport(
                metric=result.metric,
                samples=result.samples,
                figures=result.figures,
                threshold=spec.parity.model_dump(exclude_none=True),
                passed=True,
                reference=exported.reference_kind,
                eval_set=exported.description,
            ),
            build=BuildInfo(
                date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                cache_key=key,
                seconds=round(time.perf_counter() - started, 1),
                tools=tool_versions(),
                platform=f"{platform.system()} {platform.machine()}",
            ),
        )
        card.write(stage)

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


def write_catalog(manifest: Manifest) -> Path:
    """build/catalog.json: every built version's card with its deployment target and whether it is
    the model's live version, the source of GET /models."""
    models = []
    for spec in manifest.artifacts():
        try:
            card = ModelCard.read(artifact_dir(manifest.root, spec.name, spec.version))
        except ArtifactError:
            continue
        models.append({"target": spec.target, "description": spec.description, "live": spec.live, "card": card.to_dict()})
    path = manifest.root / BUILD_DIR / CATALOG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"models": models}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def build_models(manifest: Manifest, names=None, *, force: bool = False, sign_key: str | None = None) -> list[BuildResult]:
    """Build (or reuse) each model, then sign its card where a key is given (`sign_key`, else the
    manifest's signing.key). The key is checked before anything is built."""
    from .signing import SigningError, manifest_signer, sign_models

    signer = None
    if sign_key or manifest.signing.key:
        try:
            signer = manifest_signer(manifest, sign_key)
        except SigningError as exc:
            raise BuildError(str(exc)) from None
    results = []
    try:
        for spec in manifest.artifacts(names):
            results.append(build_model(manifest, spec, force=force))
    finally:
        write_catalog(manifest)
    if signer is not None:
        try:
            for signed in sign_models(manifest, sorted({r.name for r in results}), signer, force=False):
                if signed.resigned:
                    _log(signed.name, f"signed card.json with key {signed.key_id[:19]}...")
        except SigningError as exc:
            raise BuildError(f"built, but not signed: {exc}; `maas sign` signs again without rebuilding") from None
    return results
