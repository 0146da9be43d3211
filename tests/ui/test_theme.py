"""Switching to the dark theme restyles pyqtgraph's plots too, not only the Qt widgets."""

import pyqtgraph as pg
from PySide6.QtWidgets import QMainWindow

from workbench.ui.theme import PLOT_COLORS, apply_theme


def test_dark_theme_reaches_the_plots(qtbot):
    window = QMainWindow()
    qtbot.addWidget(window)
    plot = pg.PlotWidget()
    window.setCentralWidget(plot)
    apply_theme(window, "dark")
    assert plot.backgroundBrush().color().name().lower() == PLOT_COLORS["dark"][0].lower()
    apply_theme(window, "light")
    assert plot.backgroundBrush().color().name().lower() == PLOT_COLORS["light"][0].lower()
