"""Summaries of repeated measurements: medians with their spread."""

from __future__ import annotations

import statistics


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50": statistics.median(values),
        "p25": percentile(values, 25),
        "p75": percentile(values, 75),
        "p99": percentile(values, 99),
        "min": min(values),
        "max": max(values),
    }


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None
