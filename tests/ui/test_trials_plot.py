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
