"""Warm latency and throughput: long-lived workers, timed in interleaved rounds.

Every variant runs in its own process (so PyTorch and ONNX Runtime never share a process or
its thread pools) and waits idle while another is timed. Each round times every (variant, path)
on every case, in a rotated order.
"""

from __future__ import annotations

from pathlib import Path

from .stats import summary
from .variants import KIT, RUNTIME, TORCH, Variant
from .workers import Worker
from .workload import BATCHES, cycle


def path_key(variant: Variant, path: str) -> str:
    return f"{variant.role}@{variant.threads}t:{path}"


def case_key(set_name: str, batch: int) -> str:
    return f"{set_name}/b{batch}"


def served_paths(variant: Variant, worker: Worker, threads: int) -> list[str]:
    """KIT at full threads is timed through the local API (where installed), the handler, the
    runtime and the bare session (the overhead split); KIT at 1 thread only through the handler
    (the cost model's input)."""
    if variant.role == KIT:
        if variant.threads != threads:
            return ["handler"]
        return [p for p in ("localapi", "handler", "predict", "session") if p in worker.paths]
    return worker.paths[:1] if variant.role == TORCH else ["predict"]


def measure_latency(
    variants: list[Variant], root: Path, sets: dict, threads: int, quick: bool, log=print, budget_s: float = 0.25
) -> dict:
    """{"cases": {case: {path_key: summary + samples}}, "rss": {variant key: {...}}}"""
    first_inputs = next(iter(sets.values()))[:1]
    served = [v for v in variants if v.role != RUNTIME]
    workers: list[Worker] = []
    try:
        for variant in served:
            workers.append(Worker(variant, root, first_inputs))
        for worker in workers:
            for name, items in sets.items():
                for batch in BATCHES:
                    worker.set_inputs(case_key(name, batch), cycle(items, batch))
        jobs = [(w, p) for w in workers for p in served_paths(w.variant, w, threads)]
        cases = [(name, b) for name in sets for b in BATCHES]
        rounds = 1 if quick else 5
        samples: dict[str, dict[str, list[float]]] = {case_key(*c): {} for c in cases}
        for r in range(rounds):
            for name, batch in cases:
                key = case_key(name, batch)
                order = jobs[r % len(jobs):] + jobs[: r % len(jobs)]
                for worker, path in order:
                    pk = path_key(worker.variant, path)
                    got = samples[key].setdefault(pk, [])
                    iters = _iters(got, batch, quick, budget_s)
                    got.extend(worker.time(path, key, iters))
            log(f"  latency round {r + 1}/{rounds}")
        overhead = measure_overhead(workers, sets, quick)
        rss = {w.variant.key: w.rss() for w in workers}
        torch_free = {w.variant.key: not w.torch_imported for w in workers if w.variant.role != TORCH}
    finally:
        for worker in workers:
            worker.close()
    return {
        "cases": {
            case: {pk: {**summary(vals), "samples": vals} for pk, vals in per.items()} for case, per in samples.items()
        },
        "overhead": overhead,
        "rss": rss,
        "onnx_workers_without_torch": torch_free,
        "rounds": rounds,
    }


def measure_overhead(workers: list[Worker], sets: dict, quick: bool) -> dict:
    """Handler vs runtime vs bare session at batch 1, called alternately call by call in one
    process; the overhead is the median of the per-call differences (robust to drift)."""
    out = {}
    for worker in workers:
        if worker.variant.role != KIT:
            continue
        names = [p for p in ("handler", "predict", "session") if p in worker.paths]
        for set_name in sets:
            key = case_key(set_name, 1)
            times = worker.paired(names, key, 5 if quick else 300)
            diffs = {
                f"{a}-{b}": summary([x - y for x, y in zip(times[a], times[b])])
                for a, b in (("handler", "session"), ("handler", "predict"), ("predict", "session"))
            }
            out[f"{worker.variant.threads}t:{key}"] = {
                "threads": worker.variant.threads,
                "case": key,
                "paths": {name: summary(vals) for name, vals in times.items()},
                "differences": diffs,
            }
    return out


def _iters(previous: list[float], batch: int, quick: bool, budget_s: float) -> int:
    """Calls per (path, case) per round: up to 40 at batch 1 (a p99 wants >= 200 in all) within
    ~2 s, at least 5; at larger batches as many as fit `budget_s` (1-3)."""
    if quick:
        return 3 if batch == 1 else 1
    per_call = sorted(previous)[len(previous) // 2] if previous else None
    if batch == 1:
        return 10 if per_call is None else max(5, min(40, int(2.0 / max(per_call, 1e-6))))
    if per_call is None:
        return 1
    return max(1, min(3, int(budget_s / max(per_call, 1e-6))))
