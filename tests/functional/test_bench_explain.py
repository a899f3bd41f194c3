"""`maas bench --explain`: the explain route timed through the handler, and its own section of the report."""

from __future__ import annotations

from maas.bench import machine_info
from maas.bench.explain import SECTION_END, SECTION_START, bench_explanations, render_explain, update_section


def test_explain_latency_is_measured_and_rewrites_only_its_section(manifest, built, tmp_path):
    # GIVEN a report with other content
    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# Benchmarks\n\nother figures\n")
    # WHEN digits' explanations are timed (a fresh process, through the handler) and reported twice
    results = bench_explanations(manifest, ["digits"], repeats=2, log=lambda *_: None)
    for _ in range(2):
        update_section(report, render_explain(results, machine_info(1)))
    # THEN one section holds one row per request kind, with the budget that ran and its timings
    (row,) = results["digits"].values()
    assert row["coalitions"][0] >= 2 * row["players"][0] + 2048 and row["runs"] == 2 * 8
    assert 0 < row["min_ms"] <= row["p50_ms"] <= row["max_ms"]
    text = report.read_text()
    assert text.startswith("# Benchmarks\n\nother figures\n")
    assert text.count(SECTION_START) == 1 and text.count(SECTION_END) == 1
    assert "| digits | 8x8 held-out image (x8) |" in text
