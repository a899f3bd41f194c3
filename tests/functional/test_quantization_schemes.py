"""The build's int8 schemes on the real MiniLM: SmoothQuant is exact in fp32, the new graphs are
valid and run, per-token int8 answers a text alike whatever it is batched with, and the card
records every candidate's parity, size and latency."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from maas_runtime.tokenization import TextEncoder

from maas.builder import quantize, smoothquant
from maas.builder.selection import BATCH_INVARIANCE_ATOL
from maas.builder.evalsets import calibration_texts, embedding_texts
from maas.builder.tasks import build_task

HELD_OUT = [  # neither calibration nor parity texts
    "The orchestra rehearsed Mahler's fifth symphony until midnight.",
    "Battery drains fast after the latest phone update.",
    "Die Bibliothek öffnet morgen erst um zehn Uhr.",
    "git rebase -i HEAD~3 && git push --force-with-lease",
    "火山の噴火で空港が閉鎖された。",
    "Penguins cannot fly, but they are excellent swimmers. " * 30,
]


@pytest.fixture(scope="module")
def fp32_graph(built):
    """The fp32 MiniLM graph as the build optimizes it (the heavy model ships it unquantized)."""
    folder = built["minilm-gpu"].folder
    return folder / built["minilm-gpu"].card.model_file, folder / built["minilm-gpu"].card.inputs.tokenizer


@pytest.fixture(scope="module")
def observed(fp32_graph):
    """Calibration activations of the fp32 graph (fewer texts than the build: the checks below do
    not depend on how many)."""
    encoder = TextEncoder(fp32_graph[1], 256)
    texts = calibration_texts(32)
    return smoothquant.observe(fp32_graph[0], [encoder.encode(texts[i : i + 8])[0] for i in range(0, len(texts), 8)])


def run(path, tokenizer, texts):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    feeds, _ = TextEncoder(tokenizer, 256).encode(texts)
    return session.run(None, {k: v for k, v in feeds.items() if k in names})[0], feeds["attention_mask"]


def test_calibration_never_uses_the_parity_set():
    texts = calibration_texts(smoothquant.CALIBRATION_TEXTS)
    assert not set(texts) & set(embedding_texts())
    # (a draw may repeat a composed text; ranges and the ranking do not depend on repeats)
    assert len(texts) == smoothquant.CALIBRATION_TEXTS and len(set(texts)) > 0.9 * len(texts)


def test_smoothing_is_exact_in_fp32(fp32_graph, observed, tmp_path):
    # GIVEN the fp32 graph and its smoothed copy (X' = X / s, W' = diag(s) W)
    smoothed = tmp_path / "smoothed.onnx"
    report, _ = smoothquant.smooth(fp32_graph[0], smoothed, observed)
    onnx.checker.check_model(str(smoothed))
    assert report["matmuls"] == 36 and report["activations_smoothed"] == 24  # per layer: Q/K/V share one input, 3 more
    # WHEN both run on held-out texts
    exact, mask = run(fp32_graph[0], fp32_graph[1], HELD_OUT)
    moved, _ = run(smoothed, fp32_graph[1], HELD_OUT)
    # THEN X'W' == XW up to fp32 rounding, on every real token
    real = mask.astype(bool)
    assert np.abs(moved[real] - exact[real]).max() <= 1e-3 * np.abs(exact[real]).max()
    # AND the smoothing did move range: the Muls are there and the weights changed
    graph = onnx.load(str(smoothed)).graph
    assert sum(n.name.endswith("/SmoothMul") for n in graph.node) == 24
    before = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(fp32_graph[0])).graph.initializer}
    changed = [i.name for i in graph.initializer if i.name in before and not np.array_equal(onnx.numpy_helper.to_array(i), before[i.name])]
    assert len(changed) == 36


def test_sensitivity_ranks_every_matmul(fp32_graph, observed, tmp_path):
    smoothed = tmp_path / "smoothed.onnx"
    _, scales = smoothquant.smooth(fp32_graph[0], smoothed, observed)
    ranking = smoothquant.sensitivity(smoothed, observed, scales)
    errors = [e for _, e in ranking]
    assert len(ranking) == 36 and errors == sorted(errors, reverse=True)
    assert all(0 < e < 0.5 for e in errors)  # int8 error: neither zero nor noise


def min_cosine_to_fp32(fp32_graph, target) -> float:
    """The worst held-out text's cosine between `target`'s pooled embedding and the fp32 graph's."""
    task = build_task("embedding")
    exact, mask = run(fp32_graph[0], fp32_graph[1], HELD_OUT)
    served, _ = run(target, fp32_graph[1], HELD_OUT)
    a, b = (task.reference(x, {"attention_mask": mask}) for x in (exact, served))
    return float((a * b).sum(1).min())


@pytest.fixture(scope="module")
def smoothed_and_ranked(fp32_graph, observed, tmp_path_factory):
    smoothed = tmp_path_factory.mktemp("smoothed") / "smoothed.onnx"
    _, scales = smoothquant.smooth(fp32_graph[0], smoothed, observed)
    return smoothed, tuple(n for n, _ in smoothquant.sensitivity(smoothed, observed, scales))


@pytest.mark.parametrize("excluded", [0, 2])
def test_smoothquant_graph_is_valid_and_keeps_the_named_matmuls_fp32(fp32_graph, smoothed_and_ranked, tmp_path, excluded):
    smoothed, ranking = smoothed_and_ranked
    scheme = quantize.smoothquant_series("standard")[excluded]
    target = tmp_path / "int8.onnx"
    quantize.quantize(scheme, smoothed, target, ranking)
    model = onnx.load(str(target))
    onnx.checker.check_model(model)
    fp32_matmuls = {n.name for n in model.graph.node if n.op_type == "MatMul"} & set(ranking)
    assert fp32_matmuls == set(ranking[:excluded])
    assert sum(n.op_type in ("DynamicQuantizeMatMul", "MatMulInteger") for n in model.graph.node) == 36 - excluded
    # the position and token-type tables stay fp32; the word table is uint8
    assert len(quantize.small_gathers(onnx.load(str(smoothed)))) == 2
    assert target.stat().st_size < 0.35 * fp32_graph[0].stat().st_size
    assert min_cosine_to_fp32(fp32_graph, target) > 0.95


@pytest.mark.parametrize("excluded", [0, 2])
def test_per_token_graph_is_valid_accurate_and_keeps_the_named_matmuls_fp32(fp32_graph, smoothed_and_ranked, tmp_path, excluded):
    smoothed, ranking = smoothed_and_ranked
    scheme = quantize.per_token_series("standard")[excluded]
    assert scheme.batch_invariant and scheme.smoothed
    target = tmp_path / "int8.onnx"
    quantize.quantize(scheme, smoothed, target, ranking)
    model = onnx.load(str(target))
    onnx.checker.check_model(model)
    assert {n.name for n in model.graph.node if n.op_type == "MatMul"} & set(ranking) == set(ranking[:excluded])
    # one integer GEMM per activation for all its rewritten MatMuls (Q, K and V side by side), whose
    # outputs keep their names for the MatMuls' consumers
    groups, _ = smoothquant.weight_matmuls(onnx.load(str(smoothed)))
    rewritten = [n for g in groups.values() for n in g if n.name not in ranking[:excluded]]
    assert len(rewritten) == 36 - excluded
    assert sum(n.op_type == "MatMulIntegerToFloat" for n in model.graph.node) == sum(
        any(n.name not in ranking[:excluded] for n in g) for g in groups.values())
    produced = {o for n in model.graph.node if n.op_type in ("Mul", "Split") for o in n.output}
    assert {n.output[0] for n in rewritten} <= produced
    assert not any(n.op_type == "DynamicQuantizeLinear" for n in model.graph.node)  # no per-tensor activation range
    assert target.stat().st_size < 0.35 * fp32_graph[0].stat().st_size
    assert min_cosine_to_fp32(fp32_graph, target) > 0.98


def test_per_token_int8_answers_a_text_alike_in_any_batch(fp32_graph, smoothed_and_ranked, tmp_path):
    """The same text, alone or beside any others (a long one that would widen a per-tensor range),
    gets the same vector bit for bit; per-tensor dynamic int8 (SmoothQuant) does not."""
    smoothed, ranking = smoothed_and_ranked
    task = build_task("embedding")

    def vectors(path, texts):
        out, mask = run(path, fp32_graph[1], texts)
        return task.reference(out, {"attention_mask": mask})

    moved = {}
    for series in (quantize.per_token_series, quantize.smoothquant_series):
        scheme = series("standard")[0]
        target = tmp_path / f"{scheme.name}.onnx"
        quantize.quantize(scheme, smoothed, target, ranking)
        alone = np.concatenate([vectors(target, [t]) for t in HELD_OUT[:4]])
        together = vectors(target, HELD_OUT)[:4]  # beside the long held-out text: padded, other ranges
        moved[scheme.kind] = float(np.abs(alone - together).max())
    assert moved["per-token"] == 0.0
    assert moved["smoothquant"] > 1e-4  # the contrast: one range per batch moves the vectors


def test_weight_only_int8_answers_a_text_alike_in_any_batch_padded_to_its_multiple(fp32_graph, tmp_path):
    """MatMulNBits' int8 kernel runs rows in pairs and an odd count's last row alone (another
    summation order): served with the token length padded to the scheme's multiple, the same text
    gets the same vector bit for bit alone and beside any others, odd and even lengths alike."""
    scheme = quantize.WEIGHT_ONLY[0]
    assert scheme.batch_invariant and scheme.pad_to_multiple_of == 2
    target = tmp_path / "weight-only.onnx"
    quantize.quantize(scheme, fp32_graph[0], target)
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    encoder = TextEncoder(fp32_graph[1], 256, scheme.pad_to_multiple_of)
    task = build_task("embedding")

    def vectors(texts):
        feeds, _ = encoder.encode(texts)
        assert feeds["input_ids"].shape[1] % 2 == 0
        out = session.run(None, {k: v for k, v in feeds.items() if k in names})[0]
        return task.reference(out, feeds)

    tokens = [sum(encoder.tokenizer.encode(t).attention_mask) for t in HELD_OUT[:4]]
    assert {n % 2 for n in tokens} == {0, 1}  # odd and even lengths, each padded beside longer ones
    alone = np.concatenate([vectors([t]) for t in HELD_OUT[:4]])
    assert float(np.abs(alone - vectors(HELD_OUT)[:4]).max()) == 0.0
    assert float(np.abs(alone - vectors(HELD_OUT[:4][::-1])[::-1]).max()) == 0.0


def test_per_token_weights_match_the_dynamic_quantizer():
    """Per output column uint8 with zero point, as quantize_dynamic(per_channel=True, QUInt8) stores them."""
    w = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)
    w[:, 3] = np.abs(w[:, 3])  # a column with no negative weight: the range still includes 0
    q, scale, zero = smoothquant.weights_uint8(w)
    assert q.dtype == np.uint8 and scale.shape == zero.shape == (16,)
    assert zero[3] == 0
    np.testing.assert_allclose((q.astype(np.float32) - zero) * scale, w, atol=scale.max() / 2 + 1e-7)


def test_card_records_every_candidate_with_latency(built):
    report = built["minilm"].card.optimization.quantization
    names = [c["name"] for c in report.candidates]
    assert {"dynamic-int8", "weight-only-int8-b128", "fused-weight-only-int8-b128"} <= set(names)
    assert any(n.startswith("fused-smoothquant-int8-x") for n in names)
    assert any(n.startswith("fused-per-token-int8-x") for n in names)
    assert {c["graph"] for c in report.candidates} == {"standard", "fused"}
    for c in report.candidates:
        assert c["latency"]["mixed_batch_ms"] > 0 and c["latency"]["batch1_ms"] > 0
        assert c["parity"]["min_cosine"] > 0.9 and 0 < c["size_ratio"] < 0.35
        # batch invariance is measured, not only claimed (selection.batch_dependence)
        assert c["batch_dependence"] >= 0 and (not c["batch_invariant"] or c["batch_dependence"] <= BATCH_INVARIANCE_ATOL)
    dynamic = next(c for c in report.candidates if c["name"] == "dynamic-int8")
    assert not dynamic["batch_invariant"] and dynamic["batch_dependence"] > BATCH_INVARIANCE_ATOL
    chosen = next(c for c in report.candidates if c["name"] == report.chosen)
    assert chosen["passed"] and report.prefer == "speed" and report.reason
    assert "mixed_batch: one request of 32" in report.latency_workload and "re-timed side by side" in report.latency_workload
    assert report.calibration["inputs"] and len(report.calibration["most_sensitive"]) == quantize.MAX_EXCLUDED
    # each smoothed series stops at its first passing candidate
    for kind in ("smoothquant", "per-token"):
        series = [c for c in report.candidates if f"-{kind}-" in f"-{c['name']}"]
        assert all(not c["passed"] for c in series[:-1])
        assert [c["fp32_matmuls"] for c in series] == list(range(len(series)))
    # a batch-dependent candidate ships only where no batch-invariant one passes within the premium
    if not chosen["batch_invariant"]:
        assert "depend" in report.reason
