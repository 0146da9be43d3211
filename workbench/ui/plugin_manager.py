"""Help > Plugins: every job's distribution, version, origin and status (loaded, or failed with its error);
enable/disable kept in settings; development folders added and reloaded without restarting the app.

Settings: ``plugins/disabled`` (job names) and ``plugins/paths`` (development folders). ``apply_saved_settings``
applies both at start-up, with the folders of ``WORKBENCH_PLUGIN_PATH``; every folder loaded is exported into
that variable so the job worker processes load it too. The dialog keeps them in step with
``registry().disabled``. Reloading (importing plugin code, which may import torch) runs on a worker thread;
``pluginsChanged`` tells the app to rebuild its job list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from workbench.core.jobs.registry import Registry, registry

DISABLED_KEY = "plugins/disabled"
PATHS_KEY = "plugins/paths"
COLUMNS = ("Enabled", "Job", "Distribution", "Version", "Origin", "Status")


def _as_list(value: Any) -> list[str]:
    """QSettings returns a str for a one-item list and None for an empty one (INI format)."""
    if not value:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def saved_disabled() -> set[str]:
    return set(_as_list(QSettings().value(DISABLED_KEY, [])))


def saved_plugin_paths() -> list[Path]:
    return [Path(p) for p in _as_list(QSettings().value(PATHS_KEY, []))]


def plugin_folders() -> list[Path]:
    """Development folders: the saved ones and those loaded with ``--plugin-path``, without duplicates."""
    from workbench.core.jobs.devplugins import loaded_folders

    out: list[Path] = []
    for path in [*saved_plugin_paths(), *loaded_folders()]:
        if path.resolve() not in [p.resolve() for p in out]:
            out.append(path)
    return out


def apply_saved_settings(reg: Registry | None = None) -> list[str]:
    """At start-up: disable the saved jobs and load the saved development folders and those of
    ``WORKBENCH_PLUGIN_PATH`` (unless the command line loaded them already); returns the problems."""
    from workbench.core.jobs.devplugins import (
        ENV_VAR,
        env_plugin_folders,
        export_plugin_folders,
        load_plugin_folders,
        load_plugin_path_from_env,
    )

    reg = reg or registry()
    reg.disabled = saved_disabled()
    problems = []
    for folder in env_plugin_folders():
        try:
            load_plugin_path_from_env(into=reg, environ={ENV_VAR: str(folder)}, skip_loaded=True)
        except Exception as exc:  # noqa: BLE001 - a missing folder is reported, never fatal
            problems.append(str(exc) if ENV_VAR in str(exc) else f"{ENV_VAR} {folder}: {exc}")
    for folder in saved_plugin_paths():
        try:
            load_plugin_folders([folder], into=reg)
            export_plugin_folders([folder])
        except Exception as exc:  # noqa: BLE001 - a missing folder is reported, never fatal
            problems.append(f"{folder}: {exc}")
    return problems


def _reload(reg: Registry, folders: list[Path]) -> list[str]:
    """Worker thread: re-import the development folders, re-read the entry points, import every plugin."""
    from workbench.core.jobs.devplugins import export_plugin_folders, load_plugin_folders

    problems = []
    for folder in folders:
        try:
            load_plugin_folders([folder], into=reg)
            export_plugin_folders([folder])
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{folder}: {exc}")
    reg.discover(force=True)
    reg.load_all()
    return problems


class PluginManagerDialog(QDialog):
    """The plugin table; ``reloaded`` fires when a reload finished, ``pluginsChanged`` on any change."""

    pluginsChanged = Signal()
    reloaded = Signal()

    def __init__(self, parent: QWidget | None = None, plugins: Registry | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("pluginManager")
        self.setWindowTitle("Plugins")
        self.resize(860, 420)
        self.registry = plugins or registry()
        self._worker: Any = None
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setObjectName("pluginTable")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemChanged.connect(self._item_changed)
        self.folders_label = QLabel(self)
        self.folders_label.setObjectName("pluginFolders")
        self.folders_label.setWordWrap(True)
        self.status_label = QLabel(self)
        self.status_label.setObjectName("pluginStatus")
        self.status_label.setWordWrap(True)
        self.add_button = QPushButton("Add folder...", self)
        self.add_button.setObjectName("addFolderButton")
        self.add_button.setToolTip("load plugins from a development folder (kept in settings)")
        self.add_button.clicked.connect(self._choose_folder)
        self.reload_button = QPushButton("Reload", self)
        self.reload_button.setObjectName("reloadButton")
        self.reload_button.setToolTip("re-import the development folders and re-read the installed plugins")
        self.reload_button.clicked.connect(self.reload)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        close.rejected.connect(self.reject)
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.reload_button)
        buttons.addStretch(1)
        buttons.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(self.folders_label)
        layout.addWidget(self.status_label)
        layout.addLayout(buttons)
        self.registry.disabled |= saved_disabled()
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the table from the registry."""
        self.table.blockSignals(True)
        plugins = self.registry.plugins()
        self.table.setRowCount(len(plugins))
        for row, info in enumerate(plugins):
            check = QTableWidgetItem()
            check.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
            check.setCheckState(Qt.CheckState.Unchecked if info.job in self.registry.disabled
                                else Qt.CheckState.Checked)
            check.setData(Qt.ItemDataRole.UserRole, info.job)
            self.table.setItem(row, 0, check)
            status = {"not loaded": "available"}.get(info.status, info.status)
            if info.error:
                status = f"{status}: {info.error}"
            for col, text in enumerate((info.job, info.distribution, info.version, info.origin, status), start=1):
                item = QTableWidgetItem(text)
                item.setToolTip(info.details or text)
                self.table.setItem(row, col, item)
        self.table.blockSignals(False)
        folders = plugin_folders()
        self.folders_label.setText("Development folders: " + (", ".join(map(str, folders)) or "none"))

    def row_of(self, job: str) -> int:
        """The table row of a job, or -1."""
        for row in range(self.table.rowCount()):
            if self.table.item(row, 1).text() == job:
                return row
        return -1

    def set_enabled(self, job: str, enabled: bool) -> None:
        """Tick or untick a job's checkbox (what a click does)."""
        row = self.row_of(job)
        if row < 0:
            raise KeyError(job)
        self.table.item(row, 0).setCheckState(Qt.CheckState.Checked if enabled else Qt.CheckState.Unchecked)

    def _item_changed(self, item: QTableWidgetItem) -> None:
        if item.column() != 0:
            return
        job = item.data(Qt.ItemDataRole.UserRole)
        if item.checkState() == Qt.CheckState.Checked:
            self.registry.disabled.discard(job)
        else:
            self.registry.disabled.add(job)
        QSettings().setValue(DISABLED_KEY, sorted(self.registry.disabled))
        self.refresh()
        self.pluginsChanged.emit()

    def add_folder(self, folder: Path) -> None:
        """Remember a development folder and load it (reload)."""
        paths = saved_plugin_paths()
        if Path(folder).resolve() not in [p.resolve() for p in paths]:
            QSettings().setValue(PATHS_KEY, [str(p) for p in [*paths, Path(folder)]])
        self.reload()

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Plugin folder")
        if folder:
            self.add_folder(Path(folder))

    def reload(self) -> None:
        """Re-import the development folders and the installed plugins on a worker thread."""
        from superqt.utils import create_worker

        if self._worker is not None:
            return
        self.reload_button.setEnabled(False)
        self.status_label.setText("reloading...")
        self._worker = create_worker(_reload, self.registry, plugin_folders(), _start_thread=False)
        self._worker.returned.connect(self._reload_done)
        self._worker.errored.connect(lambda exc: self._reload_done([f"{type(exc).__name__}: {exc}"]))
        self._worker.start()

    def _reload_done(self, problems: list[str]) -> None:
        self._worker = None
        self.reload_button.setEnabled(True)
        failed = [p.job for p in self.registry.plugins() if p.status == "failed"]
        text = "; ".join(problems) if problems else "reloaded"
        self.status_label.setText(text + (f" ({len(failed)} failed: {', '.join(failed)})" if failed else ""))
        self.refresh()
        self.reloaded.emit()
        self.pluginsChanged.emit()
