"""`maas bench --quick` end to end on the real built artifacts: every measurement runs once.

One module-scoped run (about a minute on 2 cores); the tests check the figures are real
measurements with the right structure, not their speed.
"""

import json

import pytest

from maas.bench import run_bench
from maas.bench.workload import batches_for

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def bench(built, manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    results = run_bench(manifest, ["minilm", "digits"], quick=True, out_dir=out, markdown=out / "BENCHMARKS.md", log=lambda *_: None)
    return results, out


def test_results_json_is_written_and_matches_the_returned_figures(bench):
    results, out = bench
    saved = json.loads((out / "results.json").read_text())
    assert saved["quick"] is True
    assert set(saved["models"]) == {"minilm", "digits"}
    assert saved["models"]["minilm"]["coldstart"].keys() == results["models"]["minilm"]["coldstart"].keys()


@pytest.mark.parametrize("name", ["minilm", "digits"])
def test_cold_start_phases_add_up_and_only_the_baseline_imports_torch(bench, name):
    m = bench[0]["models"][name]
    roles = {v["role"] for v in m["coldstart"].values()}
    assert roles == {"kit", "runtime", "onnx-fp32", "torch"}
    for v in m["coldstart"].values():
        (s,) = v["samples"]
        phases = s["process_start_s"] + s["import_s"] + s["load_s"] + s["first_inference_s"]
        assert all(s[k] > 0 for k in ("process_start_s", "import_s", "load_s", "first_inference_s"))
        assert phases == pytest.approx(s["total_s"], abs=1e-6)
        assert s["peak_rss_bytes"] > 20e6
        assert v["torch_imported"] is (v["role"] == "torch")
    assert all(m["latency"]["onnx_workers_without_torch"].values())


@pytest.mark.parametrize("name", ["minilm", "digits"])
def test_every_batch_size_is_timed_on_every_path(bench, name):
    m = bench[0]["models"][name]
    t = m["threads"]
    for set_name in m["inputs"]:
        for b in batches_for(set_name):
            case = m["latency"]["cases"][f"{set_name}/b{b}"]
            paths = (f"kit@{t}t:handler", f"kit@{t}t:predict", f"onnx-fp32@{t}t:predict", f"torch@{t}t:torch")
            if (set_name, b) != ("mixed", 32):  # a mixed pass's one padded batch is timed among the policies
                paths += (f"kit@{t}t:session",)
            for key in paths:
                assert case[key]["n"] >= 1 and all(x > 0 for x in case[key]["samples"]), (case, key)
    # the handler runs the session and more, measured as paired per-call differences at both thread
    # counts (three unpaired samples on a loaded machine can put one slow session call beside a fast handler call)
    paired = [e for e in m["latency"]["overhead"].values() if e["case"] == f"{m['first_set']}/b1"]
    assert sorted(e["threads"] for e in paired) == sorted({1, t})
    for e in paired:
        assert e["differences"]["handler-session"]["p50"] > 0
        assert e["differences"]["handler-session"]["n"] == e["paths"]["handler"]["n"] >= 5
    assert {row["target"] for row in m["targets"]} >= {"cold_start_ratio", "handler_overhead_ms", "footprint_ratio"}


def test_mixed_workload_is_timed_with_its_profile_policies_breakdown_and_parity(bench):
    """minilm's `mixed` stream: its length profile, each request of 32 timed through every path,
    the sub-batch policies compared, where the time goes, and every variant's parity to PyTorch."""
    m = bench[0]["models"]["minilm"]
    t = m["threads"]
    profile = m["inputs"]["mixed"]["profile"]
    assert profile["count"] == len(m["inputs"]["mixed"]["tokens_per_input"]) and profile["p50"] <= profile["p90"] <= profile["p99"] <= profile["max"]
    lat = m["latency"]
    assert lat["cases"]["mixed/b32"][f"kit@{t}t:handler"]["n"] >= 1
    policies = lat["batching"]["policies"]
    assert set(policies) == {"min-cost", "one-batch", "chunks-of-8", "waste-0.2"} and all(p["p50"] > 0 for p in policies.values())
    mixed = lat["breakdown"]["mixed/b32"]
    tokens = mixed["tokens"]
    # the length-aware runs feed fewer padded tokens than one batch per request, in more runs
    assert tokens["real"] <= tokens["padded_length_aware"] < tokens["padded_one_batch"]
    assert tokens["runs_length_aware"] > mixed["requests"]
    # both are timed (in separate passes, once each in --quick: which is larger is the full run's to say)
    assert mixed["seconds_per_pass"]["handler (whole request)"] > 0 and mixed["seconds_per_pass"]["session runs (length-aware)"] > 0
    assert any(op.startswith("MatMul") for op in mixed["operators"])
    parity = lat["parity"]["variants"]
    # fp32 ONNX matches PyTorch closely; the int8 kit within the build's bar; anchors where installed
    assert parity[f"minilm/onnx-fp32@{t}t"]["min_cosine"] > 0.999
    assert parity[f"minilm/kit@{t}t"]["min_cosine"] > 0.98
    for key, figures in parity.items():
        assert 0.98 < figures["min_cosine"] <= figures["mean_cosine"] <= 1.0 + 1e-6, key


def test_minilm_roofline_counts_the_transformers_matmuls(bench):
    m = bench[0]["models"]["minilm"]
    case = m["roofline"]["cases"]["short/b32"]
    length = case["sequence_length"]
    assert length == max(m["inputs"]["short"]["tokens_per_input"])
    # 6 layers: Q, K, V, O (384x384) and the MLP (384x1536, 1536x384) per token, and 12-head attention
    tokens = 32 * length
    dense = 2 * tokens * 6 * (4 * 384 * 384 + 2 * 384 * 1536)
    attention = 6 * 2 * (2 * 32 * 12 * length * length * 32)
    assert case["matmul_flops"] == dense + attention
    assert m["roofline"]["peak_gflops"] > 0
    for achieved in case["achieved"].values():
        assert achieved["gflops"] == pytest.approx(case["matmul_flops"] / achieved["seconds"] / 1e9)


def test_footprint_and_cost_are_derived_from_the_measurements(bench):
    for m in bench[0]["models"].values():
        fp = m["footprint"]
        assert 0 < fp["kit"]["total_bytes"] < fp["baseline"]["total_bytes"]
        assert fp["model_files"]["optimized_bytes"] < fp["model_files"]["fp32_onnx_bytes"]
        assert "torch" not in fp["kit"]["closure"]
        costs = m["cost"]
        table = costs["tables"][f"{m['first_set']}/b1"]
        assert costs["recommended_memory_mb"] in [r["memory_mb"] for r in table["rows"] if r["fits_memory"]]
        one_thread = table["latency_by_threads_s"]["1"]
        row_1769 = next(r for r in table["rows"] if r["memory_mb"] == 1769)
        assert row_1769["duration_ms"] == pytest.approx(one_thread * 1000)
        assert all(be > 0 for be in table["g5_breakeven_rps"].values() if be is not None)


def test_report_and_plots_are_written(bench):
    results, out = bench
    md = (out / "BENCHMARKS.md").read_text()
    for name in results["models"]:
        png = out / f"{name}-latency-vs-batch.png"
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert f"({png.name})" in md.replace("./", "")
        assert f"## {name} " in md
    assert "as published on" in md and "Cold start" in md and "Roofline" in md
    assert (out / "minilm-frontier.png").read_bytes()[:8] == PNG_MAGIC and "(minilm-frontier.png)" in md.replace("./", "")
    assert "p50 **" in md and "Length-aware batching" in md and "Where the time goes" in md
