"""The main window: variants (left), Graph | Metrics | Compare (centre), job panel (right), log (bottom).

It only wires widgets to the ``Controller``; anything slow happens on worker threads there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QPoint, QRect, QSettings, QSize, Qt
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QGuiApplication, QKeySequence
from PySide6.QtWidgets import QDockWidget, QMainWindow, QMessageBox, QTabWidget, QWidget

from workbench.ui import file_actions
from workbench.ui.controller import Controller
from workbench.ui.generate_panel import GeneratePanel
from workbench.ui.graph_view import GraphView
from workbench.ui.job_panel import JobPanel
from workbench.ui.log_view import LogView
from workbench.ui.metrics_plot import MetricsPlot
from workbench.ui.model_builder import ModelBuilder
from workbench.ui.notifications import NotificationArea
from workbench.ui.pareto_plot import ComparePanel
from workbench.ui.result_view import ResultView
from workbench.ui.status_bar import StatusBar
from workbench.ui.theme import THEMES, app_icon, apply_theme, configure_plots
from workbench.ui.variants_table import VariantsTable

PREFERRED_SIZE = QSize(1440, 900)
FRAME_ALLOWANCE = QSize(16, 48)  # a window manager's borders and title bar, outside the window's own geometry


def first_geometry(available: QRect, preferred: QSize = PREFERRED_SIZE) -> QRect:
    """Where the window opens when no size was saved: the preferred size where the screen has room, else the
    screen's free area less room for the frame (a window larger than the screen hides the job panel); centred."""
    width = max(640, min(preferred.width(), available.width() - FRAME_ALLOWANCE.width()))
    height = max(480, min(preferred.height(), available.height() - FRAME_ALLOWANCE.height()))
    rect = QRect(0, 0, width, height)
    rect.moveCenter(available.center())
    return rect


class MainWindow(QMainWindow):
    """objectName ``mainWindow``. Build with ``workbench.app.create_main_window``."""

    def __init__(self, controller: Controller | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("mainWindow")
        self.setWindowTitle("Workbench")
        self.setWindowIcon(app_icon())
        self.setAcceptDrops(True)
        self.settings = QSettings()
        self.theme = str(self.settings.value("theme", "light"))
        configure_plots(self.theme)
        self.controller = controller or Controller(self)
        self.controller.setParent(self)
        self.selected: str | None = None
        self.variants: list[Any] = []
        self._graph_of: str | None = None
        self._build_widgets()
        self._build_docks()
        self._build_menus()
        self._connect()
        apply_theme(self, self.theme)
        self._fit_to_screen()
        geometry = self.settings.value("geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        state = self.settings.value("windowState")
        if isinstance(state, QByteArray):
            self.restoreState(state)

    # construction ---------------------------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        self.tabs = QTabWidget()
        self.tabs.setObjectName("centerTabs")
        self.graph_view = GraphView()
        self.metrics_plot = MetricsPlot()
        self.compare = ComparePanel()
        self.pareto_plot = self.compare.plot
        self.tabs.addTab(self.graph_view, "Graph")
        self.tabs.addTab(self.metrics_plot, "Metrics")
        self.tabs.addTab(self.compare, "Compare")
        self.result_view = ResultView()
        self.tabs.addTab(self.result_view, "Details")
        self.model_builder = ModelBuilder()  # the stack: layer-list editor
        self.tabs.addTab(self.model_builder, "Build")
        self.generate_panel = GeneratePanel(self.controller)  # a language model continues a prompt (generate job)
        self.tabs.addTab(self.generate_panel, "Generate")
        self.setCentralWidget(self.tabs)
        self.variants_table = VariantsTable()
        self.job_panel = JobPanel(self.controller)
        self.log_view = LogView()
        self.status = StatusBar(self)
        self.setStatusBar(self.status)
        self.notifications = NotificationArea(self)

    def _dock(self, title: str, name: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _build_docks(self) -> None:
        self.variants_dock = self._dock("Variants", "variantsDock", self.variants_table, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.job_dock = self._dock("Job", "jobDock", self.job_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self.log_dock = self._dock("Log", "logDock", self.log_view, Qt.DockWidgetArea.BottomDockWidgetArea)

    def _fit_to_screen(self) -> None:
        """Open at a size that fits the screen; the side panels take shares of the width (the job panel never
        less than its form needs: see JobPanel), the plots the rest."""
        screen = self.screen() or QGuiApplication.primaryScreen()
        rect = first_geometry(screen.availableGeometry()) if screen is not None else QRect(QPoint(), PREFERRED_SIZE)
        self.resize(rect.size())
        self.move(rect.topLeft())
        width = rect.width()
        self.resizeDocks([self.variants_dock, self.job_dock], [int(width * 0.38), max(300, int(width * 0.22))],
                         Qt.Orientation.Horizontal)
        self.resizeDocks([self.log_dock], [min(150, rect.height() // 7)], Qt.Orientation.Vertical)

    def _action(self, menu: Any, text: str, slot: Any, shortcut: Any = None, name: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.setObjectName(name or text.lower().replace(" ", "_").strip("."))
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file = bar.addMenu("&File")
        self._action(file, "New workspace...", lambda: file_actions.new_workspace(self), QKeySequence.StandardKey.New)
        self._action(file, "Open workspace...", lambda: file_actions.open_workspace(self), "Ctrl+Shift+O")
        self._action(file, "Open model...", lambda: file_actions.open_model(self), QKeySequence.StandardKey.Open,
                     "open_model")
        self._action(file, "Open Hugging Face folder...", lambda: file_actions.open_model_folder(self),
                     "Ctrl+Shift+H", "open_model_folder")
        self.recent_menu = file.addMenu("Recent files")
        self.recent_menu.aboutToShow.connect(lambda: file_actions.fill_recent(self))
        file.addSeparator()
        self._action(file, "Export selected variant to ONNX...", lambda: file_actions.export_onnx(self), "Ctrl+E",
                     "export_onnx")
        self._action(file, "Save history as pipeline...", lambda: file_actions.save_pipeline(self), "Ctrl+S",
                     "save_pipeline")
        file.addSeparator()
        self._action(file, "Quit", self.close, QKeySequence.StandardKey.Quit)
        run = bar.addMenu("&Run")
        self.run_action = self._action(run, "Run job", self.job_panel.request_run, "Ctrl+R", "run_job")
        self.cancel_action = self._action(run, "Cancel", lambda: self.controller.cancel(), "Esc", "cancel_job")
        view = bar.addMenu("&View")
        for theme in THEMES:
            self._action(view, f"{theme.capitalize()} theme", lambda _c=False, t=theme: self.set_theme(t))
        view.addSeparator()
        for dock in (self.variants_dock, self.job_dock, self.log_dock):
            view.addAction(dock.toggleViewAction())
        helpm = bar.addMenu("&Help")
        self._action(helpm, "Plugins...", self.show_plugin_manager, None, "plugin_manager")
        self._action(helpm, "About Workbench", self._about)

    def show_plugin_manager(self) -> None:
        from workbench.ui.plugin_manager import PluginManagerDialog

        dialog = PluginManagerDialog(self)
        dialog.pluginsChanged.connect(self.controller.reload_jobs)
        dialog.exec()

    def _connect(self) -> None:
        c = self.controller
        c.session_opening.connect(self._on_opening)
        c.model_opening.connect(self._preview_graph)
        c.session_ready.connect(self._on_session)
        c.session_failed.connect(self._on_session_failed)
        c.variants_changed.connect(self._on_variants)
        c.job_event.connect(self._on_event)
        c.bridge.notified.connect(self.notifications.on_notification)
        self.job_panel.run_requested.connect(self._run)
        self.job_panel.cancel_requested.connect(lambda: c.cancel())
        self.variants_table.variant_selected.connect(self.select_variant)
        self.variants_table.remeasure_requested.connect(self._remeasure)
        self.pareto_plot.variant_selected.connect(self.select_variant)
        self.graph_view.load_failed.connect(lambda msg: self.notifications.notify(f"graph: {msg}", "warning"))
        self.model_builder.build_requested.connect(lambda spec: file_actions.load_model_path(self, spec))
        c.session_ready.connect(lambda session: c.bridge.run_in_background(  # the dataset may load: off the GUI thread
            lambda: session.data.info, self.model_builder.set_dataset, lambda _exc: None))
        self.tabs.currentChanged.connect(lambda _i: self._show_graph(self.selected))
        self._heat: dict[str, dict[str, float]] = {}
        self.graph_view.graph_shown.connect(lambda _n: self._apply_heat())

    # behaviour ------------------------------------------------------------------------------------------------
    def set_theme(self, theme: str) -> None:
        self.theme = theme
        self.settings.setValue("theme", theme)
        apply_theme(self, theme)

    def _about(self) -> None:
        from workbench import __version__

        QMessageBox.about(self, "About Workbench", f"Workbench {__version__}\nSee, train, prune, quantize, "
                          "distill and fuse neural networks; export them to ONNX.")

    def _on_opening(self, text: str) -> None:
        self.status.showMessage(text)
        if self.controller.session is None:
            self.variants_table.set_loading(text.replace(" ...", "").replace("loading ", "loading and measuring "))

    def _on_session(self, session: Any) -> None:
        # another workspace: its v0001 is another model, so nothing selected or drawn for the old one carries over
        self._graph_of = None
        self.selected = None
        self._heat.clear()
        self.status.set_device(session.device)
        self.status.showMessage(f"workspace {session.workspace.root} · dataset {session.dataset_spec}", 8000)
        self.setWindowTitle(f"Workbench: {session.workspace.root.name}")
        self.log_view.add(f"opened {session.workspace.root} ({session.dataset_spec}, {session.device})")

    def _on_session_failed(self, message: str, details: str) -> None:
        self.status.showMessage("loading failed", 8000)
        self.variants_table.set_variants(self.variants)
        self.log_view.add(message, "error")
        self.notifications.notify(message, "error", details)

    def _on_variants(self, variants: list[Any]) -> None:
        self.variants = variants
        self.variants_table.set_variants(variants)
        self.compare.set_variants(variants)
        self.generate_panel.set_variants(variants)
        if variants and (self.selected is None or self.selected not in {v.id for v in variants}):
            self.select_variant(variants[-1].id)

    def select_variant(self, variant_id: str) -> None:
        """Select a variant everywhere: table, Pareto plot, graph, job input."""
        if variant_id == self.selected:
            return
        self.selected = variant_id
        self.variants_table.select(variant_id, emit=False)
        self.pareto_plot.select(variant_id)
        self.job_panel.set_input(variant_id)
        self.generate_panel.set_variant(variant_id)
        variant = next((v for v in self.variants if v.id == variant_id), None)
        self.result_view.show_variant(variant)
        if variant is not None:
            self._heat_from_result(variant)
        self._show_graph(variant_id)

    def _heat_from_result(self, variant: Any) -> None:
        """A variant's own findings as graph colours: pruning sensitivity per layer, or quantization error per
        node (the lower the SQNR, the hotter)."""
        result = getattr(variant, "result", None) or {}
        if isinstance(result.get("heat"), dict):
            self._heat[variant.id] = result["heat"]
        rows = result.get("node_sensitivity")
        if isinstance(rows, list) and rows:
            sqnr = {r["node"]: r["sqnr_db"] for r in rows if isinstance(r, dict) and r.get("sqnr_db") is not None}
            if sqnr:
                lo, hi = min(sqnr.values()), max(sqnr.values())
                self._heat[variant.id] = {n: (hi - v) / (hi - lo) if hi > lo else 1.0 for n, v in sqnr.items()}

    def _apply_heat(self) -> None:
        heat = self._heat.get(self._graph_of or "")
        if heat:
            self.graph_view.set_heat_by_name(heat)

    def _preview_graph(self, spec: str) -> None:
        """An ONNX file (or a variant folder) shows its graph at once: it needs no dataset, and it still shows
        when the model turns out not to fit the dataset."""
        path = Path(spec)
        onnx_file = path / "model.onnx" if path.is_dir() else path
        if onnx_file.suffix.lower() != ".onnx" or not onnx_file.is_file():
            return
        self._preview_source = spec
        self.tabs.setCurrentWidget(self.graph_view)

        def build() -> Any:  # runs on the graph view's worker thread
            from workbench.core.graph import graph_from_onnx

            return graph_from_onnx(onnx_file)

        self.graph_view.load_graph_async(build)

    def _show_graph(self, variant_id: str | None) -> None:
        """Build the variant's graph off the GUI thread, only when the Graph tab is shown (it competes with a
        training job for the CPU otherwise)."""
        session = self.controller.session
        if session is None or variant_id is None or self.tabs.currentWidget() is not self.graph_view:
            return
        if self._graph_of == variant_id:
            return
        self._graph_of = variant_id
        variant = next((v for v in self.variants if v.id == variant_id), None)
        if variant is None:
            return
        if variant.job == "load" and variant.source == getattr(self, "_preview_source", None):
            return  # the preview already shows this model

        def build() -> Any:  # runs on the graph view's worker thread
            from workbench.core.graph import graph_from_onnx, graph_from_torch

            if variant.format == "onnx":
                return graph_from_onnx(variant.path / "model.onnx")
            model = session.load_variant(variant_id, "cpu")
            return graph_from_torch(model, session.data.example_batch(1))

        self.graph_view.load_graph_async(build)

    def _run(self, job: str, params: dict) -> None:
        if self.controller.session is None and not self.controller.opening:
            self.notifications.notify("no model is open: File > Open model first", "warning")
            return
        if self.controller.session is None:
            self.job_panel.add_waiting(job)
        if job == "train":
            self.tabs.setCurrentWidget(self.metrics_plot)
        self.controller.submit(job, params, self.selected)

    def _remeasure(self, variant_id: str) -> None:
        self.log_view.add(f"re-measuring {variant_id}")
        self.controller.submit("evaluate", {"record": True}, variant_id)

    def _on_event(self, event: Any) -> None:
        self.metrics_plot.on_event(event)
        self.log_view.on_event(event)
        self.job_panel.on_event(event)
        self.generate_panel.on_event(event)
        self.status.on_event(event, max(0, len(self.controller.pending()) - 1))
        if event.kind == "started" and event.job == "train":
            self.tabs.setCurrentWidget(self.metrics_plot)
        if event.kind == "finished":
            data = event.data
            if data.get("status") == "failed":
                self.notifications.notify(f"{event.job} failed: {data.get('error')}", "error",
                                          data.get("traceback") or "")
            elif data.get("status") == "ok" and data.get("variant") and data["variant"] != self.selected:
                self.controller.refresh()
                self.select_variant(data["variant"])
            elif data.get("status") == "ok" and data.get("result"):  # a job that only measures: show its findings
                self.result_view.show_result(f"{event.job} #{event.run_id} on {data.get('variant')}", data["result"])
            heat = data.get("result", {}).get("heat") if data.get("status") == "ok" else None
            if isinstance(heat, dict) and data.get("variant"):
                self._heat[data["variant"]] = heat  # per-layer sensitivity, coloured on that variant's graph
                self._apply_heat()

    # files ----------------------------------------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt API
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt API
        for url in event.mimeData().urls():
            if url.isLocalFile():
                file_actions.load_model_path(self, url.toLocalFile())
        event.acceptProposedAction()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        if self.controller.busy():
            answer = QMessageBox.question(
                self, "A job is running", "A job is still running. Cancel it and close?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("windowState", self.saveState())
        self.controller.shutdown()
        event.accept()
