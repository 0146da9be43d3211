"""Speed-ups shown with their uncertainty: the variants table, the Pareto plot's error bars, the Details tab."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QLabel  # noqa: E402

from workbench.core.workspace.store import Variant  # noqa: E402
from workbench.ui.pareto_plot import ParetoPlot  # noqa: E402
from workbench.ui.result_view import ResultView  # noqa: E402
from workbench.ui.variants_table import COLUMNS, VariantsTable  # noqa: E402


def variant(vid: str, parent: str | None, job: str, **metrics) -> Variant:
    return Variant(id=vid, parent=parent, job=job, params={}, created=0.0, format="torch", source="zoo:mlp",
                   dataset="digits", metrics={"accuracy": 0.9, "size_bytes": 4096, **metrics})


@pytest.fixture
def variants() -> list[Variant]:
    return [
        variant("v0001", None, "load", latency_ms=12.31, latency_ms_ci=[11.9, 12.7]),
        # a retrain: same architecture, paired ratio within noise (the old table said "2.08x")
        variant("v0002", "v0001", "train", latency_ms=5.9, latency_ms_ci=[5.5, 6.3],
                speedup={"vs": "v0001", "ratio": 1.01, "ci": [0.97, 1.05], "significant": False}),
        variant("v0003", "v0002", "prune", latency_ms=3.9, latency_ms_ci=[3.85, 3.95],
                latency_torch_ms=4.4, latency_torch_ms_ci=[4.2, 4.6],
                speedup={"vs": "v0002", "ratio": 1.52, "ci": [1.45, 1.60], "significant": True}),
        # older workspace rows: no speedup; the first overlaps the root's interval, the second does not
        variant("v0004", "v0001", "train", latency_ms=12.0, latency_ms_ci=[11.5, 12.5]),
        variant("v0005", "v0001", "prune", latency_ms=6.0, latency_ms_ci=[5.8, 6.2]),
        variant("v0006", "v0001", "train", latency_ms=6.0),
    ]


def cell(table: VariantsTable, vid: str, column: str, role: Qt.ItemDataRole = Qt.ItemDataRole.DisplayRole):
    model = table.source
    row = next(i for i, r in enumerate(model.rows) if r["id"] == vid)
    return model.data(model.index(row, COLUMNS.index(column)), role)


def test_speedup_cells_tell_change_from_noise(qtbot, variants):
    table = VariantsTable()
    qtbot.addWidget(table)
    table.set_variants(variants)
    assert cell(table, "v0003", "speed-up") == "1.52x (1.45–1.60)"
    assert "faster than v0002" in cell(table, "v0003", "speed-up", Qt.ItemDataRole.ToolTipRole)
    assert cell(table, "v0002", "speed-up") == "no measurable change"
    tip = cell(table, "v0002", "speed-up", Qt.ItemDataRole.ToolTipRole)
    assert "within noise" in tip and "paired with v0001" in tip
    assert cell(table, "v0001", "speed-up") == "1.00x"  # the root: the reference
    # fallback against the root: overlapping intervals claim nothing; separate ones give a bounded ratio
    assert cell(table, "v0004", "speed-up") == "no measurable change"
    assert "intervals overlap" in cell(table, "v0004", "speed-up", Qt.ItemDataRole.ToolTipRole)
    assert cell(table, "v0005", "speed-up") == f"2.05x ({11.9 / 6.2:.2f}–{12.7 / 5.8:.2f})"
    assert cell(table, "v0006", "speed-up") == "~2.05x"
    assert "not measured paired" in cell(table, "v0006", "speed-up", Qt.ItemDataRole.ToolTipRole)
    assert "paired" in table.source.headerData(COLUMNS.index("speed-up"), Qt.Orientation.Horizontal,
                                               Qt.ItemDataRole.ToolTipRole)


def test_latency_cells_show_the_interval_and_sort_numerically(qtbot, variants):
    table = VariantsTable()
    qtbot.addWidget(table)
    table.set_variants(variants)
    assert cell(table, "v0001", "latency") == "12.3 ±0.4 ms"
    assert cell(table, "v0003", "latency") == "3.90 ±0.05 ms"
    assert cell(table, "v0006", "latency") == "6.000 ms"
    tip = cell(table, "v0003", "latency", Qt.ItemDataRole.ToolTipRole)
    assert "95% interval 3.850–3.950 ms" in tip and "PyTorch): 4.400 ms, 95% interval 4.200–4.600" in tip
    assert cell(table, "v0003", "latency", Qt.ItemDataRole.UserRole) == 3.9
    assert cell(table, "v0002", "speed-up", Qt.ItemDataRole.UserRole) == 1.0  # sorts as "no change"
    table.sortByColumn(COLUMNS.index("latency"), Qt.SortOrder.AscendingOrder)
    order = [table.proxy.index(r, 0).data() for r in range(table.proxy.rowCount())]
    assert order[0] == "v0003" and order[-1] == "v0001"


def test_pareto_plot_draws_latency_error_bars(qtbot, variants):
    plot = ParetoPlot()
    qtbot.addWidget(plot)
    plot.set_variants(variants)
    bars = plot.error_bars
    assert bars.objectName() == "paretoErrorBars" and bars in plot.getPlotItem().items
    ids = [vid for vid, _acc, _cost in plot.points if vid in plot.intervals]
    assert ids == ["v0001", "v0002", "v0003", "v0004", "v0005"]  # v0006 has no interval
    assert list(bars.opts["x"]) == pytest.approx([12.31, 5.9, 3.9, 12.0, 6.0])
    assert list(bars.opts["left"]) == pytest.approx([0.41, 0.4, 0.05, 0.5, 0.2])
    assert list(bars.opts["right"]) == pytest.approx([0.39, 0.4, 0.05, 0.5, 0.2])
    plot.set_axis("size")
    assert len(bars.opts["x"]) == 0  # sizes are exact: no bars


def test_details_tab_states_the_measured_figures(qtbot, variants):
    view = ResultView()
    qtbot.addWidget(view)
    view.show_variant(variants[2])
    text = view.findChild(QLabel, "measuredFigures").text()
    assert "3.90 ±0.05 ms" in text and "speed-up vs v0002</b>: 1.52x (1.45–1.60) faster" in text
    view.show_variant(variants[1])
    assert "no measurable change" in view.findChild(QLabel, "measuredFigures").text()
    view.show_variant(variant("v0009", None, "load"))
    assert view.findChild(QLabel, "measuredFigures") is None


def test_the_details_line_gives_decode_speed_with_its_interval_and_says_it_is_not_paired():
    from workbench.ui.result_view import measured_text

    text = measured_text({"latency_ms": 1.2, "latency_ms_ci": [1.1, 1.3], "decode_tokens_per_s": 812.0,
                          "decode_tokens_per_s_ci": [790.0, 830.0]})
    assert "decode, PyTorch + KV cache</b>: 812 ±20 tokens/s" in text
    assert "790–830; not paired" in text
    assert "decode" not in measured_text({"latency_ms": 1.2})  # a classifier has no decode figure
