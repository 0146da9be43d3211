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


def test_a_language_model_workspace_compares_perplexity_against_decode_speed(qtbot):
    """Perplexity (lower is better) against decode tokens/s (higher is better): the front runs to the top-left
    of perplexity and the right of speed; a classifier workspace has no decode axis."""
    from workbench.ui.pareto_plot import ComparePanel

    panel = ComparePanel()
    qtbot.addWidget(panel)
    lm = [SimpleNamespace(id=vid, metrics={"perplexity": ppl, "latency_ms": ms, "size_bytes": 1000,
                                           "decode_tokens_per_s": tps})
          for vid, ppl, ms, tps in [("v0001", 10.0, 5.0, 100.0), ("v0002", 12.0, 3.0, 250.0),
                                    ("v0003", 13.0, 4.0, 90.0)]]
    panel.set_variants(lm)
    assert panel.quality_label.text() == "Perplexity against"
    panel.axis.setCurrentIndex(panel.axis.findData("decode"))
    assert panel.plot.axis == "decode"
    assert {p[0]: p[2] for p in panel.plot.points} == {"v0001": 100.0, "v0002": 250.0, "v0003": 90.0}
    assert sorted(panel.plot.front) == ["v0001", "v0002"]  # v0003: slower and worse than v0001
    panel.axis.setCurrentIndex(panel.axis.findData("latency"))
    assert sorted(panel.plot.front) == ["v0001", "v0002"]
    panel.set_variants([SimpleNamespace(id="v0001", metrics={"accuracy": 0.9, "latency_ms": 1.0})])
    assert panel.axis.findData("decode") < 0 and panel.quality_label.text() == "Accuracy against"
