"""How a candidate is timed, and which one the build keeps.

Every candidate is timed through the runtime exactly as it will be served (`Model.predict`), on a
workload taken from the evaluation inputs: one request of 32 mixed-length inputs (fewer where the
model's serving limit is lower) in their order
(short, long, truncated side by side, as real traffic arrives) and one request of a single input.
These are build-time figures on the build machine, recorded in the card for comparison between
candidates of one build, not a benchmark (`maas bench` is).
"""

from __future__ import annotations

import time

import numpy as np

BATCH = 32
ROUNDS_BATCH = 3
ROUNDS_SINGLE = 10
ROUNDS_SIDE_BY_SIDE = 7
"""Interleaved rounds in which the passing candidates are re-timed against each other (`side_by_side`)."""
SINGLES_PER_ROUND = 3

MAX_SIZE_PREMIUM = 0.15
"""prefer = "speed": a passing candidate more than 15% larger than the smallest passing one is not
chosen however fast. On MiniLM, keeping the one or two most sensitive MatMuls in fp32 costs 5-10%
of the file; more than that is as much bytes as a whole other int8 layer, which a cold start reads
and a Lambda package carries, for accuracy the other schemes already reach."""
SPEED_TIE = 0.10
"""Candidates within 10% of the fastest batch-32 time count as equally fast and the smallest of
them wins: on a shared 2-core build machine run-to-run noise is of that order, and size is exact."""
BATCH_INVARIANCE_ATOL = 1e-5
"""A candidate counts as batch-invariant where no output value of an input answered alone differs by
more than this from the same input answered inside the mixed request (fp32 and the per-token graph:
0 where measured)."""


def workload(inputs: list, max_batch: int = BATCH) -> tuple[list, object, str]:
    """The mixed request (every n-th evaluation input, in order; 32, or the model's serving limit
    where that is lower), the batch-1 input, and the words the card records for both."""
    size = min(BATCH, max_batch)
    step = max(1, len(inputs) // size)
    batch = inputs[::step][:size]
    single = inputs[len(inputs) // 2]
    words = (
        f"mixed_batch: one request of {len(batch)} evaluation inputs (every {step}th of {len(inputs)}, in order, "
        f"lengths mixed), median of {ROUNDS_BATCH} rounds on the session parity warmed; batch1: the middle evaluation "
        f"input alone, median of {ROUNDS_SINGLE}; through maas_runtime.Model.predict, the build machine's threads; "
        f"the passing candidates then re-timed side by side (both requests, each candidate in turn, "
        f"{ROUNDS_SIDE_BY_SIDE} rounds), which is what their latency records and the choice ranks"
    )
    return batch, single, words


def _median_ms(call, rounds: int, warmup: int) -> float:
    for _ in range(warmup):
        call()
    return _ms([_seconds(call) for _ in range(rounds)])


def _seconds(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def latency(model, inputs: list) -> dict:
    """{"mixed_batch", "mixed_batch_ms", "batch1_ms"} for a loaded Model."""
    batch, single, _ = workload(inputs, model.max_batch)
    return {
        "mixed_batch": len(batch),
        # No warm-up for the batch: parity has just run every input through this session.
        "mixed_batch_ms": _median_ms(lambda: model.predict(batch), ROUNDS_BATCH, 0),
        "batch1_ms": _median_ms(lambda: model.predict([single]), ROUNDS_SINGLE, 3),
    }


def side_by_side(models: list, inputs: list) -> list[dict]:
    """`latency`'s figures for each of `models`, timed against each other: round by round, each
    model's mixed request and then its batch-1 input (SINGLES_PER_ROUND times) in turn (in reverse
    order every other round), medians over ROUNDS_SIDE_BY_SIDE rounds.

    A candidate's first figures are taken right after its own quantization and parity, a minute or
    more from the others', on a machine whose speed drifts: on this project's shared 2-core build
    machine the same fused weight-only MiniLM graph measured 117, 114 and 149 ms for the mixed
    batch in three builds. Interleaved, a drift touches every candidate alike, so the build ranks
    the passing candidates on these."""
    batch, single, _ = workload(inputs, min(m.max_batch for m in models))
    times = [([], []) for _ in models]
    for model in models:  # each session has run other shapes since its first figures
        model.predict(batch)
        model.predict([single])
    turns = list(zip(models, times))
    for round_ in range(ROUNDS_SIDE_BY_SIDE):
        for model, (mixed, singles) in turns if round_ % 2 == 0 else turns[::-1]:
            mixed.append(_seconds(lambda: model.predict(batch)))
            singles.extend(_seconds(lambda: model.predict([single])) for _ in range(SINGLES_PER_ROUND))
    return [{"mixed_batch": len(batch), "mixed_batch_ms": _ms(mixed), "batch1_ms": _ms(singles)} for mixed, singles in times]


def _ms(seconds: list[float]) -> float:
    return round(float(np.median(seconds)) * 1000, 3)


def batch_dependence(task, model, inputs: list) -> float:
    """How far an input's answer moves with the other inputs of its request, measured: the largest
    difference between any value of the answer to an input of the mixed request sent alone and the
    answer to it inside that request (its length-aware sub-batch and padding included), each as
    the build task's `served` array (an embedding; a classifier's scores in label order).

    A scheme's `batch_invariant` is what its arithmetic promises; the build machine's kernels do
    not always keep it. ONNX Runtime 1.32's weight-only int8 (MatMulNBits, accuracy level 4) on an
    AVX-512 VNNI CPU answered a text of an odd token count alone differently from the same text
    padded or beside others (0.06 in MiniLM's hidden state) until the scheme was served padded to
    an even length (quantize.Scheme.pad_to_multiple_of); so the card records what held.
    """
    batch, _, _ = workload(inputs, model.max_batch)
    together = task.served(model, batch)  # one request: the workload is within the serving limit
    alone = np.concatenate([task.served(model, [item]) for item in batch])
    return float(np.abs(alone - together).max())


def could_win(size: int, passing_sizes: list[int], prefer: str = "speed") -> bool:
    """Whether a candidate of `size` bytes could still be chosen beside those already passing: a
    series stops measuring once its next candidate is too large to win (the rule of `choose`)."""
    if not passing_sizes:
        return True
    premium = MAX_SIZE_PREMIUM if prefer == "speed" else 0.0
    return size <= min(passing_sizes) * (1 + premium)


def choose(entries: list[dict], prefer: str = "speed") -> tuple[dict, str]:
    """The candidate to ship among measured entries (each with "name", "bytes", "passed",
    "latency" and "batch_invariant"), and the reason the card gives. None of them passing is the
    caller's error.

    A batch-dependent candidate (one whose answer for an input moves with the other inputs of its
    request: quantize.Scheme.batch_invariant) ships only when no batch-invariant one passes within
    the size premium of the smallest passing candidate. A client expects the same input to get the
    same answer whatever it is sent with (caches, dedup and tests rely on it), which is worth the
    speed those schemes gain, but not a file several times larger (a tiny MLP's weight-only blocks
    outweigh its fp32 weights): then the batch-dependent one ships and the reason says so."""
    passing = [e for e in entries if e["passed"]]
    if not passing:
        raise ValueError("no candidate passes")
    if prefer == "speed":
        limit = min(e["bytes"] for e in passing) * (1 + MAX_SIZE_PREMIUM)
        invariant = [e for e in passing if e.get("batch_invariant", True)]
        if any(e["bytes"] <= limit for e in invariant) and len(invariant) < len(passing):
            chosen, reason = _choose(invariant, prefer)
            skipped = [e for e in passing if not e.get("batch_invariant", True)
                       and e["latency"]["mixed_batch_ms"] < chosen["latency"]["mixed_batch_ms"]]
            if skipped:
                quicker = min(skipped, key=lambda e: e["latency"]["mixed_batch_ms"])
                reason += (f"; {quicker['name']} was faster ({quicker['latency']['mixed_batch_ms']} ms) but its answers "
                           f"depend on the other inputs of a request ({_why_dependent(quicker)})")
            return chosen, reason
    chosen, reason = _choose(passing, prefer)
    if not chosen.get("batch_invariant", True):
        reason += (f"; its answers depend slightly on the other inputs of a request ({_why_dependent(chosen)}): "
                   "no batch-invariant candidate passed within the size premium")
    return chosen, reason


def _why_dependent(entry: dict) -> str:
    """Why a candidate's answers move with its request: its scheme (per-tensor activation ranges),
    or what the build measured on its machine (`batch_dependence`)."""
    if "per-tensor" in str(entry.get("activations", "")):
        return "activations quantized per batch"
    return f"measured on the build machine: an input alone differs by up to {entry.get('batch_dependence')}"


def _choose(passing: list[dict], prefer: str) -> tuple[dict, str]:
    smallest = min(passing, key=lambda e: (e["bytes"], e["latency"]["mixed_batch_ms"]))
    if prefer == "size":
        return smallest, "the smallest candidate that meets every parity and size threshold (prefer = size)"
    affordable = [e for e in passing if e["bytes"] <= smallest["bytes"] * (1 + MAX_SIZE_PREMIUM)]
    fastest = min(affordable, key=lambda e: e["latency"]["mixed_batch_ms"])
    tied = [e for e in affordable if e["latency"]["mixed_batch_ms"] <= fastest["latency"]["mixed_batch_ms"] * (1 + SPEED_TIE)]
    chosen = min(tied, key=lambda e: (e["bytes"], e["latency"]["mixed_batch_ms"]))
    ms = chosen["latency"]["mixed_batch_ms"]
    too_large = [e for e in passing if e not in affordable and e["latency"]["mixed_batch_ms"] < ms]
    if too_large:
        quicker = min(too_large, key=lambda e: e["latency"]["mixed_batch_ms"])
        note = (f"; {quicker['name']} was faster ({quicker['latency']['mixed_batch_ms']} ms) but "
                f"{quicker['bytes'] / smallest['bytes'] - 1:.0%} larger than the smallest passing, over the {MAX_SIZE_PREMIUM:.0%} premium")
    else:
        note = ""
    if chosen is smallest:
        if len(affordable) == 1:
            return chosen, f"the smallest passing candidate and the only one within {MAX_SIZE_PREMIUM:.0%} of its size (prefer = speed){note}"
        return chosen, (
            f"the smallest passing candidate and, at {ms} ms for the mixed batch, within "
            f"{SPEED_TIE:.0%} of the fastest passing one within {MAX_SIZE_PREMIUM:.0%} of its size (prefer = speed){note}"
        )
    return chosen, (
        f"the fastest passing candidate on the mixed batch ({ms} ms vs {smallest['latency']['mixed_batch_ms']} ms "
        f"for the smallest passing, {smallest['name']}), {chosen['bytes'] / smallest['bytes'] - 1:.1%} larger, "
        f"within the {MAX_SIZE_PREMIUM:.0%} size premium (prefer = speed){note}"
    )
