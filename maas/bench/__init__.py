"""`maas bench`: cold start, latency, throughput, memory, size, roofline and cost, side by side.

For each model: the optimized artifact through the real Lambda handler, the fp32 ONNX model, and
the PyTorch baseline a user would otherwise deploy, measured in one run on this machine, with
ratios taken within the run. Every measured variant runs in a fresh worker process (worker.py);
torch is imported only by the baseline's workers.
"""

from __future__ import annotations

import platform
import shutil
import time
from pathlib import Path

from maas_runtime import ModelCard

from . import cost as cost_model
from .coldstart import measure_coldstarts
from .explain import bench_explanations, render_explain, update_section
from .footprint import BASELINE_PACKAGES, KIT_PACKAGES, baseline_weight_files, deployed_bytes, stack_bytes
from .latency import case_key, measure_latency
from .roofline import machine_peak, matmul_flops
from .variants import ANCHORS, FASTEMBED, FP32, KIT, LABELS, ST, TORCH, BenchError, default_threads, variants_for
from .workload import MIXED, describe, workload

__all__ = ["BenchError", "run_bench"]

TARGETS = {
    "cold_start_ratio": 1 / 12,
    "warm_p50_short_ratio": 1 / 4,
    "throughput_b32_ratio": 2.5,
    "throughput_b32_vs_anchor": 1.0,
    "warm_p50_vs_anchor": 1.0,
    "footprint_ratio": 1 / 6,
    "handler_overhead_ms": 1.0,
}
"""Judged on every input set (`short` and `mixed` for text models); the anchors' rows compare the
handler with each CPU embedding stack a user could pick instead, in the same run."""


def run_bench(
    manifest,
    models: list[str] | None = None,
    quick: bool = False,
    out_dir: Path | None = None,
    docs_dir: Path | None = None,
    markdown: Path | None = None,
    threads: int | None = None,
    log=print,
    rounds: int | None = None,
) -> dict:
    """Measure, then write results.json + PNG plots into out_dir (and docs_dir) and BENCHMARKS.md.
    `rounds` (default 7 cold starts, 5 latency rounds; 1 with `quick`) trades spread for time."""
    from .report import write_report

    root = manifest.root
    threads = threads or default_threads()
    names = list(models) if models else [m.name for m in manifest.models if m.target == "lambda"]
    started = time.time()
    results = {
        "schema_version": 1,
        "quick": quick,
        "rounds": rounds,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "machine": machine_info(threads),
        "prices": cost_model.load_prices(),
        "targets": TARGETS,
        "models": {},
    }
    log(f"measuring matmul peak with {threads} and 1 thread(s)")
    peaks = {t: machine_peak(t, 3 if quick else 10) for t in sorted({1, threads})}
    results["machine"]["matmul_peak"] = {str(t): p for t, p in peaks.items()}
    for name in names:
        log(f"[{name}]")
        results["models"][name] = bench_model(manifest, name, threads, quick, peaks, log, rounds)
    log("explanations")
    results["explain"] = bench_explanations(manifest, models, 3 if quick else 15, log=log)
    results["elapsed_s"] = time.time() - started
    out_dir = Path(out_dir or root / "bench-results")
    write_report(results, out_dir, docs_dir=docs_dir, markdown=markdown)
    if markdown is not None:
        update_section(Path(markdown), render_explain(results["explain"], results["machine"]))
    return results


def bench_model(manifest, name: str, threads: int, quick: bool, peaks: dict, log=print, rounds: int | None = None) -> dict:
    root = manifest.root
    variants = variants_for(manifest, name, threads, log=log)
    by_role = {(v.role, v.threads): v for v in variants}
    kit = by_role[(KIT, threads)]
    card = ModelCard.read(kit.dir)
    sets = workload(card, Path(kit.dir), quick)
    first_set = next(iter(sets))
    first_inputs = sets[first_set][:1]

    cold_variants = [v for v in variants if v.threads == threads and v.role not in ANCHORS]
    log(f"  cold starts: {', '.join(v.role for v in cold_variants)}")
    coldstart = measure_coldstarts(cold_variants, root, first_inputs, repeats=rounds or (1 if quick else 7), log=log)

    log("  warm latency and throughput")
    latency = measure_latency(variants, root, sets, threads, quick, log=log, rounds=rounds)

    spec = manifest.get(name)
    kit_files = [Path(kit.dir) / f for f in card.files]
    fp32 = by_role[(FP32, threads)]
    fp32_card = ModelCard.read(fp32.dir)
    torch_dir = Path(by_role[(TORCH, threads)].dir)
    baseline_files = baseline_weight_files(torch_dir) if torch_dir.is_dir() else [torch_dir]
    footprint = {
        "kit": stack_bytes(
            KIT_PACKAGES, kit_files, [root / "shared" / "maas_runtime", root / "shared" / "maas_api", root / "functions" / "model"]
        ),
        "baseline": stack_bytes(BASELINE_PACKAGES, baseline_files),
        "deployed": deployed_bytes(spec.lambda_settings.architecture, root, kit_files, log=log),
        "model_files": {
            "optimized_bytes": sum(p.stat().st_size for p in kit_files),
            "fp32_onnx_bytes": sum(f.bytes for f in fp32_card.files.values()),
            "baseline_weights_bytes": sum(p.stat().st_size for p in baseline_files),
        },
    }

    roofline = measure_roofline(Path(fp32.dir) / fp32_card.model_file, card, Path(kit.dir), sets, latency, threads, peaks)
    costs = model_costs(latency, first_set, threads, spec)
    out = {
        "name": name,
        "version": card.version,
        "task": card.task,
        "quantization": card.optimization.quantization.chosen if card.optimization else None,
        "threads": threads,
        "variants": {v.key: {"role": v.role, "label": v.label, "threads": v.threads, "dir": v.dir} for v in variants},
        "inputs": describe(card, Path(kit.dir), sets),
        "first_set": first_set,
        "coldstart": coldstart,
        "latency": latency,
        "footprint": footprint,
        "roofline": roofline,
        "cost": costs,
    }
    if card.optimization is not None:
        out["candidates"] = [dict(c) for c in card.optimization.quantization.candidates]
    out["targets"] = check_targets(out, threads)
    return out


def p50(latency: dict, case: str, key: str) -> float | None:
    entry = latency["cases"].get(case, {}).get(key)
    return entry["p50"] if entry else None


def measure_roofline(fp32_onnx: Path, card: ModelCard, kit_dir: Path, sets: dict, latency: dict, threads: int, peaks: dict) -> dict:
    from .workload import cycle

    out = {"peak_gflops": peaks[threads]["best_gflops"], "peak_detail": peaks[threads], "cases": {}}
    for set_name, items in sets.items():
        if set_name == MIXED:  # its requests run length-aware: no one sequence length to model
            continue
        batch = cycle(items, 32)
        if card.inputs.type == "text":
            from .workload import token_counts

            length = max(token_counts(kit_dir / card.inputs.tokenizer, batch))
            length = min(length, card.inputs.max_sequence_length)
            shapes = {n: [32, length] for n in ("input_ids", "attention_mask", "token_type_ids")}
        else:
            length = None
            shapes = {"pixels": [32, 64]}
        flops = matmul_flops(fp32_onnx, shapes)
        case = case_key(set_name, 32)
        achieved = {}
        for role, path in ((KIT, "session"), (KIT, "handler"), (FP32, "predict"), (TORCH, "torch")):
            t = p50(latency, case, f"{role}@{threads}t:{path}")
            if t:
                gflops = flops / t / 1e9
                achieved[f"{role}:{path}"] = {"seconds": t, "gflops": gflops, "fraction_of_peak": gflops / out["peak_gflops"]}
        out["cases"][case] = {"sequence_length": length, "matmul_flops": flops, "achieved": achieved}
    return out


def model_costs(latency: dict, first_set: str, threads: int, spec) -> dict:
    prices = cost_model.load_prices()
    peak_rss = max(v["peak_rss_bytes"] for k, v in latency["rss"].items() if f"/{KIT}@" in k)
    out = {"peak_rss_bytes": peak_rss, "tables": {}}
    for case in (case_key(first_set, 1), case_key(first_set, 32)) + (
        (case_key("long", 1),) if "long/b1" in latency["cases"] else ()
    ):
        by_threads = {1: p50(latency, case, f"{KIT}@1t:handler")}
        if threads > 1:
            by_threads[threads] = p50(latency, case, f"{KIT}@{threads}t:handler")
        if any(v is None for v in by_threads.values()):
            continue
        rows = cost_model.cost_table(by_threads, peak_rss, prices)
        best = {arch: cost_model.recommend(rows, arch) for arch in cost_model.ARCHITECTURES}
        g5 = prices["sagemaker"]["ml.g5.xlarge"]["per_hour"]
        out["tables"][case] = {
            "latency_by_threads_s": {str(k): v for k, v in by_threads.items()},
            "rows": [r.as_dict() for r in rows],
            "recommended": {arch: (r.as_dict() if r else None) for arch, r in best.items()},
            "g5_breakeven_rps": {
                arch: cost_model.breakeven_requests_per_second(r.usd_per_million[arch], g5) if r else None
                for arch, r in best.items()
            },
        }
    first = out["tables"].get(case_key(first_set, 1))
    rec = first["recommended"]["arm64"] if first else None
    out["recommended_memory_mb"] = rec["memory_mb"] if rec else None
    out["manifest_memory_mb"] = spec.lambda_settings.memory_mb if spec.lambda_settings else None
    lambda_usd = rec["usd_per_million"]["arm64"] if rec else None
    out["traffic"] = [row.as_dict() for row in cost_model.gpu_pattern_costs(prices, lambda_usd)]
    return out


def check_targets(m: dict, threads: int) -> list[dict]:
    """The issue's targets, set for the optimized minilm; other models get the same ratios, unjudged."""
    lat, first = m["latency"], m["first_set"]
    judged = m["task"] == "embedding"
    cold = m["coldstart"]
    kit_key = f"{m['name']}/{KIT}@{threads}t"
    torch_key = f"{m['name']}/{TORCH}@{threads}t"
    rows = []

    def add(name, value, target, better, how):
        met = None if value is None or not judged else (value <= target if better == "lower" else value >= target)
        rows.append({"target": name, "value": value, "goal": target, "better": better, "met": met, "how": how})

    cs = cold[kit_key]["phases"]["total_s"]["p50"] / cold[torch_key]["phases"]["total_s"]["p50"]
    add("cold_start_ratio", cs, TARGETS["cold_start_ratio"], "lower", "p50 spawn-to-first-answer, handler / PyTorch")
    text_sets = [x for x in ("short", "mixed") if case_key(x, 1) in lat["cases"]] or [first]
    handler = f"{KIT}@{threads}t:handler"
    anchors = [a for a in ANCHORS if any(f"{a}@{threads}t:encode" in c for c in lat["cases"].values())]
    for set_name in text_sets:
        b1, b32 = case_key(set_name, 1), case_key(set_name, 32)
        h, t = p50(lat, b1, handler), p50(lat, b1, f"{TORCH}@{threads}t:torch")
        add(f"warm_p50_{set_name}_ratio", h / t if h and t else None, TARGETS["warm_p50_short_ratio"], "lower", f"p50 {b1}, handler / PyTorch")
        for anchor in anchors:
            a = p50(lat, b1, f"{anchor}@{threads}t:encode")
            add(f"warm_p50_{set_name}_vs_{anchor}", h / a if h and a else None, TARGETS["warm_p50_vs_anchor"], "lower",
                f"p50 {b1}, handler / {LABELS[anchor]}")
        h, t = p50(lat, b32, handler), p50(lat, b32, f"{TORCH}@{threads}t:torch")
        add(f"throughput_b32_{set_name}_ratio", t / h if h and t else None, TARGETS["throughput_b32_ratio"], "higher",
            f"items/s at {b32}, handler / PyTorch")
        r = p50(lat, b32, f"{KIT}@{threads}t:predict")
        add(f"throughput_b32_{set_name}_ratio_runtime", t / r if r and t else None, TARGETS["throughput_b32_ratio"], "higher",
            f"items/s at {b32}, maas_runtime predict / PyTorch")
        for anchor in anchors:
            a = p50(lat, b32, f"{anchor}@{threads}t:encode")
            # judged against sentence-transformers and fastembed, the stacks users pick; Optimum is shown
            add(f"throughput_b32_{set_name}_vs_{anchor}", a / h if h and a else None, TARGETS["throughput_b32_vs_anchor"], "higher",
                f"items/s at {b32}, handler / {LABELS[anchor]}" + ("" if anchor in (ST, FASTEMBED) else " (shown)"))
    fp = m["footprint"]
    deployed = fp.get("deployed", {})
    if "total_bytes" in deployed:
        add("footprint_ratio", deployed["total_bytes"] / fp["baseline"]["total_closure_bytes"], TARGETS["footprint_ratio"], "lower",
            f"what the kit deploys ({deployed['architecture']} slim layers + handler + model) / what pip installs for the baseline (whole closure + weights)")
    add("footprint_ratio_venv", fp["kit"]["total_bytes"] / fp["baseline"]["total_bytes"], TARGETS["footprint_ratio"], "lower", "named packages as installed in this venv + model files, kit / baseline")
    b1 = case_key(first, 1)
    paired = lat.get("overhead", {}).get(f"{threads}t:{b1}")
    if paired:
        d = paired["differences"]
        add("handler_overhead_ms", d["handler-session"]["p50"] * 1000, TARGETS["handler_overhead_ms"], "lower", f"median of paired per-call differences at {b1}, {threads} threads: handler - bare session.run (tokenization and pooling included in the handler)")
        add("handler_overhead_vs_runtime_ms", d["handler-predict"]["p50"] * 1000, TARGETS["handler_overhead_ms"], "lower", f"median of paired per-call differences at {b1}: handler - maas_runtime predict")
    return rows


def machine_info(threads: int) -> dict:
    import importlib.metadata as md
    import os

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for dist in ("onnxruntime", "torch", "transformers", "tokenizers", "numpy", "aws-lambda-powertools"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "versions": versions,
    }


def copy_artifacts(out_dir: Path, docs_dir: Path) -> None:
    docs_dir.mkdir(parents=True, exist_ok=True)
    for path in Path(out_dir).iterdir():
        if path.suffix in (".json", ".png"):
            shutil.copy2(path, docs_dir / path.name)
