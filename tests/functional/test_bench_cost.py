"""The bench's arithmetic on known inputs: Lambda cost, CPU-share scaling, break-even, FLOP counting."""

import pytest

from maas.bench import cost
from maas.bench.stats import percentile, summary

PRICES = {
    "lambda": {
        "arm64": {"gb_second": 0.0000133334, "per_million_requests": 0.20},
        "x86_64": {"gb_second": 0.0000166667, "per_million_requests": 0.20},
        "billing_granularity_ms": 1,
        "mb_per_vcpu": 1769,
        "max_vcpus": 6,
    },
    "sagemaker": {"ml.g5.xlarge": {"per_hour": 1.408}},
}


def test_cost_per_million_is_gb_seconds_times_price_plus_requests():
    # GIVEN 1024 MB and a 10 ms request  WHEN priced  THEN 1 GB x 0.010 s x 1e6 x price + $0.20
    assert cost.cost_per_million(1024, 0.010, PRICES, "arm64") == pytest.approx(0.133334 + 0.20)
    assert cost.cost_per_million(1024, 0.010, PRICES, "x86_64") == pytest.approx(0.166667 + 0.20)


def test_duration_is_billed_in_whole_milliseconds_rounded_up():
    assert cost.cost_per_million(1024, 0.0102, PRICES, "arm64") == pytest.approx(1e6 * 0.011 * 0.0000133334 + 0.20)
    # an exact millisecond is not rounded up by floating-point noise
    assert cost.cost_per_million(2048, 0.003, PRICES, "arm64") == pytest.approx(1e6 * 2 * 0.003 * 0.0000133334 + 0.20)


def test_duration_scales_with_the_cpu_share_and_the_thread_count():
    measured = {1: 0.010, 2: 0.006}
    # below one vCPU the single thread gets memory/1769 of a core
    assert cost.estimated_duration_s(512, measured)[0] == pytest.approx(0.010 * 1769 / 512)
    assert cost.estimated_duration_s(1769, measured) == (pytest.approx(0.010), False)
    # between 1 and 2 vCPUs: 2 threads, throttled to memory/1769 of CPU time
    assert cost.estimated_duration_s(2048, measured)[0] == pytest.approx(0.006 * 2 * 1769 / 2048)
    assert cost.estimated_duration_s(3538, measured) == (pytest.approx(0.006), False)
    # more vCPUs than were measured: no speed-up assumed, and flagged
    assert cost.estimated_duration_s(6144, measured) == (pytest.approx(0.006), True)
    assert [cost.threads_for(m) for m in (128, 1769, 1770, 3538, 3539, 10240)] == [1, 1, 2, 2, 3, 6]


def test_breakeven_rate_against_an_always_on_instance():
    # $0.333334 per million requests vs $1.408 an hour: 1.408 / 3600 / 3.33334e-7 requests a second
    rate = cost.breakeven_requests_per_second(0.333334, 1.408)
    assert rate == pytest.approx(1173.33, rel=1e-4)
    # at that rate an hour of Lambda costs what an hour of the instance does
    assert rate * 3600 * 0.333334 / 1e6 == pytest.approx(1.408)


def test_recommendation_is_the_fastest_size_within_five_percent_of_the_cheapest():
    rows = cost.cost_table({1: 0.010, 2: 0.006}, peak_rss_bytes=300e6, prices=PRICES)
    by_mb = {r.memory_mb: r for r in rows}
    assert not by_mb[256].fits and by_mb[512].fits  # 1.15 x 300 MB needs more than 256 MiB
    # below 1769 MB cost is flat (duration x memory is constant); 1769 MB is the fastest of those
    assert by_mb[512].usd_per_million["arm64"] == pytest.approx(by_mb[1769].usd_per_million["arm64"], rel=0.01)
    best = cost.recommend(rows, "arm64")
    assert best.memory_mb == 1769
    # 2 threads at 3538 MB are faster but cost over 5% more: not chosen
    assert by_mb[3538].duration_ms < best.duration_ms
    assert by_mb[3538].usd_per_million["arm64"] > 1.05 * best.usd_per_million["arm64"]
    # nothing fits: no recommendation
    assert cost.recommend(cost.cost_table({1: 0.01}, peak_rss_bytes=20e9, prices=PRICES)) is None


def test_the_price_table_is_dated_and_complete():
    prices = cost.load_prices()
    assert prices["as_published_on"] and "aws.amazon.com" in prices["source"]
    for arch in cost.ARCHITECTURES:
        assert 0 < prices["lambda"][arch]["gb_second"] < 0.001
        assert prices["lambda"][arch]["per_million_requests"] > 0
    assert prices["lambda"]["arm64"]["gb_second"] < prices["lambda"]["x86_64"]["gb_second"]
    assert prices["sagemaker"]["ml.g5.xlarge"]["per_hour"] > 0


def test_percentiles_and_summary_on_known_values():
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 25) == pytest.approx(25.75)
    assert percentile([3.0], 99) == 3.0
    s = summary([4.0, 1.0, 3.0, 2.0])
    assert (s["p50"], s["min"], s["max"], s["n"]) == (2.5, 1.0, 4.0, 4)


def test_matmul_flops_counts_matmul_and_gemm_from_graph_shapes(tmp_path):
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from maas.bench.roofline import matmul_flops

    # GIVEN x[batch, 3] @ W[3, 4] -> Gemm with W2[5, 4] transposed -> [batch, 5]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("Gemm", ["r", "w2"], ["y"], transB=1),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])],
        [
            numpy_helper.from_array(np.zeros((3, 4), np.float32), "w"),
            numpy_helper.from_array(np.zeros((5, 4), np.float32), "w2"),
        ],
    )
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    # WHEN counted for batch 7  THEN 2*7*3*4 + 2*7*4*5
    assert matmul_flops(path, {"x": [7, 3]}) == 2 * 7 * 3 * 4 + 2 * 7 * 4 * 5
    assert matmul_flops(path, {"x": [1, 3]}) == 2 * 3 * 4 + 2 * 4 * 5


ZERO = {"scale_in_minutes": 25, "cold_start_minutes": 5}


def test_scale_to_zero_bills_each_wake_up_until_the_idle_scale_in():
    # GIVEN a 30-minute nightly batch: WHEN priced THEN billed 5 (start) + 30 + 25 (idle) minutes a day
    nightly = cost.TrafficPattern("nightly", 1, 30, 1000, days_per_month=30)
    hours, cold = cost.scale_to_zero_hours(nightly, **ZERO)
    assert hours == pytest.approx(60 / 60 * 30) and cold == 5
    # one request an hour: every one wakes an instance that then idles 25 minutes: 30 of every 60 minutes billed
    hourly = cost.TrafficPattern("hourly", 24, 0, 1, days_per_month=30)
    assert cost.scale_to_zero_hours(hourly, **ZERO) == (pytest.approx(24 * 30 / 60 * 30), 24 * 5)
    # periods that fill the day never go cold, and cost what an always-on instance does
    steady = cost.TrafficPattern("steady", 1, 24 * 60, 1, days_per_month=30)
    assert cost.scale_to_zero_hours(steady, **ZERO) == (24 * 30, 0.0)
    assert cost.scale_to_zero_hours(cost.TrafficPattern("idle", 0, 0, 0), **ZERO) == (0.0, 0.0)


def test_gpu_pattern_costs_compare_always_on_scale_to_zero_and_lambda():
    prices = {**PRICES, "sagemaker_scale_to_zero": ZERO}
    rows = {r.pattern.name: r for r in cost.gpu_pattern_costs(prices, lambda_usd_per_million=0.5)}
    idle, steady = rows["idle"], rows["steady, 50 req/s around the clock"]
    assert idle.always_on_usd == steady.always_on_usd == pytest.approx(1.408 * 730)  # ~$1,028 a month regardless
    assert idle.scale_to_zero_usd == 0 and idle.lambda_usd == 0
    assert steady.scale_to_zero_usd == pytest.approx(steady.always_on_usd) and steady.cold_minutes_per_day == 0
    assert steady.lambda_usd == pytest.approx(50 * 86400 * 730 / 24 / 1e6 * 0.5)
    nightly = rows["a nightly 30-min batch at 200 req/s"]
    assert nightly.scale_to_zero_usd == pytest.approx(1.408 * (5 + 30 + 25) / 60 * 730 / 24)
    assert cost.load_prices()["sagemaker_scale_to_zero"]["scale_in_minutes"] > 0
