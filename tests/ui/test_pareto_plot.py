"""The Pareto plot's point labels stay inside the plot."""

from types import SimpleNamespace

from workbench.ui.pareto_plot import ParetoPlot


def test_pareto_labels_of_right_hand_points_end_at_the_point(qtbot):
    plot = ParetoPlot()
    qtbot.addWidget(plot)
    variants = [SimpleNamespace(id=f"v000{i}", metrics={"accuracy": acc, "latency_ms": ms})
                for i, (acc, ms) in enumerate([(0.9, 1.0), (0.95, 2.0), (0.97, 9.0)], 1)]
    plot.set_variants(variants)
    anchors = {label.textItem.toPlainText(): (label.anchor.x(), label.anchor.y()) for label in plot.labels}
    assert anchors == {"v0001": (0, 1.2), "v0002": (0, 1.2), "v0003": (1, 1.2)}
