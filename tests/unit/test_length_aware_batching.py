"""Sub-batch policies of length-aware batching: every input runs exactly once, in runs of the
sorted order, and the cost model cuts where the skew is."""

import numpy as np
import pytest

from maas_runtime.tasks.processing import (
    BATCHING_POLICIES,
    DEFAULT_BATCHING,
    RUN_COST,
    min_cost_runs,
    padded_tokens,
)


def _modelled(lengths, runs, cost=RUN_COST):
    a, b, c = cost
    return sum(a + len(r) * int(lengths[r].max()) * (b + c * int(lengths[r].max())) for r in runs)


@pytest.mark.parametrize("policy", sorted(BATCHING_POLICIES))
@pytest.mark.parametrize("seed", range(5))
def test_every_policy_runs_each_input_once_in_sorted_runs(policy, seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 256, size=int(rng.integers(1, 40)))
    runs = BATCHING_POLICIES[policy](lengths)
    rows = np.concatenate(runs)
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    if policy != "one-batch":  # each run is a contiguous stretch of the ascending lengths
        assert np.all(np.diff(lengths[rows]) >= 0)


def test_min_cost_is_no_worse_than_any_contiguous_cut_it_could_make():
    """Against brute force over every way to cut a small sorted request."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        lengths = rng.integers(4, 200, size=9)
        order = np.argsort(lengths, kind="stable")
        best = min(
            _modelled(lengths, [order[i:j] for i, j in zip((0, *cuts), (*cuts, 9))])
            for mask in range(2 ** 8)
            for cuts in [tuple(k + 1 for k in range(8) if mask >> k & 1)]
        )
        assert _modelled(lengths, min_cost_runs(lengths)) == pytest.approx(best)


def test_a_uniform_request_stays_whole_and_a_long_outlier_runs_alone():
    assert len(min_cost_runs(np.full(32, 14))) == 1
    lengths = np.array([14] * 31 + [240])
    runs = min_cost_runs(lengths)
    assert [len(r) for r in runs] == [31, 1] and runs[1].tolist() == [31]
    assert padded_tokens(lengths, runs) == 31 * 14 + 240 < padded_tokens(lengths, BATCHING_POLICIES["one-batch"](lengths))


def test_the_default_policy_is_registered():
    assert BATCHING_POLICIES[DEFAULT_BATCHING] is min_cost_runs
