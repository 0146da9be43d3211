"""The Pareto plot's point labels stay inside the plot."""

import math
from types import SimpleNamespace

import pytest

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
                                           "decode_tokens_per_s": tps, "decode_tokens_per_s_ci": [tps - 5, tps + 8]})
          for vid, ppl, ms, tps in [("v0001", 10.0, 5.0, 100.0), ("v0002", 12.0, 3.0, 250.0),
                                    ("v0003", 13.0, 4.0, 90.0)]]
    panel.set_variants(lm)
    assert panel.quality_label.text() == "Perplexity against"
    panel.axis.setCurrentIndex(panel.axis.findData("decode"))
    assert panel.plot.axis == "decode"
    assert {p[0]: p[2] for p in panel.plot.points} == {"v0001": 100.0, "v0002": 250.0, "v0003": 90.0}
    assert sorted(panel.plot.front) == ["v0001", "v0002"]  # v0003: slower and worse than v0001
    assert panel.plot.intervals["v0002"] == (245.0, 258.0)  # decode speed is drawn with its interval
    panel.axis.setCurrentIndex(panel.axis.findData("latency"))
    assert sorted(panel.plot.front) == ["v0001", "v0002"]
    panel.set_variants([SimpleNamespace(id="v0001", metrics={"accuracy": 0.9, "latency_ms": 1.0})])
    assert panel.axis.findData("decode") < 0 and panel.quality_label.text() == "Accuracy against"


def test_perplexity_is_drawn_on_a_log_axis(qtbot):
    """An untrained root at perplexity 4,000 beside variants near 100: on a linear axis the variants collapse into
    one line; on the log axis the tenfold and the 10% gaps both show, and the ticks read perplexity."""
    from workbench.ui.pareto_plot import ParetoPlot

    plot = ParetoPlot()
    qtbot.addWidget(plot)
    lm = [SimpleNamespace(id=vid, metrics={"perplexity": ppl, "latency_ms": 2.0 + i, "size_bytes": 1000})
          for i, (vid, ppl) in enumerate([("v0001", 4000.0), ("v0002", 100.0), ("v0003", 110.0)])]
    plot.set_variants(lm)
    assert plot.log_y and plot.getAxis("left").logMode
    ys = sorted(spot.pos().y() for spot in plot.scatter.points())
    assert ys == pytest.approx([2.0, math.log10(110.0), math.log10(4000.0)])
    assert {p[0]: p[1] for p in plot.points}["v0003"] == 110.0  # the data keep their values
    plot.set_variants([SimpleNamespace(id="v0001", metrics={"accuracy": 0.9, "latency_ms": 1.0})])
    assert not plot.log_y and not plot.getAxis("left").logMode
    assert [spot.pos().y() for spot in plot.scatter.points()] == [90.0]


def test_the_variants_table_heads_its_quality_column_perplexity_for_a_language_model():
    from PySide6.QtCore import Qt

    from workbench.ui.variants_table import COLUMNS, VariantsModel

    model = VariantsModel()
    col = COLUMNS.index("accuracy")
    lm = SimpleNamespace(id="v0001", parent=None, job="load", marks=[], metrics={"perplexity": 90.0})
    model.set_variants([lm])
    assert model.headerData(col, Qt.Orientation.Horizontal) == "perplexity"
    model.set_variants([SimpleNamespace(id="v0001", parent=None, job="load", marks=[], metrics={"accuracy": 0.9})])
    assert model.headerData(col, Qt.Orientation.Horizontal) == "accuracy"


def test_the_variants_table_sorts_the_lowest_perplexity_first_as_the_best(qtbot):
    """Sorting the quality column best-first (descending, as for accuracy) puts the lowest perplexity on top;
    the row menu offers to re-measure perplexity, not accuracy."""
    from PySide6.QtCore import Qt

    from workbench.ui.variants_table import COLUMNS, VariantsTable

    table = VariantsTable()
    qtbot.addWidget(table)
    table.set_variants([SimpleNamespace(id=vid, parent=None, job="load", marks=[], metrics={"perplexity": ppl})
                        for vid, ppl in (("v0001", 4000.0), ("v0002", 90.0), ("v0003", 120.0))])
    table.sortByColumn(COLUMNS.index("accuracy"), Qt.SortOrder.DescendingOrder)
    assert [table.proxy.index(row, 0).data() for row in range(3)] == ["v0002", "v0003", "v0001"]
    table.sortByColumn(COLUMNS.index("accuracy"), Qt.SortOrder.AscendingOrder)
    assert [table.proxy.index(row, 0).data() for row in range(3)] == ["v0001", "v0003", "v0002"]
    assert "(perplexity, size, latency)" in table.menu_for("v0002").actions()[0].text()
