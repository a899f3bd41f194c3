"""The frontier plot's points: build candidates from the card, served variants from the run."""

import pytest

from maas.bench.report import frontier_points


def _model(candidates):
    cases = {"mixed/b32": {
        "kit@2t:handler": {"p50": 0.4},
        "onnx-fp32@2t:predict": {"p50": 0.5},
        "torch@2t:torch": {"p50": 2.0},
        "fastembed@2t:encode": {"p50": 1.6},
    }}
    parity = {"variants": {"m/kit@2t": {"min_cosine": 0.99}, "m/onnx-fp32@2t": {"min_cosine": 0.9999},
                           "m/fastembed@2t": {"min_cosine": 0.9998}}}
    return {"name": "m", "threads": 2, "quantization": "weight-only-int8-b128", "candidates": candidates,
            "latency": {"cases": cases, "parity": parity},
            "footprint": {"model_files": {"optimized_bytes": 23e6, "fp32_onnx_bytes": 90e6, "baseline_weights_bytes": 91e6}}}


def test_candidates_take_the_builds_latency_where_it_measured_one():
    points = {p["label"]: p for p in frontier_points(_model([
        # as the build writes them (maas.builder.selection): latency of one mixed request, parity vs fp32
        {"name": "smooth-int8", "bytes": 22e6, "parity": {"min_cosine": 0.985},
         "latency": {"mixed_batch": 32, "mixed_batch_ms": 200.0, "batch1_ms": 9.0}},
        {"name": "weight-only-int8-b128", "bytes": 23e6, "parity": {"min_cosine": 0.99}},
    ]))}
    assert points["candidate smooth-int8"]["items_per_s"] == pytest.approx(160.0)
    assert points["candidate smooth-int8"]["min_cosine"] == 0.985
    assert points["candidate weight-only-int8-b128"]["items_per_s"] is None  # listed, not plotted
    assert points["candidate weight-only-int8-b128"]["min_cosine"] == 0.99


def test_served_variants_are_placed_by_this_runs_throughput_and_parity():
    points = {p["kind"]: p for p in frontier_points(_model([]))}
    assert points["kit"]["items_per_s"] == pytest.approx(80.0) and points["kit"]["bytes"] == 23e6
    assert points["torch"]["min_cosine"] == 1.0 and points["torch"]["items_per_s"] == pytest.approx(16.0)
    assert points["fastembed"]["min_cosine"] == 0.9998 and points["fastembed"]["bytes"] == 90e6
    assert "sentence-transformers" not in points  # not run: no point
