"""The cost models: Lambda from measured latency and memory to dollars per million requests, and
the GPU endpoint always on or scaled to zero, by traffic pattern.

Lambda gives a function CPU in proportion to its memory: one full vCPU at 1769 MB, up to 6 at
10240 MB. Below 1769 MB the single thread gets a fraction of a core, so a CPU-bound request takes
(1769 / memory) times its 1-thread duration; from 1769 to 3538 MB the function sees 2 vCPUs,
throttled to (memory / 1769) of CPU time in all. Above the thread counts this machine can
measure, no further speed-up is assumed (marked "extrapolated").
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

PRICES_FILE = Path(__file__).resolve().parent.parent / "data" / "lambda_prices.json"
MEMORY_SIZES_MB = (128, 256, 512, 768, 1024, 1536, 1769, 2048, 3008, 3538, 4096, 6144, 10240)
ARCHITECTURES = ("arm64", "x86_64")
HOURS_PER_MONTH = 730
# Lambda needs room beyond the serving process's RSS (the runtime client, buffers): require this much.
MEMORY_HEADROOM = 1.15
# The recommended size: among the sizes within this fraction of the lowest cost, the fastest.
COST_TOLERANCE = 0.05


def load_prices(path: Path = PRICES_FILE) -> dict:
    return json.loads(Path(path).read_text())


def vcpu_share(memory_mb: int, mb_per_vcpu: int = 1769) -> float:
    return memory_mb / mb_per_vcpu


def threads_for(memory_mb: int, mb_per_vcpu: int = 1769, max_vcpus: int = 6) -> int:
    return min(max_vcpus, max(1, math.ceil(memory_mb / mb_per_vcpu)))


def estimated_duration_s(memory_mb: int, latency_by_threads: dict[int, float], mb_per_vcpu: int = 1769) -> tuple[float, bool]:
    """A request's duration at `memory_mb`, from latencies measured at whole thread counts.

    Returns (seconds, extrapolated): extrapolated when the size gets more vCPUs than were measured.
    """
    threads = threads_for(memory_mb, mb_per_vcpu)
    measured = max(t for t in latency_by_threads if t <= threads)
    base = latency_by_threads[measured]
    share = vcpu_share(memory_mb, mb_per_vcpu)
    throttle = max(1.0, measured / share)  # CPU time available vs the threads that want it
    return base * throttle, measured < threads


def cost_per_million(memory_mb: int, duration_s: float, prices: dict, arch: str) -> float:
    lam = prices["lambda"]
    step = lam["billing_granularity_ms"] / 1000.0
    billed_s = math.ceil(round(duration_s / step, 9)) * step
    gb_seconds = memory_mb / 1024.0 * billed_s
    table = lam[arch]
    return 1e6 * gb_seconds * table["gb_second"] + table["per_million_requests"]


def breakeven_requests_per_second(cost_per_million_usd: float, hourly_usd: float) -> float:
    """The steady request rate above which an always-on instance costs less than Lambda."""
    per_request = cost_per_million_usd / 1e6
    return hourly_usd / 3600.0 / per_request


@dataclass(frozen=True)
class SizeCost:
    memory_mb: int
    threads: int
    duration_ms: float
    extrapolated: bool
    fits: bool
    usd_per_million: dict

    def as_dict(self) -> dict:
        return {
            "memory_mb": self.memory_mb,
            "threads": self.threads,
            "duration_ms": self.duration_ms,
            "extrapolated": self.extrapolated,
            "fits_memory": self.fits,
            "usd_per_million": self.usd_per_million,
        }


def cost_table(latency_by_threads: dict[int, float], peak_rss_bytes: float, prices: dict, sizes=MEMORY_SIZES_MB) -> list[SizeCost]:
    lam = prices["lambda"]
    rows = []
    for mb in sizes:
        duration, extrapolated = estimated_duration_s(mb, latency_by_threads, lam["mb_per_vcpu"])
        fits = peak_rss_bytes * MEMORY_HEADROOM <= mb * 1024 * 1024
        rows.append(
            SizeCost(
                memory_mb=mb,
                threads=threads_for(mb, lam["mb_per_vcpu"], lam["max_vcpus"]),
                duration_ms=duration * 1000.0,
                extrapolated=extrapolated,
                fits=fits,
                usd_per_million={arch: cost_per_million(mb, duration, prices, arch) for arch in ARCHITECTURES},
            )
        )
    return rows


def recommend(rows: list[SizeCost], arch: str = "arm64") -> SizeCost | None:
    """The fastest size among those that fit the process and cost within COST_TOLERANCE of the
    cheapest (below one vCPU the cost is flat while latency grows, so "cheapest" alone would pick
    an arbitrarily slow size); ties go to the smaller size."""
    feasible = [r for r in rows if r.fits and not r.extrapolated]
    if not feasible:
        return None
    cheapest = min(r.usd_per_million[arch] for r in feasible)
    near = [r for r in feasible if r.usd_per_million[arch] <= cheapest * (1 + COST_TOLERANCE)]
    return min(near, key=lambda r: (r.duration_ms, r.memory_mb))


# --- the GPU endpoint: always on, or scaled to zero, by traffic pattern -------------------------------


@dataclass(frozen=True)
class TrafficPattern:
    """Traffic as periods of activity: how many a day, how long each, how many requests in each."""

    name: str
    periods_per_day: float
    period_minutes: float
    requests_per_period: float
    days_per_month: float = HOURS_PER_MONTH / 24

    @property
    def requests_per_month(self) -> float:
        return self.periods_per_day * self.requests_per_period * self.days_per_month


TRAFFIC_PATTERNS = (
    TrafficPattern("steady, 50 req/s around the clock", 1, 24 * 60, 50 * 86400),
    TrafficPattern("business hours, 20 req/s for 9 h on 22 weekdays", 1, 9 * 60, 20 * 9 * 3600, days_per_month=22),
    TrafficPattern("four 15-min bursts a day at 100 req/s", 4, 15, 100 * 15 * 60),
    TrafficPattern("a nightly 30-min batch at 200 req/s", 1, 30, 200 * 30 * 60),
    TrafficPattern("one request an hour", 24, 0, 1),
    TrafficPattern("idle", 0, 0, 0),
)


@dataclass(frozen=True)
class GpuPatternCost:
    pattern: TrafficPattern
    always_on_usd: float
    """min_instances = 1: one instance all month, whatever the traffic."""
    scale_to_zero_usd: float
    """min_instances = 0: billed from each wake-up until the idle scale-in ends."""
    cold_minutes_per_day: float
    """With scale to zero: minutes a day the API answers 503 (starting from zero) before a period's first answer."""
    lambda_usd: float | None

    def as_dict(self) -> dict:
        return {
            "pattern": self.pattern.name,
            "requests_per_month": self.pattern.requests_per_month,
            "always_on_usd": self.always_on_usd,
            "scale_to_zero_usd": self.scale_to_zero_usd,
            "cold_minutes_per_day": self.cold_minutes_per_day,
            "lambda_usd": self.lambda_usd,
        }


def scale_to_zero_hours(pattern: TrafficPattern, scale_in_minutes: float, cold_start_minutes: float) -> tuple[float, float]:
    """(instance hours a month, minutes a day of 503s) for one instance that scales to zero.

    Each period of traffic starts cold (its first requests wait for an instance) and is billed from
    the wake-up until the idle scale-in ends; periods whose billed spans fill the day never go cold."""
    span = cold_start_minutes + pattern.period_minutes + scale_in_minutes
    busy = pattern.periods_per_day * span
    if pattern.periods_per_day == 0:
        return 0.0, 0.0
    if busy >= 24 * 60:
        return 24 * pattern.days_per_month, 0.0
    return busy / 60 * pattern.days_per_month, pattern.periods_per_day * cold_start_minutes


def gpu_pattern_costs(prices: dict, lambda_usd_per_million: float | None = None,
                      instance_type: str = "ml.g5.xlarge", patterns=TRAFFIC_PATTERNS) -> list[GpuPatternCost]:
    """Per pattern: one GPU instance always on, the same scaled to zero, and Lambda at a measured
    $/1M requests (the GPU's own throughput limit is not modelled: one instance is assumed to keep up)."""
    hourly = prices["sagemaker"][instance_type]["per_hour"]
    zero = prices["sagemaker_scale_to_zero"]
    rows = []
    for pattern in patterns:
        hours, cold = scale_to_zero_hours(pattern, zero["scale_in_minutes"], zero["cold_start_minutes"])
        rows.append(GpuPatternCost(
            pattern=pattern,
            always_on_usd=hourly * HOURS_PER_MONTH,
            scale_to_zero_usd=hourly * hours,
            cold_minutes_per_day=cold,
            lambda_usd=None if lambda_usd_per_million is None else pattern.requests_per_month / 1e6 * lambda_usd_per_million,
        ))
    return rows
