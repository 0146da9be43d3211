"""The compare view: accuracy (perplexity for a language model) against latency, size or, for language models,
decode speed, for every variant, with the Pareto front marked.

On the latency axis each point carries a horizontal error bar: the 95% interval of its latency
(``latency_ms_ci``), so two points whose bars overlap are not told apart by the plot either.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from workbench.core.figures import interval
from workbench.core.report import pareto_front

AXES = {"latency": ("latency_ms", "latency (ms, onnxruntime; bars: 95% interval)"),
        "size": ("size_bytes", "size (KB, ONNX)"),
        "decode": ("decode_tokens_per_s", "decode speed (tokens/s, PyTorch with a KV cache; higher is better)")}
INTERVAL_AXES = {"latency", "decode"}  # axes whose figure has a ``{key}_ci`` interval
HIGHER_IS_BETTER = {"decode"}  # on these axes the front runs towards larger values


def is_language_model_workspace(variants: list[Any]) -> bool:
    """Ranked by perplexity (lower is better) rather than accuracy."""
    return any(v.metrics.get("accuracy") is None and v.metrics.get("perplexity") is not None for v in variants)


class ParetoPlot(pg.PlotWidget):
    """objectName ``paretoPlot``; clicking a point emits ``variant_selected(id)``."""

    variant_selected = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("paretoPlot")
        self.axis = "latency"
        self.variants: list[Any] = []
        self.points: list[tuple[str, float, float]] = []
        self.intervals: dict[str, tuple[float, float]] = {}  # variant id -> latency interval (latency axis only)
        self.front: list[str] = []
        self.selected: str | None = None
        self.log_y = False  # perplexity spans orders of magnitude (an untrained root at 4,000, variants near 100)
        self.showGrid(x=True, y=True, alpha=0.25)
        self.setLabel("left", "accuracy (%)")
        self.front_line = self.plot([], [], pen=pg.mkPen("#59A14F", width=1, style=pg.QtCore.Qt.PenStyle.DashLine))
        self.error_bars = pg.ErrorBarItem(x=np.zeros(0), y=np.zeros(0), beam=0.0,
                                          pen=pg.mkPen("#8C8C8C", width=1))
        self.error_bars.setObjectName("paretoErrorBars")
        self.addItem(self.error_bars)
        self.scatter = pg.ScatterPlotItem(size=11, hoverable=True, hoverSize=14)
        self.scatter.sigClicked.connect(self._clicked)
        self.addItem(self.scatter)
        self.labels: list[pg.TextItem] = []
        self.getViewBox().setDefaultPadding(0.08)  # room above the top points for their labels
        self.set_axis("latency")

    def set_axis(self, axis: str) -> None:
        self.axis = axis
        self.setLabel("bottom", AXES[axis][1])
        self.set_variants(self.variants)

    def set_variants(self, variants: list[Any]) -> None:
        self.variants = list(variants)
        key = AXES[self.axis][0]
        scale = 1 / 1024 if self.axis == "size" else 1.0
        # a language model's workspace ranks by perplexity (lower is better); a classifier's by accuracy
        lm = is_language_model_workspace(variants)
        quality, factor = ("perplexity", 1.0) if lm else ("accuracy", 100.0)
        self.setLabel("left", "perplexity (lower is better, log scale)" if lm else "accuracy (%)")
        if lm != self.log_y:
            self.log_y = lm
            self.getAxis("left").setLogMode(lm)  # ticks read as perplexity; the points are drawn at log10
        self.points = [(v.id, factor * v.metrics[quality], v.metrics[key] * scale) for v in variants
                       if v.metrics.get(quality) is not None and v.metrics.get(key)]
        self.intervals = {}
        if self.axis in INTERVAL_AXES:  # measured figures carry their 95% interval: drawn as error bars
            for v in variants:
                ci = interval(v.metrics.get(f"{key}_ci"))
                if ci is not None:
                    self.intervals[v.id] = ci
        sign = -1.0 if self.axis in HIGHER_IS_BETTER else 1.0
        front_idx = pareto_front([(-q if lm else q, sign * cost) for _id, q, cost in self.points])
        self.front = [self.points[i][0] for i in front_idx]
        self._draw()

    def select(self, variant_id: str | None) -> None:
        self.selected = variant_id
        self._draw()

    def _shown(self) -> list[tuple[str, float, float]]:
        """The points as drawn: (id, y, x), y in log10 when the quality axis is logarithmic."""
        if not self.log_y:
            return self.points
        return [(vid, math.log10(q) if q > 0 else float("nan"), cost) for vid, q, cost in self.points]

    def _draw(self) -> None:
        spots = []
        shown = self._shown()
        for vid, acc, cost in shown:
            on_front = vid in self.front
            brush = "#59A14F" if on_front else "#8C8C8C"
            pen = pg.mkPen("#F28E2B", width=3) if vid == self.selected else pg.mkPen(None)
            spots.append({"pos": (cost, acc), "data": vid, "brush": pg.mkBrush(brush), "pen": pen,
                          "symbol": "star" if on_front else "o", "size": 15 if on_front else 11})
        self.scatter.setData(spots)
        bars = [(cost, acc, self.intervals[vid]) for vid, acc, cost in shown if vid in self.intervals]
        self.error_bars.setData(
            x=np.array([b[0] for b in bars], dtype=float), y=np.array([b[1] for b in bars], dtype=float),
            left=np.array([max(b[0] - b[2][0], 0.0) for b in bars], dtype=float),
            right=np.array([max(b[2][1] - b[0], 0.0) for b in bars], dtype=float))
        front = sorted((cost, acc) for vid, acc, cost in shown if vid in self.front)  # pareto_front's order
        self.front_line.setData([c for c, _a in front], [a for _c, a in front])
        for label in self.labels:
            self.removeItem(label)
        self.labels = []
        costs = [cost for _vid, _acc, cost in self.points]
        right_side = min(costs, default=0) + 0.6 * (max(costs, default=0) - min(costs, default=0))
        for vid, acc, cost in shown:
            # labels of the right-hand points end at their point, so that none runs off the plot's edge
            anchor = (1, 1.2) if len(costs) > 1 and cost > right_side else (0, 1.2)
            label = pg.TextItem(vid, anchor=anchor, color="#888888")
            label.setPos(cost, acc)
            self.addItem(label)
            self.labels.append(label)

    def _clicked(self, _item: Any, points: Any, *_args: Any) -> None:
        if len(points):
            variant_id = points[0].data()
            self.select(variant_id)
            self.variant_selected.emit(variant_id)


class ComparePanel(QWidget):
    """The Compare tab: the Pareto plot and its axis toggle."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        bar = QHBoxLayout()
        self.quality_label = QLabel("Accuracy against")
        bar.addWidget(self.quality_label)
        self.axis = QComboBox()
        self.axis.setObjectName("paretoAxis")
        self.axis.addItem("latency", "latency")
        self.axis.addItem("size", "size")
        bar.addWidget(self.axis)
        self.summary = QLabel("")
        self.summary.setObjectName("paretoSummary")
        bar.addStretch(1)
        bar.addWidget(self.summary)
        layout.addLayout(bar)
        self.plot = ParetoPlot()
        layout.addWidget(self.plot, 1)
        self.axis.currentIndexChanged.connect(lambda _i: self._axis_changed())

    def _axis_changed(self) -> None:
        self.plot.set_axis(self.axis.currentData())
        self._summarize()

    def set_variants(self, variants: list[Any]) -> None:
        lm = is_language_model_workspace(variants)
        self.quality_label.setText("Perplexity against" if lm else "Accuracy against")
        has_decode = self.axis.findData("decode") >= 0
        if lm and not has_decode:
            self.axis.addItem("decode speed", "decode")
        elif not lm and has_decode:
            if self.axis.currentData() == "decode":
                self.axis.setCurrentIndex(0)
            self.axis.removeItem(self.axis.findData("decode"))
        self.plot.set_variants(variants)
        self._summarize()

    def _summarize(self) -> None:
        n = len(self.plot.points)
        self.summary.setText(f"{n} variants, {len(self.plot.front)} on the Pareto front (stars)" if n else "")
