"""The live trials plot of a search: every trial a point (gain against quality), the measured front a line."""

from __future__ import annotations

from workbench.core.jobs.events import METRIC, STARTED, JobEvent
from workbench.ui.trials_plot import front_of


def test_front_of_prefers_more_gain_and_better_quality():
    points = [(1.0, 0.95), (2.0, 0.93), (1.5, 0.90), (3.0, 0.80)]
    assert front_of(points, lower_is_better=False) == [(1.0, 0.95), (2.0, 0.93), (3.0, 0.80)]
    assert front_of([(1.0, 20.0), (2.0, 25.0), (1.5, 30.0)], lower_is_better=True) == [(1.0, 20.0), (2.0, 25.0)]


def test_metrics_plot_draws_trials_as_a_scatter_with_its_front(qtbot):
    from workbench.ui.metrics_plot import MetricsPlot

    plot = MetricsPlot()
    qtbot.addWidget(plot)
    plot.on_event(JobEvent(STARTED, 7, "optimize", {}))
    trials = [(1.2, 0.95), (2.5, 0.94), (2.0, 0.90), (4.1, 0.93)]
    for i, (speedup, accuracy) in enumerate(trials, 1):
        plot.on_event(JobEvent(METRIC, 7, "optimize", {"step": i, "metrics": {
            "trial_speedup": speedup, "trial_accuracy": accuracy, "trial_drop": 0.0, "front_size": 1.0}}))
    plot.redraw()
    assert plot.trials is not None and not plot.series  # trials are points, not curves over steps
    xs, ys = plot.trials.scatter.getData()
    assert list(xs) == [t[0] for t in trials] and list(ys) == [t[1] for t in trials]
    fx, fy = plot.trials.front.getData()
    assert list(fx) == [1.2, 2.5, 4.1] and plot.trials.front_count() == 3
    assert plot.point_count() == 4
    plot.on_event(JobEvent(STARTED, 8, "train", {}))  # the next run starts afresh
    assert plot.trials is None and plot.point_count() == 0


def test_a_language_models_run_plots_perplexity_on_a_log_axis_and_tokens_per_second(qtbot):
    from workbench.ui.metrics_plot import MetricsPlot, panel_of

    assert panel_of("perplexity") == panel_of("val_perplexity") == "perplexity"
    plot = MetricsPlot()
    qtbot.addWidget(plot)
    plot.on_event(JobEvent(STARTED, 3, "train", {}))
    for step, ppl in enumerate([4000.0, 900.0, 200.0, 120.0], 1):
        plot.on_event(JobEvent(METRIC, 3, "train", {"step": step, "metrics": {"loss": 8.0 / step, "perplexity": ppl}}))
    plot.on_event(JobEvent(METRIC, 3, "train", {"step": 4, "metrics": {"val_perplexity": 130.0, "tokens_per_s": 2e4,
                                                                        "custom": 1.0}}))
    plot.redraw()
    ppl = plot.plots["perplexity"]
    assert ppl.titleLabel.text.startswith("Perplexity (log scale)") and ppl.getAxis("left").logMode
    assert {item.name() for item in ppl.listDataItems()} == {"perplexity", "val_perplexity"}
    low, high = ppl.viewRange()[1]  # in decades: 120 to 4000 shown
    assert low < 2.08 < 3.6 < high < 5
    assert plot.plots["throughput"].titleLabel.text.startswith("Tokens / s")
    assert plot.ci.rows[2][0] is ppl and plot.ci.rows[3][0] is plot.plots["other"]  # one below the other
    plot.on_event(JobEvent(STARTED, 4, "train", {}))  # a classifier's run next: its own titles, no LM panels
    assert "perplexity" not in plot.plots and plot.plots["throughput"].titleLabel.text.startswith("Samples / s")
