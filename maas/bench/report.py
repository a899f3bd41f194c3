"""BENCHMARKS.md, results.json and the latency-vs-batch plots, from one run's results."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .latency import case_key
from .variants import ANCHORS, ANCHORS_HOW, FP32, KIT, LABELS, RUNTIME, TORCH
from .workload import BATCHES, MIXED, batches_for

PATH_LABELS = {
    "localapi": "HTTP via local API (`maas serve`)",
    "handler": "Lambda handler (in-process event)",
    "predict": "maas_runtime predict",
    "session": "bare ONNX Runtime session.run",
    "torch": "PyTorch eager",
    "encode": "its own encode call",
}


def write_report(results: dict, out_dir: Path, docs_dir: Path | None = None, markdown: Path | None = None) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, m in results["models"].items():
        plot_latency(m, out_dir / f"{name}-latency-vs-batch.png")
        if m["latency"].get("parity"):
            plot_frontier(m, out_dir / f"{name}-frontier.png")
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    targets = [out_dir]
    if docs_dir is not None:
        from . import copy_artifacts

        copy_artifacts(out_dir, Path(docs_dir))
        targets.append(Path(docs_dir))
    if markdown is not None:
        markdown = Path(markdown)
        image_dir = Path(docs_dir) if docs_dir is not None else out_dir
        rel = os.path.relpath(image_dir, markdown.parent)
        kept = _kept_sections(markdown)
        markdown.write_text(render_markdown(results, rel) + kept)


def _kept_sections(markdown: Path) -> str:
    """Sections other tools write into the report (python -m maas.bench.spinning), carried over."""
    from .spinning import SECTION_END, SECTION_START

    text = markdown.read_text(encoding="utf-8") if markdown.is_file() else ""
    if SECTION_START in text and SECTION_END in text:
        return "\n" + SECTION_START + text.split(SECTION_START, 1)[1].split(SECTION_END, 1)[0] + SECTION_END + "\n"
    return ""


def plot_latency(m: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(m["inputs"])
    fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4.5), squeeze=False)
    cases = m["latency"]["cases"]
    for ax, set_name in zip(axes[0], sets):
        keys = sorted({k for b in batches_for(set_name) for k in cases.get(case_key(set_name, b), {})})
        for key in keys:
            xs, ys, lo, hi = [], [], [], []
            for b in batches_for(set_name):
                e = cases.get(case_key(set_name, b), {}).get(key)
                if e:
                    xs.append(b)
                    ys.append(e["p50"] * 1000)
                    lo.append((e["p50"] - e["p25"]) * 1000)
                    hi.append((e["p75"] - e["p50"]) * 1000)
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=_series_label(key))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(list(BATCHES), [str(b) for b in BATCHES])
        ax.set_xlabel("batch size")
        ax.set_ylabel("p50 latency per request (ms), bars p25-p75")
        ax.set_title(f"{m['name']}: {set_name} inputs")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def frontier_points(m: dict) -> list[dict]:
    """One point per build candidate and per served variant: parity (min cosine against fp32
    PyTorch), batch-32 `mixed` throughput, file size. A build candidate's throughput comes from the
    card (`latency.mixed_batch_ms`: the build timed one request of its own mixed-length evaluation
    texts through `Model.predict`, at build time, so it compares candidates with each other more
    than with this run's figures); the chosen one is the kit itself, measured here through the
    handler. A candidate without a latency figure is listed, not plotted."""
    t = m["threads"]
    case = m["latency"]["cases"].get(case_key(MIXED, 32), {})
    parity = m["latency"]["parity"]["variants"]
    sizes = m["footprint"]["model_files"]
    points = []

    def add(label, kind, min_cosine, seconds, size, batch=32):
        points.append({"label": label, "kind": kind, "min_cosine": min_cosine,
                       "items_per_s": batch / seconds if seconds else None, "bytes": size})

    for c in m.get("candidates", []):
        latency = c.get("latency") or {}
        ms = latency.get("mixed_batch_ms")
        add(f"candidate {c['name']}", "candidate", (c.get("parity") or {}).get("min_cosine"),
            ms / 1000 if ms else None, c.get("bytes"), latency.get("mixed_batch", 32))
    kit = case.get(f"{KIT}@{t}t:handler")
    add(f"kit ({m['quantization']}, handler)", KIT, parity.get(f"{m['name']}/{KIT}@{t}t", {}).get("min_cosine"),
        kit["p50"] if kit else None, sizes["optimized_bytes"])
    fp32 = case.get(f"{FP32}@{t}t:predict")
    add("fp32 ONNX (maas_runtime)", FP32, parity.get(f"{m['name']}/{FP32}@{t}t", {}).get("min_cosine"),
        fp32["p50"] if fp32 else None, sizes["fp32_onnx_bytes"])
    torch = case.get(f"{TORCH}@{t}t:torch")
    add("PyTorch eager", TORCH, 1.0, torch["p50"] if torch else None, sizes["baseline_weights_bytes"])
    for anchor in ANCHORS:
        e = case.get(f"{anchor}@{t}t:encode")
        if e:
            weights = sizes["baseline_weights_bytes"] if anchor == "sentence-transformers" else sizes["fp32_onnx_bytes"]
            add(LABELS[anchor], anchor, parity.get(f"{m['name']}/{anchor}@{t}t", {}).get("min_cosine"), e["p50"], weights)
    return points


def plot_frontier(m: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [p for p in frontier_points(m) if p["items_per_s"] and p["min_cosine"] is not None]
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    biggest = max((p["bytes"] or 0) for p in points) or 1
    colours = {"candidate": "tab:blue", KIT: "tab:red", FP32: "tab:orange", TORCH: "black"}
    others = iter(["tab:green", "tab:purple", "tab:brown", "tab:olive", "tab:cyan"])
    for p in points:
        size = 60 + 900 * (p["bytes"] or 0) / biggest
        mb_label = f"{(p['bytes'] or 0) / 1e6:.0f} MB"
        candidate = p["kind"] == "candidate"
        # The served stacks share the top-left corner (fp32 parity, similar speed): a legend names
        # them; the build candidates are spread out and labelled in place.
        ax.scatter(p["items_per_s"], p["min_cosine"], s=size, alpha=0.55,
                   color=colours.get(p["kind"]) or next(others, "tab:gray"), edgecolors="black", linewidths=0.5,
                   label=None if candidate else f"{p['label']}, {mb_label}")
        if candidate:
            ax.annotate(f"{p['label'].removeprefix('candidate ')}\n{mb_label}", (p["items_per_s"], p["min_cosine"]),
                        fontsize=7, xytext=(6, 4), textcoords="offset points")
    ax.legend(fontsize=7, loc="lower left", markerscale=0.4, title="served (this run); blue: build candidates (card)",
              title_fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("mixed workload, requests of 32: items/s (p50, log scale)")
    ax.set_ylabel("min cosine to fp32 PyTorch (evaluation texts)")
    ax.set_title(f"{m['name']}: parity vs throughput; marker area = model file size")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _series_label(key: str) -> str:
    role_threads, path = key.split(":")
    role, threads = role_threads.split("@")
    return f"{LABELS[role].split(' via ')[0]} / {PATH_LABELS.get(path, path)} ({threads[:-1]} thr)"


def ms(seconds: float | None, digits: int = 2) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.{digits}f}"


def mb(n: float | None) -> str:
    return "–" if n is None else f"{n / 1e6:.1f}"


def spread_ms(e: dict) -> str:
    return f"{ms(e['p50'])} ({ms(e['p25'])}–{ms(e['p75'])})"


def render_markdown(results: dict, image_dir: str) -> str:
    mi = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `maas bench`" + (" --quick (one repeat each: figures are smoke-test only)" if results["quick"] else "")
        + f" on {results['started']}. Regenerate with `make bench-anchors && maas bench` (about 20 minutes on 2 cores) — do not edit by hand.",
        "",
        f"Machine: {mi['cpu']}, {mi['cpus']} CPUs, {mi['threads']} threads used, Python {mi['python']}, "
        + ", ".join(f"{k} {v}" for k, v in mi["versions"].items() if v)
        + f". Load average at start: {', '.join(f'{x:.2f}' for x in mi['load_average'] or [])}.",
        "",
        "Every figure is a median over repeated runs with its spread (p25–p75 unless noted). Variants are interleaved "
        "round by round, each in its own process, and compared as ratios within this run: the machine is shared "
        "and absolute times drift. Cold starts run with a warm page cache and compiled bytecode (as a deployed "
        "package has them); Powertools' log and metric output goes to /dev/null.",
        "",
        "Variants: **kit** = the optimized artifact served by the real Lambda handler (functions/model/app.py, "
        "API Gateway REST proxy events); **fp32 ONNX** = the unquantized ONNX model through maas_runtime; "
        "**PyTorch** = what a user would deploy otherwise (transformers AutoModel + mean pooling + L2 norm on the "
        "original safetensors weights; for digits the fp32 torch MLP as trained by the recipe). torch is never "
        "imported by the ONNX workers (checked per worker). **Anchors** (text embedding models, where "
        f"`{ANCHORS_HOW}` installed them): sentence-transformers `encode(batch_size=32)` on the original weights, "
        "fastembed and Optimum's `ORTModelForFeatureExtraction` on the kit's own fp32 ONNX export, each in its own "
        "worker with its own venv's python.",
        "",
        "Workloads, named beside every figure: **short** = eight ~12-token sentences, repeated to fill a batch (the "
        "easiest case there is); **long** = 128-token texts; **mixed** = a stream of 512 texts with real traffic's "
        "lengths (mostly short, a long tail), sent in arrival order as requests of 32 (one timed call = one pass "
        "over all 16 requests, reported per request) and as single texts.",
        "",
    ]
    for name, m in results["models"].items():
        lines += render_model(m, image_dir, results)
    lines += render_prices(results)
    return "\n".join(lines) + "\n"


def render_model(m: dict, image_dir: str, results: dict) -> list[str]:
    t = m["threads"]
    name = m["name"]
    lines = [f"## {name} {m['version']} ({m['task']}, {m['quantization']})", ""]
    title = "Targets (ratios to the PyTorch baseline in this run)" if m["task"] == "embedding" else (
        "Ratios to the PyTorch baseline in this run (the targets are set for minilm; shown, not judged)"
    )
    lines += [f"### {title}", "", "| target | measured | goal | met | how |", "|---|---|---|---|---|"]
    for row in m["targets"]:
        value = row["value"]
        shown = "–" if value is None else (f"{value:.3f}" if "ratio" in row["target"] else f"{value:.3f} ms")
        goal = f"{'≤' if row['better'] == 'lower' else '≥'} {row['goal']:.3g}"
        met = {True: "yes", False: "**no**", None: "n/a" if m["task"] != "embedding" else "–"}[row["met"]]
        lines.append(f"| {row['target']} | {shown} | {goal} | {met} | {row['how']} |")
    lines.append("")
    for row in m["targets"]:
        if row["met"] is False:
            factor = row["value"] / row["goal"] if row["better"] == "lower" else row["goal"] / row["value"]
            lines.append(f"- missed: {row['target']} is {factor:.2f}× its goal ({row['value']:.3f} vs {row['goal']:.3g}).")
    lines.append("")

    lines += ["### Cold start (fresh process to first answer, seconds)", ""]
    lines += ["| variant | process start | import | load (+verify) | first inference | total p50 (p25–p75) | n | peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
    cold = m["coldstart"]
    torch_total = next((v["phases"]["total_s"]["p50"] for v in cold.values() if v["role"] == TORCH), None)
    for key, v in cold.items():
        ph = v["phases"]
        tot = ph["total_s"]
        ratio = f" = {tot['p50'] / torch_total:.3f}× PyTorch" if torch_total else ""
        lines.append(
            f"| {v['label']} | {ph['process_start_s']['p50']:.3f} | {ph['import_s']['p50']:.3f} | {ph['load_s']['p50']:.3f} | "
            f"{ph['first_inference_s']['p50']:.3f} | {tot['p50']:.3f} ({tot['p25']:.3f}–{tot['p75']:.3f}){ratio} | {tot['n']} | "
            f"{mb(v['peak_rss_bytes']['p50'])} |"
        )
    lines.append("")

    lat = m["latency"]
    first = m["first_set"]
    lines += [f"### Warm latency, batch 1 (ms, {t} threads unless noted)", ""]
    lines += ["| path | " + " | ".join(f"{s} p50 (p25–p75) | {s} p99" for s in m["inputs"]) + " |", "|---" * (1 + 2 * len(m["inputs"])) + "|"]
    keys = _ordered_keys(lat, [case_key(s, 1) for s in m["inputs"]])
    for key in keys:
        cells = []
        for s in m["inputs"]:
            e = lat["cases"].get(case_key(s, 1), {}).get(key)
            cells += [spread_ms(e), ms(e["p99"])] if e else ["–", "–"]
        lines.append(f"| {_series_label(key)} | " + " | ".join(cells) + " |")
    lines.append("")
    for s, info in m["inputs"].items():
        if "tokens_per_input" in info:
            lines.append(f"- `{s}` inputs: {min(info['tokens_per_input'])}–{max(info['tokens_per_input'])} tokens each (special tokens included).")
    lines.append(f"- samples per path at batch 1: {lat['cases'][case_key(first, 1)][keys[0]]['n']} over {lat['rounds']} interleaved rounds.")
    lines.append("")

    lines += ["### Throughput (items per second = batch / p50 request latency)", ""]
    columns = [(s, b) for s in m["inputs"] for b in (8, 32) if b in batches_for(s)]
    lines += ["| path | " + " | ".join(f"{s} b{b}" for s, b in columns) + " |", "|---" * (1 + len(columns)) + "|"]
    for key in _ordered_keys(lat, [case_key(s, 32) for s in m["inputs"]]):
        cells = []
        for s, b in columns:
            e = lat["cases"].get(case_key(s, b), {}).get(key)
            cells.append(f"{b / e['p50']:.0f} ({b / e['p75']:.0f}–{b / e['p25']:.0f})" if e else "–")
        lines.append(f"| {_series_label(key)} | " + " | ".join(cells) + " |")
    lines += ["", f"![{name} latency vs batch size]({image_dir}/{name}-latency-vs-batch.png)", ""]
    lines += render_real_traffic(m, image_dir)

    lines += ["### Handler overhead (batch 1, paths called alternately in one process)", ""]
    lines += [
        "| threads | input | bare session.run p50 ms | runtime predict p50 ms | handler p50 ms | handler − session (median of pairs, p25–p75) | handler − predict | predict − session |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in lat.get("overhead", {}).values():
        p, d = entry["paths"], entry["differences"]
        pair = lambda k: f"{ms(d[k]['p50'], 3)} ({ms(d[k]['p25'], 3)}–{ms(d[k]['p75'], 3)})"  # noqa: E731
        lines.append(
            f"| {entry['threads']} | {entry['case']} | {ms(p['session']['p50'], 3)} | {ms(p['predict']['p50'], 3)} | "
            f"{ms(p['handler']['p50'], 3)} | {pair('handler-session')} | {pair('handler-predict')} | {pair('predict-session')} |"
        )
    b1 = lat["cases"][case_key(first, 1)]
    api, handler = b1.get(f"{KIT}@{t}t:localapi"), b1.get(f"{KIT}@{t}t:handler")
    lines.append("")
    if api and handler:
        lines.append(
            f"End to end over HTTP through the local API (`maas serve`, keep-alive client in the same process): "
            f"p50 {ms(api['p50'])} ms vs {ms(handler['p50'])} ms for the handler called in-process "
            f"(interleaved rounds, {first} batch 1)."
        )
    else:
        lines.append("End to end through the local API: pending (maas.local_api not available in this run).")
    lines.append("")

    lines += ["### Memory (peak RSS of the warm serving process after all batch sizes)", ""]
    lines += ["| variant | peak RSS MB |", "|---|---|"]
    for key, r in lat["rss"].items():
        lines.append(f"| {key.split('/', 1)[1]} | {mb(r['peak_rss_bytes'])} |")
    lines.append("")

    fp = m["footprint"]
    lines += ["### Size", ""]
    mf = fp["model_files"]
    lines += [
        f"Model files: optimized **{mb(mf['optimized_bytes'])} MB**, fp32 ONNX {mb(mf['fp32_onnx_bytes'])} MB, "
        f"baseline weights (+config, tokenizer) {mb(mf['baseline_weights_bytes'])} MB.",
        "",
        "| serving footprint (unzipped, MB) | packages named | + model + own code | whole dependency closure + model |",
        "|---|---|---|---|",
    ]
    for label, key in (("kit: " + " + ".join(fp["kit"]["packages"]), "kit"), ("baseline: " + " + ".join(fp["baseline"]["packages"]), "baseline")):
        s = fp[key]
        lines.append(f"| {label} | {mb(s['packages_bytes'])} | {mb(s['total_bytes'])} | {mb(s['total_closure_bytes'])} |")
    lines += [
        f"| ratio kit / baseline | {fp['kit']['packages_bytes'] / fp['baseline']['packages_bytes']:.3f} | "
        f"{fp['kit']['total_bytes'] / fp['baseline']['total_bytes']:.3f} | {fp['kit']['total_closure_bytes'] / fp['baseline']['total_closure_bytes']:.3f} |",
        "",
        "Sizes from the installed distributions' RECORD files (bytecode caches excluded); the closure leaves out what "
        "Lambda's Python runtime already provides (boto3, botocore, s3transfer, jmespath, urllib3, dateutil, six).",
        "",
    ]
    deployed = fp.get("deployed", {})
    if "total_bytes" in deployed:
        parts = ", ".join(f"{name} layer {mb(b)} MB" for name, b in deployed["layers"].items())
        lines += [
            f"Deployed ({deployed['architecture']}, unzipped, as `cdk deploy` uploads it): {parts}, handler "
            f"{mb(deployed['handler_code_bytes'])} MB, model {mb(deployed['model_bytes'])} MB: **{mb(deployed['total_bytes'])} MB**, "
            f"{deployed['total_bytes'] / fp['baseline']['total_closure_bytes']:.3f} of the baseline's whole closure + weights.",
            "",
        ]
    elif deployed:
        lines += [f"Deployed size: not measured ({deployed['error']}).", ""]

    rl = m["roofline"]
    lines += ["### Roofline (batch 32)", ""]
    lines.append(
        f"Machine matmul peak with {t} threads: **{rl['peak_gflops']:.0f} GFLOP/s** (best of numpy and a one-MatMul ONNX "
        f"Runtime graph, fp32: " + ", ".join(f"{k} {v:.0f}" for k, v in rl["peak_detail"].items() if k not in ("threads", "best_gflops")) + ")."
    )
    lines += ["", "| case | seq len | MatMul GFLOP | path | p50 s | achieved GFLOP/s | of peak |", "|---|---|---|---|---|---|---|"]
    for case, c in rl["cases"].items():
        for path, a in c["achieved"].items():
            lines.append(
                f"| {case} | {c['sequence_length'] or '–'} | {c['matmul_flops'] / 1e9:.3f} | {path} | {a['seconds']:.4f} | {a['gflops']:.1f} | {a['fraction_of_peak'] * 100:.1f}% |"
            )
    lines += ["", "FLOPs: every MatMul/Gemm of the fp32 ONNX graph (2·M·K·N) with shapes inferred for the batch and padded length run; the int8 graph does the same arithmetic in int8.", ""]

    lines += render_cost(m)
    return lines


def render_real_traffic(m: dict, image_dir: str) -> list[str]:
    """The `mixed` workload, the anchors with their parity, the batching policies and the time split."""
    lat, t, name = m["latency"], m["threads"], m["name"]
    profile = m["inputs"].get(MIXED, {}).get("profile")
    if not profile:
        return []
    lines = [
        "### Real traffic: the `mixed` workload", "",
        f"{profile['count']} texts in arrival order (maas/bench/workload.py: cut from texts the project ships, lengths "
        f"drawn from a seeded distribution with a long tail), sent as {len(profile['batch_longest'])} requests of "
        f"{profile['batch_size']} and as single texts. Tokens per text (special tokens included): p50 "
        f"**{profile['p50']:.0f}**, p90 **{profile['p90']:.0f}**, p99 **{profile['p99']:.0f}**, max **{profile['max']}** "
        f"(mean {profile['mean']:.1f}). Each request's longest text: {', '.join(map(str, profile['batch_longest']))} "
        f"(medians {min(profile['batch_median']):.0f}–{max(profile['batch_median']):.0f}): padded as one batch, "
        f"{profile['padding_share_one_batch']:.0%} of the tokens would be padding.", "",
    ]
    parity = lat.get("parity", {})
    case32, case1 = lat["cases"].get(case_key(MIXED, 32), {}), lat["cases"].get(case_key(MIXED, 1), {})
    short1 = lat["cases"].get(case_key("short", 1), {})
    rows = [(f"{KIT}@{t}t:handler", f"{KIT}@{t}t"), (f"{KIT}@{t}t:predict", f"{KIT}@{t}t"), (f"{FP32}@{t}t:predict", f"{FP32}@{t}t"),
            (f"{TORCH}@{t}t:torch", None)] + [(f"{a}@{t}t:encode", f"{a}@{t}t") for a in ANCHORS]
    torch32 = case32.get(f"{TORCH}@{t}t:torch")
    lines += [
        f"#### Against the CPU stacks a user would pick ({t} threads, same weights)", "",
        "| variant | mixed b32 items/s p50 (p25–p75) | × PyTorch | mixed b1 p50 ms | short b1 p50 ms | min cosine | mean cosine |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, pkey in rows:
        e = case32.get(key)
        if e is None:
            continue
        par = parity.get("variants", {}).get(f"{name}/{pkey}") if pkey else {"min_cosine": 1.0, "mean_cosine": 1.0}
        cos = (f"{par['min_cosine']:.4f}", f"{par['mean_cosine']:.4f}") if par else ("–", "–")
        b1, s1 = case1.get(key), short1.get(key)
        lines.append(
            f"| {_series_label(key)} | {32 / e['p50']:.0f} ({32 / e['p75']:.0f}–{32 / e['p25']:.0f}) | "
            f"{torch32['p50'] / e['p50']:.2f} | {ms(b1['p50']) if b1 else '–'} | {ms(s1['p50']) if s1 else '–'} | {cos[0]} | {cos[1]} |"
        )
    skipped = lat.get("skipped") or {}
    if not any(f"{a}@{t}t:encode" in case32 for a in ANCHORS):
        lines += ["", f"Anchors (sentence-transformers, fastembed, Optimum) were not run: `{ANCHORS_HOW}` installs them."]
    for key, why in skipped.items():
        lines += ["", f"{key} did not start: `{why.strip().splitlines()[-1][:200]}`."]
    if parity:
        lines += ["", f"Parity: cosine of each variant's embedding to eager PyTorch's on {parity['texts']}. "
                  "sentence-transformers runs the original weights; fastembed and Optimum run the kit's fp32 ONNX export "
                  "(the minilm-gpu artifact), pooled and normalized as sentence-transformers does. Throughput per item counts "
                  "every text of a pass over all requests (seconds per pass / requests = the latency of a request of 32)."]
    lines += ["", f"![{name} parity vs throughput vs size]({image_dir}/{name}-frontier.png)", ""]
    points = frontier_points(m) if parity else []
    unplotted = [p for p in points if p["kind"] == "candidate"]
    if unplotted:
        lines += ["Build candidates (from the card's `optimization.quantization.candidates`):", "",
                  "| candidate | min cosine | mixed b32 items/s | MB |", "|---|---|---|---|"]
        for p in unplotted:
            ips = f"{p['items_per_s']:.0f}" if p["items_per_s"] else "not measured by the build"
            cos = f"{p['min_cosine']:.4f}" if p["min_cosine"] is not None else "–"
            lines.append(f"| {p['label'].removeprefix('candidate ')} | {cos} | {ips} | {mb(p['bytes'])} |")
        lines.append("")

    batching = lat.get("batching") or {}
    if batching.get("policies"):
        pol = batching["policies"]
        one = pol.get("one-batch", {}).get("p50")
        lines += [f"#### Length-aware batching: sub-batch policies ({batching['case']}, {t} threads, maas_runtime predict, "
                  "called alternately in one process)", "",
                  "| policy | p50 ms per request | p25–p75 | items/s | × one batch |", "|---|---|---|---|---|"]
        for policy, e in sorted(pol.items(), key=lambda kv: kv[1]["p50"]):
            lines.append(f"| {policy} | {ms(e['p50'])} | {ms(e['p25'])}–{ms(e['p75'])} | {32 / e['p50']:.0f} | "
                         f"{(one / e['p50']) if one else float('nan'):.2f} |")
        lines += ["", "The runtime's default is `min-cost` (maas_runtime/tasks/processing.py says why).", ""]

    for case, b in (lat.get("breakdown") or {}).items():
        sec, tok = b["seconds_per_pass"], b["tokens"]
        total = sec["handler (whole request)"]
        what = f"a pass over {b['requests']} requests" if b["requests"] > 1 else "one request"
        lines += [f"#### Where the time goes: {case} (ms per {what}, medians per request, in the handler's process)", "",
                  "| piece | ms | of the handler |", "|---|---|---|"]
        for piece, v in sec.items():
            lines.append(f"| {piece} | {v * 1000:.2f} | {v / total:.0%} |")
        if tok["real"]:
            lines += ["", f"Tokens fed to the graph: {tok['real']} real; {tok['padded_one_batch']} padded as one batch per request "
                      f"({1 - tok['real'] / tok['padded_one_batch']:.0%} padding), {tok['padded_length_aware']} length-aware "
                      f"({1 - tok['real'] / tok['padded_length_aware']:.0%} padding) in {tok['runs_length_aware']} session runs."]
        ops = b.get("operators") or {}
        total_ops = sum(ops.values()) or 1
        top = list(ops.items())[:8]
        if top:
            lines += ["", "Inside the graph (ONNX Runtime's profiler, length-aware runs): "
                      + ", ".join(f"{op} {v / total_ops:.0%}" for op, v in top) + "."]
        lines.append("")
    return lines


def render_cost(m: dict) -> list[str]:
    c = m["cost"]
    lines = ["### Lambda cost", ""]
    for case, table in c["tables"].items():
        lt = ", ".join(f"{k} thread(s) {ms(v)} ms" for k, v in table["latency_by_threads_s"].items())
        lines += [f"**{case}** through the handler (measured: {lt}); peak RSS {mb(c['peak_rss_bytes'])} MB.", ""]
        lines += ["| memory MB | vCPU threads | est. duration ms | fits | arm64 $/1M req | x86_64 $/1M req |", "|---|---|---|---|---|---|"]
        for r in table["rows"]:
            mark = " (extrapolated)" if r["extrapolated"] else ""
            lines.append(
                f"| {r['memory_mb']} | {r['threads']} | {r['duration_ms']:.2f}{mark} | {'yes' if r['fits_memory'] else 'no'} | "
                f"{r['usd_per_million']['arm64']:.3f} | {r['usd_per_million']['x86_64']:.3f} |"
            )
        rec = table["recommended"]
        be = table["g5_breakeven_rps"]
        parts = []
        for arch in ("arm64", "x86_64"):
            if rec[arch]:
                parts.append(
                    f"{arch}: **{rec[arch]['memory_mb']} MB** (${rec[arch]['usd_per_million'][arch]:.3f}/1M); an always-on ml.g5.xlarge "
                    f"is cheaper above **{be[arch]:.0f} req/s** ({be[arch] * 3600 * 730 / 1e6:.0f}M req/month)"
                )
        lines += ["", "Recommended: " + "; ".join(parts) + ".", ""]
    lines += [
        f"Recommended `memory_mb` for {m['name']} (arm64, batch-1 requests): **{c['recommended_memory_mb']}** "
        f"(the manifest has {c['manifest_memory_mb']}).",
        "",
        "Model: below 1769 MB a request takes (1769 / memory) × its 1-thread duration; from 1769 to 3538 MB the function "
        "has 2 vCPUs throttled to memory/1769 of CPU time, timed with 2 threads; larger sizes are not measured here "
        "(no further speed-up assumed). Duration is billed per 1 ms, rounded up, plus the request charge. A size fits "
        "when 1.15 × the peak RSS is within it. The recommendation is the fastest fitting size whose cost is within 5% "
        "of the cheapest fitting size's. The break-even rate ignores the GPU instance's own throughput limit and "
        "the cost of Lambda init time.",
        "",
    ]
    if c.get("traffic"):
        lines += render_traffic_costs(m["name"], c["traffic"])
    return lines


def render_traffic_costs(name: str, rows: list[dict]) -> list[str]:
    """Lambda at the recommended size vs a GPU endpoint, always on or scaled to zero, per month."""
    lines = [
        f"### {name} per month, by traffic pattern: Lambda, or a GPU endpoint always on or scaled to zero", "",
        "| traffic | requests/month | Lambda arm64 (recommended size) | ml.g5.xlarge, min_instances = 1 | "
        "ml.g5.xlarge, min_instances = 0 | minutes/day of 503 while starting |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lam = f"${r['lambda_usd']:,.2f}" if r["lambda_usd"] is not None else "–"
        lines.append(
            f"| {r['pattern']} | {r['requests_per_month']:,.0f} | {lam} | ${r['always_on_usd']:,.0f} | "
            f"${r['scale_to_zero_usd']:,.0f} | {r['cold_minutes_per_day']:.0f} |"
        )
    lines += [
        "",
        "Scale to zero bills an instance from each wake-up (the first requests wait for it: 503 with Retry-After) "
        "until it has been idle long enough to scale in; periods close enough together never go cold. One instance "
        "is assumed to keep up with each pattern; timings in maas/data/lambda_prices.json (`sagemaker_scale_to_zero`).",
        "",
    ]
    return lines


def render_prices(results: dict) -> list[str]:
    p = results["prices"]
    lam = p["lambda"]
    return [
        "## Prices used",
        "",
        f"{p['region']}, {p['currency']}, as published on {p['as_published_on']} (maas/data/lambda_prices.json). {p['source']}",
        "",
        f"- Lambda arm64: ${lam['arm64']['gb_second']}/GB-s, ${lam['arm64']['per_million_requests']}/1M requests",
        f"- Lambda x86_64: ${lam['x86_64']['gb_second']}/GB-s, ${lam['x86_64']['per_million_requests']}/1M requests",
        f"- SageMaker ml.g5.xlarge real-time inference: ${p['sagemaker']['ml.g5.xlarge']['per_hour']}/hour",
        f"- SageMaker scale to zero: idle {p['sagemaker_scale_to_zero']['scale_in_minutes']} min to 0 instances, "
        f"{p['sagemaker_scale_to_zero']['cold_start_minutes']} min to start from zero. {p['sagemaker_scale_to_zero']['source']}",
        "",
    ]


def _ordered_keys(lat: dict, cases: list[str]) -> list[str]:
    order = {KIT: 0, RUNTIME: 1, FP32: 2, TORCH: 3, **{a: 4 + i for i, a in enumerate(ANCHORS)}}
    paths = ["localapi", "handler", "predict", "session", "torch", "encode"]
    keys = {k for c in cases for k in lat["cases"].get(c, {})}

    def rank(k):
        rt, path = k.split(":")
        role, threads = rt.split("@")
        return (order.get(role, 9), -int(threads[:-1]), paths.index(path) if path in paths else 9)

    return sorted(keys, key=rank)
