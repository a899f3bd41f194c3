"""Numeric pre- and post-processing shared by tasks, and by the build's fp32 reference."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


# Both run on every request right after the graph, whose weights have just pushed the
# interpreter's working set out of the CPU caches: each NumPy call then costs several times what
# it costs in a loop of its own, so these use as few as they can.


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the token vectors, ignoring padding (as sentence-transformers pools). Summed token
    by token in order, so a text's padding (zeros, added last) leaves its sum bit for bit as it
    is alone: a batch-invariant graph stays batch-invariant here. (A BLAS product, one call fewer,
    was tried: its blocking depends on the padded length, and the same text moved by 3e-8.)"""
    weights = mask[..., None].astype(hidden.dtype)
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.square(vectors).sum(axis=1, keepdims=True))
    return vectors / np.maximum(norms, 1e-12)


def embedding_json_values(vectors: np.ndarray) -> list:
    """Vectors as Python floats rounded to 9 decimal places.

    A float32 read back as a double prints with up to 17 digits; rounded, it prints with at
    most 9 after the point: the JSON is smaller and encodes faster, and the change (at most
    5e-10 per component) is below float32's own resolution for any component above 0.01.
    """
    return np.round(vectors.astype(np.float64), 9).tolist()


# --- length-aware batching -------------------------------------------------------------------------
# A batch runs padded to its longest input, so one long text in a request of short ones makes
# every row pay for its length (and attention for its square). Sorting the request's inputs by
# token length and running contiguous runs of the sorted order as sub-batches, each padded to its
# own longest, removes most of that waste for the price of a few more session runs.
#
# How a request is cut is a trade: each run has a fixed cost (ONNX Runtime's dispatch, thread
# pool wake-ups, small-matrix inefficiency), padding costs time per token and attention per token
# times length. `min_cost_runs` chooses the cut that minimises exactly that, t(n, L) = a + b*n*L +
# c*n*L^2 per sub-batch of n inputs padded to L tokens, over every contiguous partition of the
# sorted lengths (a small dynamic programme: a request holds at most a few dozen inputs). The
# coefficients were fitted by timing session.run over batch sizes 1-32 and lengths 8-256 for the
# int8 MiniLM on 2 cores; their ratios, not their absolute values, decide the cut, so a slower or
# faster CPU cuts alike. `maas bench` times the alternatives below against it on the `mixed`
# workload in every full run (paired, call by call) and prints the comparison; the cost model is
# the default because it was fastest there or tied with the best fixed rule, and unlike a fixed
# rule (chunks of k, a waste bound) it keeps a uniform batch whole and splits a skewed one where
# the skew is.

RUN_COST = (4.0e-4, 2.2e-5, 4.0e-8)
"""Seconds per session run, per padded token, per padded token times length (see above)."""


def min_cost_runs(lengths: np.ndarray, cost: tuple[float, float, float] = RUN_COST) -> list[np.ndarray]:
    """Row indices of each sub-batch, cut from the inputs sorted by length (stable) so that the
    modelled time of all runs together is least."""
    n = len(lengths)
    order = np.argsort(lengths, kind="stable")
    if n <= 1:
        return [order]
    a, b, c = cost
    ordered = lengths[order].astype(np.float64)
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    cut = np.zeros(n + 1, dtype=np.int64)
    for end in range(1, n + 1):  # sub-batch ordered[start:end], padded to ordered[end - 1]
        length = ordered[end - 1]
        counts = end - np.arange(end)
        totals = best[:end] + a + counts * length * (b + c * length)
        start = int(np.argmin(totals))
        best[end], cut[end] = totals[start], start
    runs, end = [], n
    while end > 0:
        runs.append(order[cut[end] : end])
        end = cut[end]
    return runs[::-1]


def one_run(lengths: np.ndarray) -> list[np.ndarray]:
    """The whole request as one batch padded to its longest input (no length-aware batching)."""
    return [np.arange(len(lengths))]


def fixed_runs(size: int):
    """Chunks of `size` consecutive inputs of the sorted order."""

    def runs(lengths: np.ndarray) -> list[np.ndarray]:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + size] for i in range(0, len(order), size)]

    return runs


def bounded_waste_runs(waste: float):
    """Greedy on the sorted order: a sub-batch closes before the input that would make more than
    `waste` of its padded tokens padding."""

    def runs(lengths: np.ndarray) -> list[np.ndarray]:
        order = np.argsort(lengths, kind="stable")
        ordered = lengths[order]
        out, start, real = [], 0, 0
        for i, length in enumerate(ordered):
            real += int(length)
            if i > start and 1 - real / (int(length) * (i - start + 1)) > waste:
                out.append(order[start:i])
                start, real = i, int(length)
        out.append(order[start:])
        return out

    return runs


BATCHING_POLICIES = {
    "min-cost": min_cost_runs,
    "one-batch": one_run,
    "chunks-of-8": fixed_runs(8),
    "waste-0.2": bounded_waste_runs(0.2),
}
"""Ways to cut a request into sub-batches: lengths (one per input) -> row indices per run."""
DEFAULT_BATCHING = "min-cost"


def padded_tokens(lengths: np.ndarray, runs: list[np.ndarray]) -> int:
    """Tokens the runs feed the graph, padding included."""
    return int(sum(len(rows) * int(lengths[rows].max()) for rows in runs if len(rows)))
