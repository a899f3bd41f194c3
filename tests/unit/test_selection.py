"""The build's choice among measured candidates: speed within a size premium, or size."""

import pytest

from maas_runtime.tasks.base import Prediction

from maas.builder import selection
from maas.builder.selection import BATCH_INVARIANCE_ATOL, MAX_SIZE_PREMIUM, SPEED_TIE, batch_dependence, choose, workload
from maas.builder.tasks import build_task


def entry(name, mb, batch32_ms, passed=True, batch_invariant=True):
    return {"name": name, "bytes": int(mb * 1e6), "passed": passed, "batch_invariant": batch_invariant,
            "latency": {"mixed_batch_ms": batch32_ms, "batch1_ms": 1.0}}


# GIVEN candidates as a MiniLM build measures them (size in MB, batch-32 mixed ms, passed)
MINILM_LIKE = [
    entry("dynamic-int8", 22.9, 180.0, passed=False, batch_invariant=False),  # fastest, but misses the parity bar
    entry("weight-only-int8-b128", 23.1, 400.0),
    entry("weight-only-int8-b64", 23.4, 410.0),
    entry("fused-weight-only-int8-b128", 23.6, 330.0),
    entry("fused-smoothquant-int8-x1", 25.3, 200.0, batch_invariant=False),  # answers move with the batch
    entry("fused-weight-only-int8-b32", 30.5, 150.0),  # fastest passing, but 32% larger than the smallest
]


@pytest.mark.parametrize(
    ("candidates", "prefer", "expected"),
    [
        (MINILM_LIKE, "speed", "fused-weight-only-int8-b128"),
        # batch-dependent candidates ship only when no batch-invariant one passes
        ([entry("invariant", 23, 400), entry("dependent", 23, 200, batch_invariant=False)], "speed", "invariant"),
        ([entry("invariant", 23, 400, passed=False), entry("dependent", 23, 200, batch_invariant=False)], "speed", "dependent"),
        # ... or only far larger (a tiny MLP's weight-only blocks outweigh its fp32 weights)
        ([entry("weight-only", 0.101, 1.0), entry("dynamic", 0.033, 1.0, batch_invariant=False)], "speed", "dynamic"),
        (MINILM_LIKE, "size", "weight-only-int8-b128"),
        # a failing candidate is never chosen, however small and fast
        ([entry("a", 10, 10, passed=False), entry("b", 20, 100)], "speed", "b"),
        # within the speed tie the smaller one wins: timings on a shared machine are noisy, sizes are not
        ([entry("small", 20, 100), entry("big", 21, 100 / (1 + SPEED_TIE) + 1)], "speed", "small"),
        # clearly faster and within the premium: the faster one
        ([entry("small", 20, 100), entry("big", 20 * (1 + MAX_SIZE_PREMIUM) - 0.01, 50)], "speed", "big"),
        # clearly faster but over the premium: the smaller one
        ([entry("small", 20, 100), entry("big", 20 * (1 + MAX_SIZE_PREMIUM) + 0.01, 50)], "speed", "small"),
        ([entry("only", 20, 100)], "speed", "only"),
    ],
)
def test_choice_on_measured_candidates(candidates, prefer, expected):
    chosen, reason = choose(candidates, prefer)
    assert chosen["name"] == expected
    assert f"prefer = {prefer}" in reason


def test_reason_names_the_figures_that_decided():
    chosen, reason = choose(MINILM_LIKE, "speed")
    assert "330.0 ms" in reason and "400.0 ms" in reason and "weight-only-int8-b128" in reason
    # and says which faster candidates lost, on size and on batch dependence
    assert "fused-weight-only-int8-b32 was faster (150.0 ms) but 32% larger" in reason
    assert "fused-smoothquant-int8-x1 was faster (200.0 ms) but its answers depend on the other inputs" in reason


def test_a_batch_dependent_choice_says_so():
    chosen, reason = choose([entry("weight-only", 0.101, 1.0), entry("dynamic", 0.033, 1.0, batch_invariant=False)])
    assert chosen["name"] == "dynamic" and "depend slightly on the other inputs" in reason


def test_no_passing_candidate_is_an_error():
    with pytest.raises(ValueError):
        choose([entry("a", 10, 10, passed=False)])


def test_workload_is_a_mixed_batch_in_order():
    inputs = [f"text {i}" for i in range(240)]
    batch, single, words = workload(inputs)
    assert len(batch) == 32 and batch == sorted(batch, key=inputs.index)
    assert len(workload(inputs, 8)[0]) == 8  # never more than the model serves in one request
    assert batch[0] == inputs[0] and batch[-1] == inputs[7 * 31]
    assert single == inputs[120] and "32" in words


class _Model:
    """Embeds each input from its own length, with every value scaled by the request's size where
    `dependent` (as per-tensor activation ranges would move them)."""

    max_batch = 32

    def __init__(self, dependent: bool):
        self.dependent = dependent

    def predict(self, inputs, parameters=None):
        scale = 1 + len(inputs) * 1e-3 if self.dependent else 1.0
        return Prediction([[len(x) * scale, 0.5 * scale] for x in inputs])


def test_batch_dependence_compares_each_input_alone_with_its_answer_inside_the_request():
    texts = [("word " * (i % 7 + 1)).strip() for i in range(96)]
    embedding = build_task("embedding")
    assert batch_dependence(embedding, _Model(dependent=False), texts) == 0.0
    assert batch_dependence(embedding, _Model(dependent=True), texts) > BATCH_INVARIANCE_ATOL


def test_a_scheme_measured_batch_dependent_loses_to_an_invariant_one_and_the_reason_says_measured():
    measured = entry("weight-only-int8-b128", 23.1, 120.0, batch_invariant=False) | {
        "batch_dependence": 0.0078, "activations": "int8 per block at run time (accuracy_level 4)"}
    per_tensor = entry("fused-smoothquant-int8-x0", 23.5, 110.0, batch_invariant=False) | {
        "activations": "uint8 per-tensor, computed at run time, after smoothing"}
    chosen, reason = choose([measured, entry("fused-per-token-int8-x0", 23.5, 180.0)])
    assert chosen["name"] == "fused-per-token-int8-x0"
    assert "measured on the build machine: an input alone differs by up to 0.0078" in reason
    chosen, reason = choose([per_tensor, entry("fused-per-token-int8-x0", 23.5, 180.0)])
    assert "activations quantized per batch" in reason


def test_side_by_side_times_the_candidates_in_turn_round_by_round(monkeypatch):
    """GIVEN two candidates whose calls take known times on a clock that only they advance
    WHEN they are re-timed side by side
    THEN each gets its own medians, and their calls alternate within every round (drift hits both)."""
    clock, calls = [0.0], []
    monkeypatch.setattr(selection.time, "perf_counter", lambda: clock[0])

    class Timed:
        max_batch = 32

        def __init__(self, name, batch_s, single_s):
            self.name, self.batch_s, self.single_s = name, batch_s, single_s

        def predict(self, inputs, parameters=None):
            calls.append((self.name, len(inputs)))
            clock[0] += self.batch_s if len(inputs) > 1 else self.single_s

    texts = [f"text {i}" for i in range(240)]
    fast, slow = Timed("fast", 0.100, 0.002), Timed("slow", 0.150, 0.003)
    figures = selection.side_by_side([fast, slow], texts)
    assert figures == [{"mixed_batch": 32, "mixed_batch_ms": 100.0, "batch1_ms": 2.0},
                       {"mixed_batch": 32, "mixed_batch_ms": 150.0, "batch1_ms": 3.0}]
    timed = calls[4:]  # after one warm-up pair each
    per_turn = 1 + selection.SINGLES_PER_ROUND
    turns = [timed[i][0] for i in range(0, len(timed), per_turn)]
    assert turns == ["fast", "slow", "slow", "fast"] * (selection.ROUNDS_SIDE_BY_SIDE // 2) + ["fast", "slow"] * (selection.ROUNDS_SIDE_BY_SIDE % 2)
    assert all(timed[i][1] == 32 for i in range(0, len(timed), per_turn))
