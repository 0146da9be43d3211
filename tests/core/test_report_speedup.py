"""The batch report tells speed-ups with their interval: report.md rows, error bars in the Pareto PNG."""

from __future__ import annotations

import pytest

from workbench.core import figures
from workbench.core.report import pareto_figure, render_markdown, write_report
from workbench.core.workspace.store import Variant


def variant(vid: str, parent: str | None, job: str, **metrics) -> Variant:
    return Variant(id=vid, parent=parent, job=job, params={}, created=0.0, format="torch", source="zoo:mlp",
                   dataset="digits", metrics={"accuracy": 0.9, "size_bytes": 4096, **metrics})


VARIANTS = [
    variant("v0001", None, "load", latency_ms=12.31, latency_ms_ci=[11.9, 12.7]),
    variant("v0002", "v0001", "train", latency_ms=12.2, latency_ms_ci=[11.8, 12.6],
            speedup={"vs": "v0001", "ratio": 1.01, "ci": [0.97, 1.05], "significant": False}),
    variant("v0003", "v0002", "prune", latency_ms=8.0, latency_ms_ci=[7.9, 8.1],
            speedup={"vs": "v0002", "ratio": 1.52, "ci": [1.45, 1.6], "significant": True}),
    variant("v0004", "v0003", "quantize", latency_ms=7.9),
]


def _step(v: Variant) -> dict:
    metrics = {k: val for k, val in v.metrics.items() if k != "speedup"}
    step = {"job": v.job, "variant": v.id, "parent": v.parent, "status": "ok", "seconds": 1.0, "metrics": metrics}
    if "speedup" in v.metrics:
        step["speedup"] = v.metrics["speedup"]  # batch mode puts it on the step (contract section 8)
    return step


def _report() -> dict:
    return {"model": "zoo:mlp", "dataset": "digits", "device": "cpu", "steps": [_step(v) for v in VARIANTS[1:]],
            "variants": [{"id": v.id, "parent": v.parent, "job": v.job, "metrics": v.metrics, "marks": []}
                         for v in VARIANTS]}


def _rows(md: str) -> dict[str, list[str]]:
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return {cells[1]: dict(zip(header, cells)) for cells in
            ([c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:])}


def test_report_md_rows_show_speedups_with_intervals_and_no_change():
    rows = _rows(render_markdown(_report()))
    assert rows["train"]["speed-up vs parent"] == "no measurable change"
    assert rows["prune"]["speed-up vs parent"] == "1.52x (1.45–1.60)"
    assert rows["quantize"]["speed-up vs parent"] == "~1.01x"  # no paired figure, no interval: unpaired
    assert rows["prune"]["latency_ms"] == "8.0 ±0.1" and rows["quantize"]["latency_ms"] == "7.900"
    assert rows["train"]["latency_ms"] == "12.2 ±0.4"


def test_a_failed_step_has_no_speedup_cell():
    report = _report()
    report["steps"].append({"job": "segfault", "variant": None, "parent": "v0004", "status": "failed",
                            "seconds": 0.1, "metrics": {}, "error": "killed by signal 11"})
    assert _rows(render_markdown(report))["segfault"]["speed-up vs parent"] == "-"


def test_pareto_png_draws_latency_error_bars(tmp_path):
    from matplotlib.collections import LineCollection
    from matplotlib.container import ErrorbarContainer

    fig = pareto_figure(VARIANTS, "latency_ms", "latency")
    (bars,) = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    segments = next(col for col in bars.lines[2] if isinstance(col, LineCollection)).get_segments()
    spans = sorted((round(s[0][0], 3), round(s[1][0], 3)) for s in segments)
    assert spans == [(7.9, 8.1), (11.8, 12.6), (11.9, 12.7)]  # v0004 has no interval, so no bar
    size = pareto_figure(VARIANTS, "size_bytes", "size")
    assert not [c for c in size.axes[0].containers if isinstance(c, ErrorbarContainer)]
    write_report(tmp_path, {"model": "zoo:mlp", "dataset": "digits", "device": "cpu"}, _report()["steps"],
                 VARIANTS, {})
    assert (tmp_path / "pareto_latency.png").stat().st_size > 1000
    assert "no measurable change" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("bad", [None, [1.0], [2.0, 1.0], ["a", 1.0], [float("nan"), 1.0], 3.0, [True, 2.0]])
def test_malformed_intervals_are_ignored(bad):
    assert figures.interval(bad) is None
    assert figures.latency_readout({"latency_ms": 5.0, "latency_ms_ci": bad}).text == "5.000 ms"


def test_speedup_readout_edge_cases():
    assert figures.speedup_readout({}).text == "-"
    assert figures.speedup_readout({"speedup": {"ratio": "fast"}}).text == "-"  # malformed: ignored
    slower = figures.speedup_readout({"speedup": {"vs": "v1", "ratio": 0.5, "ci": [0.45, 0.55], "significant": True}})
    assert slower.text == "0.50x (0.45–0.55)" and "slower than v1" in slower.tooltip and slower.sort == 0.5
    no_ci = figures.speedup_readout({"speedup": {"vs": "v1", "ratio": 1.3, "significant": True}})
    assert no_ci.text == "1.30x"


def test_a_language_model_report_shows_perplexity_not_accuracy():
    from workbench.core.report import render_markdown

    step = {"job": "train", "variant": "v0002", "parent": "v0001", "status": "ok", "seconds": 1.0,
            "metrics": {"perplexity": 41.5, "token_accuracy": 0.31, "loss": 3.72, "decode_tokens_per_s": 812.0,
                        "decode_tokens_per_s_ci": [790.0, 830.0]}}
    text = render_markdown({"task": "causal_lm", "model": "zoo:tiny_llama", "dataset": "pydocs", "device": "cpu",
                            "steps": [step], "variants": []})
    header = next(line for line in text.splitlines() if line.startswith("| # |"))
    assert "perplexity" in header and "accuracy |" not in header.replace("token_accuracy", "")
    assert "41.50" in text and "812 ±20" in text  # decode speed with half its 95% interval


def test_a_language_models_pareto_png_is_perplexity_lower_is_better(tmp_path):
    """A causal_lm report plots perplexity on a log axis, its front taken lower-is-better; the classifier's
    accuracy axis would have been empty (LM variants have no accuracy)."""
    from types import SimpleNamespace

    lms = [SimpleNamespace(id=vid, parent=None, job="load", marks=[],
                           metrics={"perplexity": ppl, "latency_ms": ms, "size_bytes": 4096})
           for vid, ppl, ms in (("v0001", 4000.0, 5.0), ("v0002", 120.0, 5.0), ("v0003", 130.0, 3.0),
                                ("v0004", 200.0, 4.0))]
    fig = pareto_figure(lms, "latency_ms", "latency", "perplexity")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and "perplexity" in ax.get_ylabel()
    (front,) = [line for line in ax.lines if line.get_label() == "Pareto front"]
    assert sorted(zip(front.get_xdata(), front.get_ydata())) == [(3.0, 130.0), (5.0, 120.0)]
    write_report(tmp_path, {"model": "zoo:tiny_llama", "dataset": "pydocs", "device": "cpu", "task": "causal_lm"},
                 [], lms, {0: {"loss": [(1, 5.0), (2, 4.0)], "val_perplexity": [(2, 300.0)]}})
    assert "![perplexity vs latency](pareto_latency.png)" in (tmp_path / "report.md").read_text()
