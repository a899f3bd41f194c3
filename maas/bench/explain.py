"""Latency of POST /models/{name}/explain at each model's default budget, through the real handler.

Measured in a fresh interpreter per model, configured as the deployed function is (the stack sets
OPENBLAS_NUM_THREADS=1), with one ONNX Runtime thread: a function of 512 MB (digits) has about a
third of a vCPU, and a second thread does not speed up a model this small. Warm: the model is
loaded and one explanation runs before the clock starts. The inputs are the models' own: held-out digits
images, and for text models a sentence explained against another (`compare_to`).

`maas bench --explain` runs only this and rewrites only its section of BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from maas_api.constants import MODEL_FUNCTION_ENV

THREADS = 1
SECTION_START = "<!-- explain:start -->"
SECTION_END = "<!-- explain:end -->"
SENTENCES = [
    ("A man is playing a guitar on stage.", "Someone strums a guitar."),
    ("The quarterly revenue of the company grew by twelve percent despite the weak market.", "Sales went up this quarter."),
]


def _requests(card, folder: Path, count: int) -> list[tuple[str, dict]]:
    """(label, request body) pairs: the inputs a user would send to this model's explain route."""
    if card.inputs.type == "image":
        from ..recipes.digits import load_data

        images = load_data().x_test[:count]
        return [("8x8 held-out image", {"inputs": [img.tolist()]}) for img in images]
    if card.task == "embedding":
        return [(f"{len(a.split())} words vs a sentence", {"inputs": [a], "parameters": {"compare_to": b}}) for a, b in SENTENCES]
    return [(f"{len(a.split())} words", {"inputs": [a]}) for a, _ in SENTENCES]


def worker(model_dir: str, name: str, catalog: str, repeats: int) -> dict:
    """In the fresh interpreter: the handler behind the local API (as `maas serve` runs it), warmed,
    timed per request kind."""
    from maas.local_api import FunctionInstance, LocalApi, Route, configure_local_environment, load_function_module
    from maas_api.routes import route

    configure_local_environment()
    root = Path(__file__).resolve().parents[2]
    handler = load_function_module(root / "functions" / "model")
    function = handler.create_function(handler.Config(model_name=name, model_dir=model_dir, catalog_path=catalog))
    card = function.backend.model().card
    path = route("explain").render(name=name)
    api = LocalApi([Route("POST", path, FunctionInstance(name, function))])
    headers = [("Content-Type", "application/json")]
    rows = {}
    for label, body in _requests(card, Path(model_dir), 8):
        data = json.dumps(body).encode()
        status, _, raw = api.handle("POST", path, headers, data)  # warm-up, not timed
        first = json.loads(raw)
        if status != 200:
            raise RuntimeError(f"{name}: explain answered {status} {first}")
        row = rows.setdefault(label, {"times": [], "players": [], "coalitions": [], "evaluations": []})
        method = first["outputs"][0]["method"]
        row["players"].append(method["players"])
        row["coalitions"].append(method["coalitions"])
        row["evaluations"].append(first["usage"]["model_evaluations"])
        for _ in range(repeats):
            started = time.perf_counter()
            api.handle("POST", path, headers, data)
            row["times"].append(time.perf_counter() - started)
    return rows


def measure_explain(model_dir: Path, name: str, catalog: Path, threads: int, repeats: int = 15) -> dict:
    """{request kind: {"p50_ms", "min_ms", "max_ms", "coalitions", "players", "evaluations"}} for one model."""
    env = {**os.environ, **MODEL_FUNCTION_ENV, "MAAS_INTRA_OP_THREADS": str(threads),
           "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_DISABLED": "true"}
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(root / "shared"), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "maas.bench.explain", str(model_dir), name, str(catalog), str(repeats)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"explain bench for {name} failed: {done.stderr[-2000:]}")
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    out = {}
    for label, row in rows.items():
        times = sorted(row["times"])
        out[label] = {
            "p50_ms": 1000 * times[len(times) // 2],
            "min_ms": 1000 * times[0],
            "max_ms": 1000 * times[-1],
            "runs": len(times),
            "inputs": len(row["players"]),
            **{k: [min(row[k]), max(row[k])] for k in ("players", "coalitions", "evaluations")},
            "threads": threads,
            "load_average": os.getloadavg()[0],
        }
    return out


def _span(pair: list[int]) -> str:
    low, high = pair
    return f"{low:,}" if low == high else f"{low:,}-{high:,}"


def render_explain(results: dict, machine: dict) -> list[str]:
    """The report's section; `machine` is maas.bench.machine_info's answer."""
    lines = [
        SECTION_START,
        "## Explanations: `POST /models/{name}/explain` at the default budget",
        "",
        f"Through the handler behind the local API, warm, in a fresh process per model ({machine['cpu']}, "
        f"{machine['cpus']} cores shared with other work, see the load average; "
        f"{THREADS} ONNX Runtime thread, OPENBLAS_NUM_THREADS=1 as the stack sets it). Kernel SHAP evaluates the model once per coalition and background row, so the time "
        "grows with `evaluations`. Reproduce: `maas bench --explain`.",
        "",
        "| model | input | players | coalitions | model evaluations | p50 | min | max | runs | load average |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        for label, r in rows.items():
            kind = f"{label} (x{r['inputs']})" if r["inputs"] > 1 else label
            lines.append(
                f"| {name} | {kind} | {_span(r['players'])} | {_span(r['coalitions'])} | {_span(r['evaluations'])} | "
                f"{r['p50_ms']:.1f} ms | {r['min_ms']:.1f} ms | {r['max_ms']:.1f} ms | {r['runs']} | {r['load_average']:.1f} |"
            )
    lines += ["", SECTION_END]
    return lines


def update_section(markdown: Path, lines: list[str], start: str = SECTION_START, end: str = SECTION_END) -> None:
    """Replace (or append) one section of the report (the explanations' by default), leaving the rest as it is."""
    text = markdown.read_text(encoding="utf-8") if markdown.is_file() else ""
    block = "\n".join(lines)
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    markdown.write_text(text, encoding="utf-8")


def bench_explanations(manifest, models, repeats: int, threads: int = THREADS, log=print) -> dict:
    """Every named (or every Lambda) model whose card offers explanations."""
    from maas_runtime import ModelCard

    from ..paths import BUILD_DIR, CATALOG_FILE, artifact_dir

    results = {}
    names = list(models) if models else [m.name for m in manifest.models if m.target == "lambda"]
    for name in names:
        spec = manifest.get(name)
        folder = artifact_dir(manifest.root, spec.name, spec.version)
        if ModelCard.read(folder).explain is None:
            continue
        log(f"  [{name}] explain latency")
        results[name] = measure_explain(folder, name, manifest.root / BUILD_DIR / CATALOG_FILE, threads, repeats)
        for label, r in results[name].items():
            log(f"  {name} explain ({label}): p50 {r['p50_ms']:.1f} ms, {_span(r['coalitions'])} coalitions, "
                f"{_span(r['evaluations'])} evaluations, {threads} thread(s), load average {r['load_average']:.1f}")
    return results


if __name__ == "__main__":
    model_dir, name, catalog, repeats = sys.argv[1:5]
    print(json.dumps(worker(model_dir, name, catalog, int(repeats))))
