"""Light and dark themes: a Qt style sheet from resources/themes plus matching pyqtgraph colours."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QGraphicsView, QWidget

from workbench.paths import resources_dir

RESOURCES = resources_dir()
PLOT_COLORS = {"light": ("#FFFFFF", "#3A3F45"), "dark": ("#0D1117", "#C9D1D9")}
THEMES = tuple(PLOT_COLORS)


def configure_plots(theme: str) -> None:
    """Set pyqtgraph's defaults; call before creating plots (``apply_theme`` restyles existing ones)."""
    background, foreground = PLOT_COLORS.get(theme, PLOT_COLORS["light"])
    pg.setConfigOptions(background=background, foreground=foreground, antialias=True)


def apply_theme(window: QWidget, theme: str) -> None:
    """Restyle the window and its plots; an unknown theme falls back to light."""
    theme = theme if theme in PLOT_COLORS else "light"
    configure_plots(theme)
    path = RESOURCES / "themes" / f"{theme}.qss"
    window.setStyleSheet(path.read_text(encoding="utf-8") if path.exists() else "")
    background, foreground = PLOT_COLORS[theme]
    for view in window.findChildren(QGraphicsView):  # Qt matches C++ types only: filter pyqtgraph's here
        if not isinstance(view, pg.GraphicsView):
            continue
        view.setBackground(background)
        for item in view.scene().items():
            if isinstance(item, pg.AxisItem):
                item.setPen(foreground)
                item.setTextPen(foreground)
            elif isinstance(item, pg.LabelItem):
                item.setText(item.text, color=foreground)
    window.setProperty("theme", theme)


def app_icon() -> QIcon:
    path = RESOURCES / "icons" / "workbench.svg"
    return QIcon(str(path)) if path.exists() else QIcon()


def ensure_app() -> QApplication:
    app = QApplication.instance()
    if app is None:
        app = QApplication([])
    app.setApplicationName("Workbench")
    app.setOrganizationName("workbench")
    app.setWindowIcon(app_icon())
    return app  # type: ignore[return-value]
