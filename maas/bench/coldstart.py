"""Cold start: a fresh `python` process from spawn to the first answer, split into phases.

Variants are interleaved (A B C D, A B C D, ...) so that drift on a shared machine hits them
alike; one untimed pass first fills the page cache and writes bytecode, as a deployed package
would already have it.
"""

from __future__ import annotations

from pathlib import Path

from .stats import summary
from .variants import Variant
from .workers import coldstart_once

PHASES = ("process_start_s", "import_s", "load_s", "first_inference_s", "total_s")


def measure_coldstarts(variants: list[Variant], root: Path, first_inputs: list, repeats: int, log=print) -> dict:
    for variant in variants:
        coldstart_once(variant, root, first_inputs)
    runs: dict[str, list[dict]] = {v.key: [] for v in variants}
    for rep in range(repeats):
        order = variants[rep % len(variants):] + variants[: rep % len(variants)]
        for variant in order:
            runs[variant.key].append(coldstart_once(variant, root, first_inputs))
        log(f"  cold start round {rep + 1}/{repeats}")
    out = {}
    for variant in variants:
        samples = runs[variant.key]
        out[variant.key] = {
            "role": variant.role,
            "label": variant.label,
            "threads": variant.threads,
            "phases": {phase: summary([s[phase] for s in samples]) for phase in PHASES},
            "peak_rss_bytes": summary([float(s["peak_rss_bytes"]) for s in samples]),
            "torch_imported": any(s["torch_imported"] for s in samples),
            "samples": samples,
        }
    return out
