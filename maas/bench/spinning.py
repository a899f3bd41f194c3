"""ONNX Runtime's spinning intra-op threads, on and off, where the process has less CPU than threads.

    python -m maas.bench.spinning [MODEL] [--rounds N] [--markdown BENCHMARKS.md]

A Lambda function under 1769 MB sees more CPUs than its memory buys time on. This runs the
built model in fresh processes (rounds rotated), two intra-op threads each, with spinning on
and off, on both cores and pinned to one (`taskset`: two threads sharing one core), timing a
pass over the `mixed` requests of 32 (items/s and the CPU seconds it burned) and single short
texts (p50). The session default (maas_runtime/session.py) rests on this measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

SECTION_START = "<!-- spinning:start -->"
SECTION_END = "<!-- spinning:end -->"
CONFIGS = {"spinning on": ("1", None), "spinning off": ("0", None),
           "spinning on, 1 core": ("1", "0"), "spinning off, 1 core": ("0", "0")}


def _worker(folder: str) -> None:
    from maas_runtime import load_model

    from .workload import SHORT_TEXTS, mixed_texts, requests

    model = load_model(folder)
    batches = requests(mixed_texts(Path(folder) / model.card.inputs.tokenizer), 32)
    for request in batches[:2]:
        model.predict(request)
    cpu, wall = time.process_time(), time.perf_counter()
    for request in batches:
        model.predict(request)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    single = []
    for i in range(100):
        t0 = time.perf_counter()
        model.predict([SHORT_TEXTS[i % len(SHORT_TEXTS)]])
        single.append(time.perf_counter() - t0)
    print(json.dumps({"items_per_s": 32 * len(batches) / wall, "cpu_s_per_pass": cpu, "b1_p50_ms": statistics.median(single) * 1e3}))


def measure(folder: Path, rounds: int, log=print) -> dict:
    samples: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    names = list(CONFIGS)
    pinning = shutil.which("taskset") is not None
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            spin, cores = CONFIGS[name]
            if cores is not None and not pinning:
                continue
            env = {**os.environ, "MAAS_ORT_SPINNING": spin, "MAAS_INTRA_OP_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"}
            cmd = (["taskset", "-c", cores] if cores is not None else []) + [sys.executable, "-m", "maas.bench.spinning", "--worker", str(folder)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=True)
            samples[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
        log(f"round {r + 1}/{rounds}, load {os.getloadavg()[0]:.1f}")
    return {
        "rounds": rounds,
        "load_average": os.getloadavg(),
        "configs": {name: {k: statistics.median(s[k] for s in runs) for k in runs[0]} for name, runs in samples.items() if runs},
    }


def render(results: dict, model: str) -> list[str]:
    lines = [SECTION_START, f"## ONNX Runtime session: spinning threads ({model}, 2 intra-op threads)", "",
             f"`python -m maas.bench.spinning` on {time.strftime('%Y-%m-%d')}, {results['rounds']} rounds rotated, a fresh "
             f"process per measurement, medians; load average {results['load_average'][0]:.1f} on this shared machine "
             "(other work competes for the cores, as a Lambda function's fractional CPU share does).", "",
             "| configuration | mixed b32 items/s | CPU s per pass (512 texts) | short b1 p50 ms |", "|---|---|---|---|"]
    for name, c in results["configs"].items():
        lines.append(f"| {name} | {c['items_per_s']:.1f} | {c['cpu_s_per_pass']:.2f} | {c['b1_p50_ms']:.2f} |")
    lines += ["", "The runtime's sessions spin only where each intra-op thread has a whole CPU: off Lambda, and in a "
              "Lambda function with at least 1,769 MB per thread (maas_runtime/session.py `spinning`; "
              "`MAAS_ORT_SPINNING=1` or `0` decides otherwise).", SECTION_END]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maas.bench.spinning")
    parser.add_argument("model", nargs="?", default="minilm")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--markdown", help="write the section into this report (e.g. BENCHMARKS.md)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker)
        return 0
    from ..manifest import load_manifest
    from ..paths import artifact_dir
    from .explain import update_section

    manifest = load_manifest(Path("models.toml"))
    spec = manifest.get(args.model)
    results = measure(artifact_dir(manifest.root, spec.name, spec.version), args.rounds)
    lines = render(results, args.model)
    print("\n".join(lines))
    if args.markdown:
        update_section(Path(args.markdown), lines, SECTION_START, SECTION_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
