"""Warm latency and throughput: long-lived workers, timed in interleaved rounds.

Every variant runs in its own process (so PyTorch and ONNX Runtime never share a process or
its thread pools) and waits idle while another is timed. Each round times every (variant, path)
on every case, in a rotated order.
"""

from __future__ import annotations

from pathlib import Path

from .stats import summary
from .variants import ANCHORS, KIT, RUNTIME, TORCH, BenchError, Variant
from .workers import Worker
from .workload import MIXED, SHORT, batches_for, case_inputs

MIXED_B32_ROUNDS = 3
"""A `mixed` batch-32 sample is a pass over the whole stream (seconds, not milliseconds): fewer rounds."""
ANCHOR_CASES = {f"{SHORT}/b1", f"{SHORT}/b32", f"{MIXED}/b1", f"{MIXED}/b32"}
"""The anchors are timed where the targets judge them (and the short batch of 32 for reference)."""


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
    return worker.paths[:1] if variant.role == TORCH or variant.role in ANCHORS else ["predict"]


def start_workers(variants: list[Variant], root: Path, first_inputs: list, log=print) -> tuple[list[Worker], dict]:
    """A warm worker per variant; an anchor that fails to start is skipped with its reason (its
    venv is optional and outside the project's pins), any other failure stops the bench."""
    workers, skipped = [], {}
    for variant in variants:
        try:
            workers.append(Worker(variant, root, first_inputs))
        except BenchError as exc:
            if variant.role not in ANCHORS:
                raise
            skipped[variant.key] = str(exc)[-500:]
            log(f"  {variant.key} skipped: it did not start ({str(exc).strip().splitlines()[-1][:200]})")
    return workers, skipped


def measure_latency(
    variants: list[Variant], root: Path, sets: dict, threads: int, quick: bool, log=print, budget_s: float = 0.25,
    rounds: int | None = None,
) -> dict:
    """{"cases": {case: {path_key: summary + samples}}, "rss": {variant key: {...}}}"""
    first_inputs = next(iter(sets.values()))[:1]
    served = [v for v in variants if v.role != RUNTIME]
    workers: list[Worker] = []
    try:
        workers, skipped = start_workers(served, root, first_inputs, log)
        cases = [(name, b) for name in sets for b in batches_for(name)]
        for worker in workers:
            for name, batch in cases:
                worker.set_inputs(case_key(name, batch), case_inputs(sets[name], name, batch))
        jobs = [(w, p) for w in workers for p in served_paths(w.variant, w, threads)]
        rounds = rounds or (1 if quick else 5)
        samples: dict[str, dict[str, list[float]]] = {case_key(*c): {} for c in cases}
        for r in range(rounds):
            for name, batch in cases:
                key = case_key(name, batch)
                order = jobs[r % len(jobs):] + jobs[: r % len(jobs)]
                if name == MIXED and batch > 1 and r >= MIXED_B32_ROUNDS:
                    continue
                for worker, path in order:
                    if worker.variant.role in ANCHORS and key not in ANCHOR_CASES:
                        continue
                    if name == MIXED and batch > 1 and path in ("localapi", "session"):
                        continue  # HTTP adds nothing at seconds a pass; one padded batch is in `batching`
                    pk = path_key(worker.variant, path)
                    got = samples[key].setdefault(pk, [])
                    iters = _iters(got, batch, quick, budget_s)
                    got.extend(worker.time(path, key, iters))
            log(f"  latency round {r + 1}/{rounds}")
        overhead = measure_overhead(workers, sets, quick)
        batching = measure_batching(workers, sets, threads, quick, log)
        breakdown = measure_breakdown(workers, sets, threads, quick, log)
        parity = measure_parity(workers, threads, quick, log)
        rss = {w.variant.key: w.rss() for w in workers}
        # the kit's own ONNX workers; the anchors are other stacks (sentence-transformers runs on torch)
        torch_free = {w.variant.key: not w.torch_imported for w in workers if w.variant.role not in (TORCH, *ANCHORS)}
    finally:
        for worker in workers:
            worker.close()
    return {
        "cases": {
            case: {pk: {**summary(vals), "samples": vals} for pk, vals in per.items()} for case, per in samples.items()
        },
        "overhead": overhead,
        "batching": batching,
        "breakdown": breakdown,
        "parity": parity,
        "skipped": skipped,
        "rss": rss,
        "onnx_workers_without_torch": torch_free,
        "rounds": rounds,
    }


def _kit(workers: list[Worker], threads: int) -> Worker | None:
    return next((w for w in workers if w.variant.role == KIT and w.variant.threads == threads), None)


def measure_batching(workers: list[Worker], sets: dict, threads: int, quick: bool, log=print) -> dict:
    """The runtime's sub-batch policies on `mixed` requests of 32, called alternately in one
    process (paired, so drift hits each alike): the measurement the default policy rests on."""
    kit = _kit(workers, threads)
    if MIXED not in sets or kit is None:
        return {}
    names = [p for p in kit.paths if p.startswith("batching:")]
    if not names:
        return {}
    log("  length-aware batching policies (mixed, requests of 32)")
    key = case_key(MIXED, 32)
    times = kit.paired(names, key, 1 if quick else 2)
    return {"case": key, "threads": threads, "policies": {n.split(":", 1)[1]: summary(v) for n, v in times.items()}}


def measure_breakdown(workers: list[Worker], sets: dict, threads: int, quick: bool, log=print) -> dict:
    """Where a request's time goes in the handler's process (see breakdown.py)."""
    kit = _kit(workers, threads)
    if kit is None or MIXED not in sets:
        return {}
    log("  where the time goes (mixed requests of 32, short single texts)")
    return {key: kit.breakdown(key, 1) for key in (case_key(MIXED, 32), case_key(SHORT, 1))}


def measure_parity(workers: list[Worker], threads: int, quick: bool, log=print) -> dict:
    """Cosine of each embedding variant's vectors to eager PyTorch's (the fp32 original) on the
    build's evaluation texts: min and mean, beside each one's speed."""
    import numpy as np

    from ..builder.evalsets import TEXT_SET_DESCRIPTION, embedding_texts

    embedders = [w for w in workers if w.variant.task == "embedding" and w.variant.threads == threads]
    reference = next((w for w in embedders if w.variant.role == TORCH), None)
    if reference is None:
        return {}
    count = 24 if quick else 240
    log(f"  parity against PyTorch on {count} evaluation texts")
    texts = embedding_texts(count)

    def unit(rows):
        v = np.asarray(rows, dtype=np.float64)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    ref = unit(reference.embed(texts))
    out = {"texts": TEXT_SET_DESCRIPTION.format(count=count), "reference": reference.variant.key, "variants": {}}
    for worker in embedders:
        if worker is reference:
            continue
        cos = np.sum(unit(worker.embed(texts)) * ref, axis=1)
        out["variants"][worker.variant.key] = {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}
    return out


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
