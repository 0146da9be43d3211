"""Live metric plots (pyqtgraph): loss, accuracy, learning rate, throughput of the running job.

Events are appended to numpy-backed buffers; curves are redrawn by a QTimer at 10 Hz, only when they changed,
with peak downsampling and clip-to-view (STYLE.md on pyqtgraph).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QWidget

from workbench.ui.trials_plot import TrialsScatter, trial_point

PANELS = (("loss", "Loss"), ("accuracy", "Accuracy"), ("lr", "Learning rate"), ("throughput", "Samples / s"))
# panels made when a run first logs such a metric, below the four: a language model's perplexity (log scale: it
# falls from thousands to tens) and whatever else a job logs
EXTRA_PANELS = {"perplexity": ("Perplexity (log scale)", True), "other": ("Other", False)}
COLORS = ("#4C8BF5", "#F28E2B", "#59A14F", "#E15759", "#B07AA1", "#76B7B2", "#EDC948", "#FF9DA7")


def panel_of(metric: str) -> str:
    """Which plot a metric name belongs to."""
    name = metric.lower()
    if "perplexity" in name:
        return "perplexity"
    if "loss" in name:
        return "loss"
    if "acc" in name:
        return "accuracy"
    if name in ("lr", "learning_rate") or name.endswith("_lr"):
        return "lr"
    if "per_s" in name or "throughput" in name:
        return "throughput"
    return "other"


class _Series:
    def __init__(self) -> None:
        self.x = np.empty(256)
        self.y = np.empty(256)
        self.n = 0
        self.dirty = False
        self.item: Any = None
        self.plot: Any = None

    def append(self, x: float, y: float) -> None:
        if self.n == len(self.x):
            self.x = np.resize(self.x, 2 * self.n)
            self.y = np.resize(self.y, 2 * self.n)
        self.x[self.n], self.y[self.n] = x, y
        self.n += 1
        self.dirty = True


class MetricsPlot(pg.GraphicsLayoutWidget):
    """objectName ``metricsPlot``. Shows the metrics of the latest run; ``clear_run`` starts afresh."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("metricsPlot")
        self.plots: dict[str, pg.PlotItem] = {}
        self.titles = dict(PANELS)
        for i, (key, title) in enumerate(PANELS):
            plot = self.addPlot(row=i // 2, col=i % 2, title=title)
            plot.showGrid(x=True, y=True, alpha=0.25)
            plot.setLabel("bottom", "step")
            plot.addLegend(offset=(-8, 8), labelTextSize="8pt")
            plot.setClipToView(True)
            plot.setDownsampling(mode="peak")
            plot.disableAutoRange()  # ranges grow in steps (see _fit): the axes repaint only when they change
            self.plots[key] = plot
        self.plots["lr"].setLogMode(y=False)
        self.series: dict[str, _Series] = {}
        self.trials: TrialsScatter | None = None  # a search's trials (optimize), gain against quality
        self.run_id: int | None = None
        self.job = ""
        self._timer = QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self.redraw)
        self._timer.start()

    def _plot_for(self, metric: str) -> pg.PlotItem:
        key = panel_of(metric)
        if key not in self.plots:
            title, log = EXTRA_PANELS[key]
            plot = self.addPlot(row=self.next_row(), col=0, colspan=2, title=f"{title} · {self.job} #{self.run_id}")
            plot.showGrid(x=True, y=True, alpha=0.25)
            plot.setLabel("bottom", "step")
            plot.disableAutoRange()
            plot.addLegend(offset=(-8, 8), labelTextSize="8pt")
            plot.setLogMode(y=log)
            plot._wb_log = log
            self.titles[key] = title
            self.plots[key] = plot
        return self.plots[key]

    def clear_run(self, run_id: int, job: str) -> None:
        """A new run starts: its curves replace the previous run's."""
        for s in self.series.values():
            if s.item is not None:
                s.plot.removeItem(s.item)  # also drops it from the legend
        self.series.clear()
        for key in EXTRA_PANELS:
            extra = self.plots.pop(key, None)
            if extra is not None:
                self.removeItem(extra)
        self.titles = dict(PANELS)
        if self.trials is not None:
            self.trials.remove_from(self)
            self.trials = None
        self.run_id, self.job = run_id, job
        for key, plot in self.plots.items():
            plot.setTitle(f"{self.titles.get(key, 'Other')} · {job} #{run_id}")
            plot._wb_fitted = False

    def on_event(self, event: Any) -> None:
        if event.kind == "started":
            self.clear_run(event.run_id, event.job)
        elif event.kind == "metric" and event.run_id == self.run_id:
            step = float(event.data.get("step", 0))
            metrics = event.data.get("metrics", {})
            point = trial_point(metrics)
            if point is not None:  # one trial of a search: a point of the trials plot, not a curve over steps
                if self.trials is None:
                    self.trials = TrialsScatter(self, row=self.next_row())
                    self.trials.plot.setTitle(f"Trials · {self.job} #{self.run_id}")
                self.trials.add(point)
                return
            for name, value in metrics.items():
                if name == "epoch" or value != value:  # the epoch counter is the x axis; NaN has nothing to show
                    continue
                series = self.series.get(name)
                if series is None:
                    series = self.series[name] = _Series()
                    if name == "tokens_per_s":  # a language model counts tokens, not samples
                        self._retitle("throughput", "Tokens / s")
                series.append(step, float(value))

    def next_row(self) -> int:
        """The first row below every panel shown (extra panels and the trials plot stack in arrival order)."""
        return 1 + max((row for row, cells in self.ci.rows.items() if cells), default=-1)

    def _retitle(self, key: str, title: str) -> None:
        self.titles[key] = title
        self.plots[key].setTitle(f"{title} · {self.job} #{self.run_id}")

    def redraw(self) -> None:
        """Update the changed curves (the timer calls it at 10 Hz)."""
        changed: set[Any] = set()
        for name, s in self.series.items():
            if not s.dirty:
                continue
            s.dirty = False
            if s.item is None:
                plot = s.plot = self._plot_for(name)
                color = COLORS[len(plot.listDataItems()) % len(COLORS)]
                symbol = "o" if name.startswith(("val_", "test_", "train_")) else None
                s.item = plot.plot(name=name, pen=pg.mkPen(color, width=1), symbol=symbol, symbolSize=5,
                                   symbolBrush=color, symbolPen=None)
            s.item.setData(s.x[: s.n], s.y[: s.n])
            changed.add(s.plot)
        for plot in changed:
            self._fit(plot)
        if self.trials is not None:
            self.trials.redraw()

    def _fit(self, plot: pg.PlotItem) -> None:
        """Grow the view in steps (x to 1.5x the last step, y by a fifth of its span) rather than auto-ranging on
        every redraw: re-laying out the axes is most of a redraw's cost, and it holds the GUI thread."""
        shown = [s for s in self.series.values() if s.plot is plot and s.n]
        if not shown:
            return
        x_hi = max(float(s.x[s.n - 1]) for s in shown)
        ys = [s.y[: s.n] for s in shown]
        if getattr(plot, "_wb_log", False):  # a log axis's view range is in decades
            ys = [np.log10(y[y > 0]) for y in ys if np.any(y > 0)]
            if not ys:
                return
        y_lo = min(float(np.min(y)) for y in ys)
        y_hi = max(float(np.max(y)) for y in ys)
        (vx_lo, vx_hi), (vy_lo, vy_hi) = plot.viewRange()
        fresh = getattr(plot, "_wb_fitted", False) is False
        if fresh or x_hi >= 0.95 * vx_hi:
            plot.setXRange(0, max(x_hi * 1.5, 1.0), padding=0)
        if fresh or y_lo < vy_lo or y_hi > vy_hi:
            span = max(y_hi - y_lo, abs(y_hi) * 0.1, 1e-9)
            plot.setYRange(y_lo - 0.2 * span, y_hi + 0.2 * span, padding=0)
        plot._wb_fitted = True

    def point_count(self) -> int:
        return sum(s.n for s in self.series.values()) + (len(self.trials.points) if self.trials else 0)
