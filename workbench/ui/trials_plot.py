"""The live plot of a search's trials (the ``optimize`` job): every trial as a point, gain against quality, and
the measured Pareto front as a line that moves as the search goes. ``MetricsPlot`` feeds it the metric events
that carry a trial (``trial_speedup`` or ``trial_size_ratio`` with ``trial_accuracy`` or ``trial_perplexity``).
"""

from __future__ import annotations

from typing import Any

import pyqtgraph as pg

GAINS = {"trial_speedup": "speed-up (x, paired)", "trial_size_ratio": "times smaller"}
QUALITIES = {"trial_accuracy": ("accuracy", False), "trial_perplexity": ("perplexity", True)}


def trial_point(metrics: dict[str, float]) -> tuple[str, str, float, float] | None:
    """(gain name, quality name, gain, quality) when ``metrics`` is a search trial's, else None."""
    gain = next((k for k in GAINS if k in metrics), None)
    quality = next((k for k in QUALITIES if k in metrics), None)
    if gain is None or quality is None:
        return None
    return gain, quality, float(metrics[gain]), float(metrics[quality])


def front_of(points: list[tuple[float, float]], lower_is_better: bool) -> list[tuple[float, float]]:
    """The non-dominated points (higher gain; higher accuracy or lower perplexity), by gain."""
    def better(a: tuple[float, float], b: tuple[float, float]) -> bool:
        qa, qb = (-a[1], -b[1]) if not lower_is_better else (a[1], b[1])
        return a[0] >= b[0] and qa <= qb and (a[0] > b[0] or qa < qb)

    return sorted({p for p in points if not any(better(o, p) for o in points)})


class TrialsScatter:
    """A panel of ``MetricsPlot``: the trials of the running search and their front."""

    def __init__(self, layout: pg.GraphicsLayoutWidget, row: int) -> None:
        self.plot = layout.addPlot(row=row, col=0, colspan=2, title="Trials")
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.plot.addLegend(offset=(-8, 8), labelTextSize="8pt")
        self.scatter = pg.ScatterPlotItem(size=8, brush=pg.mkBrush("#4C8BF5"), pen=None, name="trials")
        self.front = pg.PlotDataItem(pen=pg.mkPen("#E15759", width=2), symbol="o", symbolSize=9,
                                     symbolBrush="#E15759", symbolPen=None, name="Pareto front")
        self.plot.addItem(self.scatter)
        self.plot.addItem(self.front)
        self.points: list[tuple[float, float]] = []
        self.lower_is_better = False
        self.dirty = False

    def add(self, point: tuple[str, str, float, float]) -> None:
        gain, quality, x, y = point
        if not self.points:
            name, self.lower_is_better = QUALITIES[quality]
            self.plot.setLabel("bottom", GAINS[gain])
            self.plot.setLabel("left", name)
        self.points.append((x, y))
        self.dirty = True

    def redraw(self) -> None:
        if not self.dirty:
            return
        self.dirty = False
        self.scatter.setData([p[0] for p in self.points], [p[1] for p in self.points])
        front = front_of(self.points, self.lower_is_better)
        self.front.setData([p[0] for p in front], [p[1] for p in front])

    def front_count(self) -> int:
        return len(front_of(self.points, self.lower_is_better))

    def remove_from(self, layout: Any) -> None:
        layout.removeItem(self.plot)
